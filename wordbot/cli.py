"""Command line: parse arguments and hand each subcommand to the module that owns it.

`wordbot` alone opens the REPL. Nothing here imports TensorFlow: only `train` does,
inside wordbot.training.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import sys
from pathlib import Path

from wordbot import __version__
from wordbot.errors import WordbotError
from wordbot.limits import CLI_K, CLI_MAX_TEXT_CHARS, CLI_WORDS, DEFAULT_K
from wordbot.text import join_text


class _Parser(argparse.ArgumentParser):
    """argparse, but with --json on the command line a usage error is also a JSON object
    on standard output, as every other error is, so a script reading it always gets JSON."""

    json_errors = False

    def error(self, message: str):
        if _Parser.json_errors:
            print(json.dumps({"error": message}))
        super().error(message)


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
    parser = _Parser(
        prog="wordbot",
        description="A small, fast next-word predictor. With no command, opens the interactive REPL.",
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
    p.add_argument("--top-k", type=int, default=40, help="sample among the k likeliest tokens (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus: smallest set with this mass (default 0.95)")
    p.add_argument("--seed", type=int, default=None, help="random seed for a reproducible continuation")
    _add_model(p)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on your own text")
    p.add_argument("corpus", nargs="*", help="training text files (UTF-8)")
    p.add_argument("--config", metavar="FILE", help="TOML file with training settings (options override it)")
    p.add_argument("--out", help="model directory to write (default: ./model)")
    p.add_argument("--format", choices=("lines", "paragraphs"), help="lines: a message per line (default)")
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
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_model(p)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a model directory")
    p.add_argument("directory", nargs="?", default=None, help="model directory (default: the bundled model)")
    p.add_argument("--model", metavar="DIR", default=None, help="the same, as the other commands take it")
    p.add_argument("--json", action="store_true", help="print the whole manifest")


def _add_repl(sub) -> None:
    p = sub.add_parser("repl", help="interactive prompt with live suggestions (the default command)")
    p.add_argument("--no-learn", action="store_true", help="do not learn from what you type (nor your history)")
    _add_model(p)


def _add_discord(sub) -> None:
    p = sub.add_parser("discord", help="run the Discord bot (token from DISCORD_TOKEN or --token-file)")
    p.add_argument("--prefix", default="!", help="command prefix (default !)")
    p.add_argument("--token-file", metavar="PATH", help="read the bot token from this file")
    p.add_argument("--shards", type=int, default=None, help="shard count; 0 lets Discord choose (AutoShardedBot)")
    _add_model(p)


def _text(args: argparse.Namespace) -> str:
    if args.text == ["-"]:
        # Bytes that are not UTF-8 become U+FFFD rather than a traceback; the newline
        # `echo` adds ends the input, it is not part of the text.
        stdin = getattr(sys.stdin, "buffer", None)
        text = stdin.read().decode("utf-8", errors="replace") if stdin is not None else sys.stdin.read()
        text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    else:
        text = " ".join(args.text)
    if len(text) > CLI_MAX_TEXT_CHARS:
        text = text[-CLI_MAX_TEXT_CHARS:]  # only the end matters for what comes next
    return text


def _predictor(args: argparse.Namespace):
    from wordbot.predictor import Predictor

    return Predictor.load(args.model, backend=args.backend)


def _cmd_next(args: argparse.Namespace) -> int:
    low, high = CLI_K
    if not low <= args.k <= high:
        raise WordbotError(f"-k must be between {low} and {high}, not {args.k}")
    predictor = _predictor(args)
    text = _text(args)
    if args.complete:
        partial, predictions = predictor.suggest(text, args.k)
    else:
        partial, predictions = "", predictor.next_words(text, args.k)
    if not predictions and not args.json:
        print(f"no word in the vocabulary starts with {partial!r}", file=sys.stderr)
    if args.json:
        print(json.dumps([p._asdict() for p in predictions], ensure_ascii=False))
    else:
        width = max((len(p.word) for p in predictions), default=0)
        for p in predictions:
            print(f"{p.word:<{width}}  {p.prob:6.1%}")
    return 0


def _cmd_continue(args: argparse.Namespace) -> int:
    if args.words > CLI_WORDS[1]:
        raise WordbotError(f"-n/--words must be at most {CLI_WORDS[1]}, not {args.words}")
    if (
        args.words < 0
        or not 0 <= args.temperature < math.inf
        or not 0 < args.top_p <= 1
        or args.top_k < 0
        or (args.seed is not None and args.seed < 0)
    ):
        raise WordbotError("need --words >= 0, finite --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, --seed >= 0")
    predictor = _predictor(args)
    text = _text(args)
    continuation = predictor.continue_text(
        text, args.words, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
    )
    print(join_text(text, continuation))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from wordbot.training import TrainConfig, train

    overrides = {
        key: getattr(args, key)
        for key in (
            "out",
            "format",
            "cell",
            "layers",
            "units",
            "embedding_dim",
            "tie_embeddings",
            "vocab_size",
            "min_count",
            "seq_len",
            "batch_size",
            "epochs",
            "dropout",
            "clipnorm",
            "learning_rate",
            "lr_schedule",
            "patience",
            "validation_fraction",
            "max_minutes",
            "mix_order",
            "ensemble",
            "weights_dtype",
            "output_precision",
            "seed",
        )
    }
    if args.corpus:
        overrides["corpus"] = tuple(args.corpus)
    if args.config:
        config = TrainConfig.from_toml(args.config, **overrides)
    else:
        if not args.corpus:
            raise WordbotError("give corpus files to train on, or --config FILE")
        config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    out = Path(config.validate().out)
    partial = out.parent / f"{out.name}.partial"
    try:
        out = train(config, progress=False if args.quiet else None)
    except KeyboardInterrupt:
        if partial.exists():
            print(
                f"\ninterrupted; progress is kept in {partial}/ — run the same command again to resume",
                file=sys.stderr,
            )
        else:  # while reading the corpus or loading TensorFlow
            print("\ninterrupted before training started; nothing was written", file=sys.stderr)
        return 130
    print(f"model written to {out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from wordbot import evaluate

    try:
        evaluate.parse_baseline(args.baseline)
    except ValueError as e:
        raise WordbotError(str(e)) from None
    from wordbot.corpus import read_messages

    for path in args.testfiles:
        if not Path(path).exists():
            raise WordbotError(f"test file {path} does not exist")
        if not Path(path).is_file():
            raise WordbotError(f"test file {path} is not a file")
        if not read_messages(path):
            raise WordbotError(f"test file {path} holds no text")
    if args.max_positions is not None and args.max_positions < 1:
        raise WordbotError("--max-positions must be at least 1")
    report = evaluate.run(
        args.model,
        args.testfiles,
        baseline=args.baseline,
        as_json=args.json,
        max_positions=args.max_positions,
        backend=args.backend,
    )
    print(report)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from wordbot.artifacts import load_model
    from wordbot.describe import info_lines

    if args.model and args.directory and Path(args.model) != Path(args.directory):
        raise WordbotError("give the model directory once: as DIR or as --model DIR")
    model = args.model or args.directory
    if args.json:
        manifest, _, _ = load_model(model)  # checks the whole directory
        print(json.dumps(manifest, indent=2))
        return 0
    print("\n".join(info_lines(model)))
    return 0


def _cmd_repl(args: argparse.Namespace) -> int:
    from wordbot import repl

    return repl.run(args.model, backend=args.backend, learn=not args.no_learn)


def _cmd_discord(args: argparse.Namespace) -> int:
    from wordbot import bot

    return bot.run(
        model=args.model, prefix=args.prefix, token_file=args.token_file, shards=args.shards, backend=args.backend
    )


COMMANDS = {
    "next": _cmd_next,
    "continue": _cmd_continue,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "info": _cmd_info,
    "repl": _cmd_repl,
    "discord": _cmd_discord,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["repl", *argv]  # `wordbot --model DIR` opens the REPL on that model
    _Parser.json_errors = "--json" in argv
    try:
        args = parser.parse_args(argv)
    finally:
        _Parser.json_errors = False
    if args.command is None:
        args = parser.parse_args(["repl"])
    problem = _closed_streams(args)
    if problem:
        return _error(args, *problem)
    try:
        status = COMMANDS[args.command](args)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a failed write is caught, not at exit
        return status
    except WordbotError as e:
        return _error(args, str(e), 2)
    except KeyboardInterrupt:
        return 130
    except MemoryError:
        return _error(args, "out of memory; a model directory may claim more than this machine holds", 2)
    except BrokenPipeError:
        # The reader went away (`| head`): quietly, and without Python's complaint at exit.
        _silence_stdout()
        return 0
    except UnicodeEncodeError as e:  # PYTHONIOENCODING=ascii and a word that is not
        _silence_stdout()
        shown = e.object[e.start : e.end] if isinstance(e.object, str) else "?"
        return _error(
            args, f"cannot write {shown!a}: standard output's encoding is {e.encoding}; set PYTHONIOENCODING=utf-8", 1
        )
    except OSError as e:
        if e.errno in _WRITE_ERRORS:
            # A full disk or a vanished terminal: writing the answer (or a model) failed.
            _silence_stdout()
            return _error(args, f"cannot write: {e.strerror or e}", 1)
        from wordbot.bounded import shown

        where = f"{shown(e.filename)}: " if e.filename else ""
        return _error(args, f"{where}{e.strerror or e}", 2)


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}
_WRITERS = ("next", "continue", "info", "eval")  # commands whose answer is their standard output


def _closed_streams(args: argparse.Namespace) -> tuple[str, int] | None:
    """What a command cannot do because it was started with standard input or output
    closed (`>&-`, `<&-`), as (message, status), or None. Closed descriptors are
    pointed at /dev/null, so that no file this process opens takes their number."""
    closed = [fd for fd, stream in enumerate((sys.stdin, sys.stdout, sys.stderr)) if stream is None]
    for fd in closed:
        try:
            os.fstat(fd)
        except OSError:
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_RDWR)
                if devnull != fd:
                    os.dup2(devnull, fd)
                    os.close(devnull)
    if 1 in closed and args.command in (*_WRITERS, "repl"):
        return "standard output is closed; nothing to write the answer to (remove the >&-)", 1
    if 0 in closed and (args.command == "repl" or getattr(args, "text", None) == ["-"]):
        return "standard input is closed; give the text as arguments, or pipe it in", 2
    return None


def _error(args: argparse.Namespace, message: str, status: int) -> int:
    """One line on standard error; with --json, the same as a JSON object on standard output."""
    if sys.stderr is not None:  # closed (2>&-): print(file=None) would write to standard output
        print(f"wordbot: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        try:
            print(json.dumps({"error": message}, ensure_ascii=False), flush=True)
        except OSError:
            _silence_stdout()
    return status


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so the flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
