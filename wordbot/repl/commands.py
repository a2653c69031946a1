"""The REPL's `:commands` (`:k`, `:temp`, `:model`, `:help`, `:quit`): which lines are
commands, what each does to the session, and loading a model so that any failure is
one line and the session goes on."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from wordbot.errors import WordbotError
from wordbot.limits import REPL_K
from wordbot.repl.display import KEY_COLUMN, fill, keys_help, table

if TYPE_CHECKING:
    from wordbot.predictor import Predictor
    from wordbot.repl.app import Repl

_COMMAND_RE = re.compile(r":([A-Za-z]+)(?:\s+(.*))?$", re.DOTALL)
COMMANDS = {  # name: (argument, what it does), as :help shows them
    "help": ("", "this text"),
    "k": ("N", f"how many suggestions to show ({REPL_K[0]}-{REPL_K[1]})"),
    "temp": ("T", "ghost-text temperature (0 = greedy: the likeliest words)"),
    "model": ("PATH", "load another model directory (`default`: the bundled one)"),
    "learned": ("", "how much was learned from what you typed"),
    "forget": ("", "erase what was learned and the history file (asks first)"),
    "quit": ("", "exit (Ctrl-D does too)"),
}
_ALIASES = {"q": "quit", "exit": "quit", "h": "help", "?": "help"}

# :temp takes 0 (greedy) or a value in this range. Below its floor, dividing the model's
# logits by the temperature overflows (1e-310 gave NaN), and the sample is greedy anyway.
TEMPERATURE_RANGE = (0.01, 5.0)


def is_command(line: str) -> bool:
    """`:k 3` is a command; `:)` or `: hello` is text."""
    return _COMMAND_RE.match(line.strip()) is not None


def run_command(repl: Repl, line: str) -> bool:
    """Do the command `line` (one for which `is_command` holds); False means: exit."""
    name, argument = _COMMAND_RE.match(line.strip()).groups()
    name = _ALIASES.get(name.lower(), name.lower())
    argument = (argument or "").strip()
    if name == "quit":
        return False
    if name == "help":
        repl.say(help_text(repl, repl.width()))
    elif name == "k":
        _set_k(repl, argument)
    elif name == "temp":
        _set_temperature(repl, argument)
    elif name == "model":
        _load_model(repl, argument)
    elif name == "learned":
        _learned(repl)
    elif name == "forget":
        _forget(repl)
    else:
        repl.error(f"unknown command :{name}; :help lists the commands")
    return True


def help_text(repl: Repl, width: int | None = None) -> str:
    """:help's text, wrapped between words to `width` columns (None: unknown, not wrapped)."""
    rows = [(f":{name} {arg}", text) for name, (arg, text) in COMMANDS.items()]
    about = (
        "The menu shows the likeliest next words (after a space) or completions of the\n"
        "word being typed, each with its probability; the grey text continues the line."
    )
    settings = repl.settings
    now = f"Now: k={settings.k}, temp={settings.temperature:g}, model: {repl.predictor.describe()}"
    if width is not None:
        about = fill(about, width)
        now = fill(now, width, indent="  ")
    return f"{about}\n{keys_help(width)}\nCommands:\n{table(rows, KEY_COLUMN, width)}\n{now}"


def _set_k(repl: Repl, argument: str) -> None:
    low, high = REPL_K
    try:
        k = int(argument)
    except ValueError:
        repl.error(f":k needs a whole number from {low} to {high}, got {argument or 'nothing'!r}")
        return
    if not low <= k <= high:
        repl.error(f":k needs a whole number from {low} to {high}, got {k}")
        return
    repl.settings.k = k
    repl.say(f"showing {k} suggestion{'s' if k > 1 else ''}", "note")


def _set_temperature(repl: Repl, argument: str) -> None:
    low, high = TEMPERATURE_RANGE
    try:
        temperature = float(argument)
    except ValueError:
        temperature = math.nan
    if not (temperature == 0 or low <= temperature <= high):  # also refuses nan
        repl.error(f":temp needs 0 (greedy) or a number from {low:g} to {high:g}, got {argument or 'nothing'!r}")
        return
    repl.settings.temperature = temperature
    how = "greedy: the likeliest words" if temperature == 0 else "sampled"
    repl.say(f"ghost text temperature {temperature:g} ({how})", "note")


def _learned(repl: Repl) -> None:
    if repl.learner is None:
        repl.say(f"learning is off ({repl.not_learning}): nothing is learned from what you type", "note")
    else:
        thread = repl.learner.thread
        busy = thread is not None and thread.is_alive()  # so a count of 9 lines is not read as all there is
        repl.say(repl.learner.summary() + ("; still learning your history file" if busy else ""), "note")


def _forget(repl: Repl) -> None:
    """Empty the memory and the history file, once the user says yes."""
    answer = repl.ask("Forget everything learned and empty the history file? [y/N] ")
    if (answer or "").strip().lower() not in ("y", "yes"):
        repl.say("nothing forgotten", "note")
        return
    from wordbot.repl.history import history_path
    from wordbot.repl.learning import Learner

    learner = repl.learner or Learner(history_path(repl.state_dir))
    problem = learner.forget()
    if repl.kept_history is not None and hasattr(repl.kept_history, "_loaded_strings"):
        repl.kept_history._loaded_strings = []  # Up recalls nothing of it either
    if problem:
        repl.error(f"forgot what was learned, but {problem}")
    elif learner.history.is_file():
        repl.say("forgotten: nothing learned, the history file is empty", "note")
    else:  # a history that could not be kept (see the line said at start)
        repl.say("forgotten: nothing learned, and no history file is kept", "note")


def _load_model(repl: Repl, argument: str) -> None:
    if not argument:
        repl.say(_wrapped(repl, f"model: {repl.predictor.describe()} (:model PATH loads another)"), "note")
        return
    path = None if argument == "default" and not Path(argument).exists() else os.path.expanduser(argument)
    try:
        predictor = load_predictor(path, repl.backend)
    except WordbotError as exc:
        repl.error(_wrapped(repl, f"cannot load model {argument!r}: {exc}; the model in use stays"))
        return
    repl.predictor = predictor
    repl.say(_wrapped(repl, f"model: {predictor.describe()}"), "note")


def _wrapped(repl: Repl, text: str) -> str:
    """`text` wrapped between words to the terminal's width, as the start screen's model
    line is (a terminal would cut it mid-word); as it is where the width is unknown (a pipe)."""
    width = repl.width()
    return text if width is None else fill(text, width, indent="  ")


def load_predictor(path: str | os.PathLike | None, backend: str | None) -> Predictor:
    """`Predictor.load`, with any failure as a `WordbotError` of one line: a model directory
    the user names may be anything, and neither the start nor `:model` should end in a traceback."""
    from wordbot.predictor import Predictor

    try:
        return Predictor.load(path, backend=backend)
    except WordbotError as exc:
        raise WordbotError(_one_line(str(exc))) from exc
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise WordbotError(f"cannot read{where}: {exc.strerror or exc}") from exc
    except Exception as exc:  # whatever a hostile directory does to the loader
        raise WordbotError(f"not a usable model directory ({type(exc).__name__}: {_one_line(str(exc))})") from exc


def _one_line(text: str) -> str:
    return " ".join(text.split())
