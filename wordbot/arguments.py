"""The command line's arguments: one small function per subcommand, each option with its
help. `wordbot.cli` parses with `build_parser()` and dispatches; nothing here runs a command.
"""

from __future__ import annotations

import argparse
import json

from wordbot import __version__
from wordbot.limits import CLI_K, CLI_WORDS, DEFAULT_K


class Parser(argparse.ArgumentParser):
    """argparse, but with --json on the command line a usage error is also a JSON object
    on standard output, as every other error is, so a script reading it always gets JSON."""

    json_errors = False

    def error(self, message: str):
        if Parser.json_errors:
            print(json.dumps({"error": message}))
        super().error(message)

    def format_help(self) -> str:
        if callable(self.epilog):  # worked out only when help is shown: it looks up directories
            self.epilog = self.epilog()
        return super().format_help()


def _files_epilog() -> str:
    """`wordbot --help`'s last paragraph: where wordbot keeps files, as resolved here and now,
    wrapped as argparse would but never inside a path (argparse breaks words at hyphens)."""
    import shutil
    import textwrap

    from wordbot.limits import state_dir
    from wordbot.ngram_cache import cache_dir

    text = (
        f"Files: the REPL's history and the Discord bot's store are kept in {state_dir()} "
        f"(WORDBOT_STATE_DIR moves them); counted n-grams and weight copies in {cache_dir()} "
        "(WORDBOT_CACHE_DIR; safe to delete). The bot's token: DISCORD_TOKEN or --token-file. "
        "'wordbot COMMAND --help' lists a command's options."
    )
    width = max(shutil.get_terminal_size().columns - 2, 20)
    return textwrap.fill(text, width, break_on_hyphens=False, break_long_words=False)


def _add_model(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    parser.add_argument("--model", metavar="DIR", default=None, help="model directory (default: the bundled model)")
    if backend:
        parser.add_argument(
            "--backend",
            choices=("rnn", "ngram", "mix"),
            default=None,
            help="rnn: the recurrent model alone; ngram: Kneser-Ney on its training text; mix: their "
            "interpolation (default: what the model's manifest recommends)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="wordbot",
        description="A small, fast next-word predictor. With no command, opens the interactive\nREPL.",
        epilog=_files_epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the epilog comes wrapped
    )
    parser.add_argument("--version", action="version", version=f"wordbot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_next, _add_continue, _add_train, _add_eval, _add_info, _add_repl, _add_discord):
        add(sub)
    return parser


def _add_next(sub) -> None:
    p = sub.add_parser("next", help="print the likeliest next words of a text")
    p.add_argument("text", nargs="*", help="the text so far ('-' reads standard input; none: start of a message)")
    p.add_argument("-k", type=int, default=DEFAULT_K, help=f"how many words, 1 to {CLI_K[1]} (default {DEFAULT_K})")
    p.add_argument("--complete", action="store_true", help="complete the last word if the text ends inside one")
    p.add_argument("--json", action="store_true", help="print JSON: a list of {word, prob}")
    _add_model(p)


def _add_continue(sub) -> None:
    p = sub.add_parser("continue", help="continue a text with sampled words")
    p.add_argument("text", nargs="*", help="the text to continue ('-' reads standard input)")
    p.add_argument(
        "-n",
        "--words",
        type=int,
        default=CLI_WORDS[0],
        help=f"at most this many words, 0 to {CLI_WORDS[1]} (default {CLI_WORDS[0]})",
    )
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy (default 0.8)")
    p.add_argument(
        "--top-k", type=int, default=40, help="sample among the k likeliest tokens; 0: no limit (default 40)"
    )
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus: smallest set with this mass (default 0.95)")
    p.add_argument("--seed", type=int, default=None, help="random seed for a reproducible continuation")
    _add_model(p)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on your own text")
    p.add_argument("corpus", nargs="*", help="training text files (UTF-8)")
    p.add_argument("--config", metavar="FILE", help="TOML file with training settings (options override it)")
    p.add_argument("--out", help="model directory to write (default: ./model)")
    p.add_argument(
        "--from",
        dest="base",
        metavar="MODEL",
        help="fine-tune MODEL (a model directory, or 'default' for the bundled one): its networks and vocabulary",
    )
    p.add_argument("--format", choices=("lines", "paragraphs"), help="lines: a message per line (default)")
    p.add_argument(
        "--discord-server",
        type=int,
        metavar="GUILD_ID",
        help="with --from: fine-tune on that server's messages in the bot's store (no Discord connection)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="with --discord-server: the bot's store, sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH or "
        "postgresql://… (default: WORDBOT_STORE, else the bot's SQLite file in the state directory)",
    )
    _add_network_options(p)
    _add_fit_options(p)
    p.add_argument(
        "--mix-order", type=int, help="Kneser-Ney order to interpolate with, tuned on validation (default 4; 0: none)"
    )
    p.add_argument(
        "--ensemble", type=int, metavar="N", help="train N networks from different seeds and average them (default 1)"
    )
    p.add_argument(
        "--weights-dtype", choices=("float32", "float16"), help="how weights are stored (float16: half the size)"
    )
    p.add_argument(
        "--output-precision",
        choices=("float32", "bfloat16"),
        help="compute the output layer in bfloat16 while training (faster on CPUs with AMX or AVX512-BF16)",
    )
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, one line per epoch")


def _add_network_options(p: argparse.ArgumentParser) -> None:
    """`wordbot train`: the shape of the network and its vocabulary."""
    p.add_argument("--cell", choices=("simple_rnn", "gru", "lstm"), help="recurrent cell (default simple_rnn)")
    p.add_argument("--layers", type=int, help="stacked recurrent layers (default 1)")
    p.add_argument("--units", type=int, help="hidden units per layer (default 512)")
    p.add_argument("--embedding-dim", type=int, help="word vector size (default 256)")
    p.add_argument("--untied", dest="tie_embeddings", action="store_false", default=None, help="separate output layer")
    p.add_argument("--vocab-size", type=int, help="vocabulary cap, special tokens included (default 10000)")
    p.add_argument("--min-count", type=int, help="rarer tokens become <unk> (default 2)")


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    """`wordbot train`: how the network is fitted, and when fitting stops."""
    p.add_argument("--seq-len", type=int, help="backpropagation-through-time window (default 64)")
    p.add_argument("--batch-size", type=int, help="windows per batch (default 64)")
    p.add_argument("--epochs", type=int, help="at most this many epochs (default 20)")
    p.add_argument("--dropout", type=float, help="dropout rate (default 0.3)")
    p.add_argument("--clipnorm", type=float, help="gradient clipping norm (default 1.0)")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default 0.002)")
    p.add_argument(
        "--lr-schedule",
        choices=("plateau", "cosine"),
        help="halve the rate when validation stalls (default), or decay it to zero over --epochs",
    )
    p.add_argument("--patience", type=int, help="epochs without improvement before stopping (default 2)")
    p.add_argument("--validation-fraction", type=float, help="messages held out for validation (default 0.05)")
    p.add_argument("--max-minutes", type=float, help="stop after this many minutes (default: no limit)")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="measure a model against n-gram baselines on test text")
    p.add_argument("testfiles", nargs="+", help="test text, one message per line")
    p.add_argument("--baseline", default="kn4", help="n-gram baseline: kn2..kn5 (default kn4), or 'none'")
    p.add_argument("--max-positions", type=int, help="evaluate a fixed sample of about this many tokens")
    p.add_argument(
        "--learn-from",
        metavar="HISTORY",
        help="learn this file's messages in order first; show the model frozen, learned, and the n-gram refitted on it",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_model(p)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a model directory")
    p.add_argument("directory", nargs="?", default=None, help="model directory (default: the bundled model)")
    p.add_argument("--model", metavar="DIR", default=None, help="the same, as the other commands take it")
    p.add_argument("--json", action="store_true", help="print the whole manifest")
    p.add_argument(
        "--plot",
        metavar="PNG",
        help="draw loss and validation perplexity per epoch (needs: pip install 'wordbot[plot]')",
    )


def _add_repl(sub) -> None:
    p = sub.add_parser("repl", help="interactive prompt with live suggestions (the default command)")
    p.add_argument("--no-learn", action="store_true", help="do not learn from what you type (nor your history)")
    _add_model(p)


def _add_discord(sub) -> None:
    p = sub.add_parser("discord", help="run the Discord bot (token from DISCORD_TOKEN or --token-file)")
    p.add_argument("--config", metavar="FILE", help="TOML settings file; WORDBOT_* variables and options override it")
    p.add_argument("--prefix", help="command prefix (default !)")
    p.add_argument("--token-file", metavar="PATH", help="read the bot token from this file")
    p.add_argument(
        "--store",
        metavar="URL",
        help="sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH (default: wordbot.sqlite3 in the state "
        "directory), or postgresql://…",
    )
    p.add_argument("--shards", metavar="N", help="every shard in this process: how many, or 0 to let Discord choose")
    p.add_argument("--shard-ids", metavar="IDS", help="run only these shards here, e.g. 0-3 (with --shard-count)")
    p.add_argument("--shard-count", metavar="N", help="the whole bot's shard count, over all its processes")
    p.add_argument(
        "--server-models",
        metavar="DIR",
        help="serve DIR/<server id>/ (wordbot train --discord-server) to that server, its memory on top",
    )
    p.add_argument(
        "--server-models-max", metavar="N", help="server models kept in memory at once (default 4; least used dropped)"
    )
    _add_model(p)
