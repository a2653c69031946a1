"""`wordbot eval --learn-from HISTORY TEST...`: what learning a community's history is
worth. The served model frozen, the same predictor after learning HISTORY one message
at a time (`Predictor.learn`, the path the REPL and the bot take), and Kneser-Ney
refitted on the training text + HISTORY over the whole vocabulary, side by side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from wordbot.artifacts import model_directory
from wordbot.evaluate import file_report, parse_baseline
from wordbot.memory import Memory
from wordbot.predictor import Predictor


def learned_models(
    model_dir: str | os.PathLike | None,
    history: Sequence[str],
    order: int = 4,
    backend: str | None = None,
    memory: Memory | None = None,
) -> dict[str, Predictor]:
    """The three rows: frozen, learned (a view of the same predictor that learned
    `history` in order; `memory`: an empty memory of another scheme, for validation),
    and KN`order` refitted on the training text + `history`."""
    from wordbot.corpus import training_messages
    from wordbot.mix import open_tokenizer
    from wordbot.ngram import KneserNey

    frozen = Predictor.load(model_dir, backend=backend)
    learned = frozen.view(memory)
    for i, message in enumerate(history):
        learned.learn(message, key=("history", i))
    text = [*training_messages(frozen.manifest, model_directory(model_dir)), *history]
    # The refitted n-gram knows every word of the training text and the history.
    refitted = KneserNey.from_texts(text, open_tokenizer(frozen.tokenizer, text), order)
    name = f"{frozen.name}/{frozen.backend}"
    return {
        f"{name} frozen": frozen,
        f"{name} learned": learned,
        f"KN{order}+history": Predictor(refitted, name=f"KN{order}+history", backend="ngram"),
    }


def run(
    model_dir: str | os.PathLike | None,
    history_path: str | os.PathLike,
    test_files: Sequence[str | os.PathLike],
    baseline: str | None = "kn4",
    as_json: bool = False,
    max_positions: int | None = None,
    backend: str | None = None,
) -> str:
    """The table (or JSON) of the three rows on each test file, with the learned model
    against the refitted n-gram and against the frozen model (paired bootstrap)."""
    from wordbot.corpus import read_messages

    order = parse_baseline(baseline)
    if order is None:
        raise ValueError("--learn-from compares with an n-gram refitted on the history: use kn2 .. kn5")
    history = read_messages(history_path)
    models = learned_models(model_dir, history, order, backend)
    frozen, learned, refitted = models
    report, blocks = {}, [f"learned from {history_path}: {len(history):,} messages"]
    for path in test_files:
        results, block = file_report(models, path, max_positions, compared=[(learned, refitted), (learned, frozen)])
        report[str(path)] = results
        blocks.append(block)
    if as_json:
        return json.dumps(report, indent=2, allow_nan=False)
    return "\n\n".join(blocks)
