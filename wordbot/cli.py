"""Command line: parse arguments and hand each subcommand to the module that owns it.

`wordbot` alone opens the REPL. Nothing here imports TensorFlow: only `train` does,
inside wordbot.training.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import json
import math
import os
import sys
from pathlib import Path

from wordbot.arguments import Parser, build_parser
from wordbot.errors import WordbotError
from wordbot.limits import CLI_K, CLI_MAX_TEXT_CHARS, CLI_WORDS
from wordbot.printable import visible
from wordbot.text import join_text
from wordbot.threads import serving


def _text(args: argparse.Namespace) -> str:
    if args.text == ["-"]:
        # Bytes that are not UTF-8 become U+FFFD rather than a traceback; the newline
        # `echo` adds ends the input, it is not part of the text.
        if sys.stdin.isatty() and sys.stderr is not None:  # else a silent wait looks like a hang
            print("wordbot: reading the text from the terminal; end it with Ctrl-D", file=sys.stderr, flush=True)
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
    checks = (  # each bad option is named with the value given, not a list of every rule
        (args.words >= 0, "--words >= 0", args.words),
        (0 <= args.temperature < math.inf, "finite --temperature >= 0", args.temperature),
        (0 < args.top_p <= 1, "0 < --top-p <= 1", args.top_p),
        (args.top_k >= 0, "--top-k >= 0 (0: no limit)", args.top_k),
        (args.seed is None or args.seed >= 0, "--seed >= 0", args.seed),
    )
    for good, rule, value in checks:
        if not good:
            raise WordbotError(f"need {rule}, not {f'{value:g}' if isinstance(value, float) else value}")
    predictor = _predictor(args)
    text = _text(args)
    continuation = predictor.continue_text(
        text, args.words, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
    )
    print(visible(join_text(text, continuation)))  # the text as it reads, not as a terminal would act on it
    return 0


# The `wordbot train` options that are TrainConfig fields of the same name.
_TRAIN_OPTIONS = (
    "out", "format", "cell", "layers", "units", "embedding_dim", "tie_embeddings", "vocab_size", "min_count",
    "seq_len", "batch_size", "epochs", "dropout", "clipnorm", "learning_rate", "lr_schedule", "patience",
    "validation_fraction", "max_minutes", "mix_order", "ensemble", "weights_dtype", "output_precision", "seed",
)  # fmt: skip


def _cmd_train(args: argparse.Namespace) -> int:
    from wordbot.training import TrainConfig, train

    overrides = {key: getattr(args, key) for key in _TRAIN_OPTIONS}
    if args.corpus:
        overrides["corpus"] = tuple(args.corpus)
    server = None
    if args.discord_server is not None:
        from wordbot.training.discord_server import server_text

        if not args.base or args.corpus or args.config:
            raise WordbotError(
                "--discord-server fine-tunes a model on that server's stored messages: give --from default "
                "(or --from MODEL), and no corpus files or --config"
            )
        server = server_text(args.discord_server, args.store, args.out or TrainConfig.out)
        overrides["corpus"] = (str(server.corpus),)
    if args.base:
        from wordbot.training.finetune import from_options

        config = from_options(args.base, overrides, args.config)
    elif args.config:
        config = TrainConfig.from_toml(args.config, **overrides)
    else:
        if not args.corpus:
            raise WordbotError("give corpus files to train on, or --config FILE")
        config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    out = Path(config.validate().out)
    partial = out.parent / f"{out.name}.partial"
    try:
        extra = {} if server is None else {"manifest_extra": {"discord_server": server.manifest}, "files": server.files}
        out = train(config, progress=False if args.quiet else None, **extra)
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
    if args.learn_from is not None:
        return _eval_learned(args)
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


def _eval_learned(args: argparse.Namespace) -> int:
    """`eval --learn-from`: the history is checked like a test file, then learned."""
    from wordbot import evaluate_learned
    from wordbot.corpus import read_messages

    path = Path(args.learn_from)
    if not path.is_file():
        raise WordbotError(f"history file {path} {'is not a file' if path.exists() else 'does not exist'}")
    if not read_messages(path):
        raise WordbotError(f"history file {path} holds no text")
    try:
        report = evaluate_learned.run(
            args.model, path, args.testfiles, args.baseline, args.json, args.max_positions, args.backend
        )
    except ValueError as e:
        raise WordbotError(str(e)) from None
    print(report)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from wordbot.artifacts import load_model
    from wordbot.describe import info_lines

    if args.model and args.directory and Path(args.model) != Path(args.directory):
        raise WordbotError("give the model directory once: as DIR or as --model DIR")
    model = args.model or args.directory
    if args.plot:
        from wordbot.artifacts import model_directory
        from wordbot.training.curves import plot_curves

        print(f"curves written to {plot_curves(model_directory(model), args.plot)}")
        return 0
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
    from wordbot.bot import config, run  # the settings' one merge: file, then WORDBOT_*, then these options

    return run(config.load(args.config, options=vars(args)))


COMMANDS = {
    "next": _cmd_next,
    "continue": _cmd_continue,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "info": _cmd_info,
    "repl": _cmd_repl,
    "discord": _cmd_discord,
}


# Commands that load a model, answer once and exit: they run without the cyclic garbage
# collector, whose ~50 passes over the tens of thousands of objects that starting
# creates (NumPy's modules, the vocabulary; none of them garbage) were ~5% of a start.
ONE_SHOT = ("next", "continue")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    collecting = gc.isenabled()
    if argv[:1] and argv[0] in ONE_SHOT:
        gc.disable()
    try:
        return _main(argv)
    finally:
        if collecting:
            gc.enable()


def _main(argv: list[str]) -> int:
    parser = build_parser()
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["repl", *argv]  # `wordbot --model DIR` opens the REPL on that model
    Parser.json_errors = "--json" in argv
    try:
        args = parser.parse_args(argv)
    finally:
        Parser.json_errors = False
    if args.command is None:
        args = parser.parse_args(["repl"])
    problem = _closed_streams(args)
    if problem:
        return _error(args, *problem)
    try:
        status = COMMANDS[args.command](serving(args))  # a serving command gets one BLAS thread
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
