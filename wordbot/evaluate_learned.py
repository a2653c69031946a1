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


def frozen_model(
    model_dir: str | os.PathLike | None, backend: str | None = None, train: Sequence[str] | None = None
) -> tuple[Predictor, list[str]]:
    """The served predictor and the text it was trained on. `train` (validation: a
    community held out of the n-gram): the mix served with its n-gram refitted on it."""
    from wordbot.corpus import training_messages
    from wordbot.mix import OrderWeighted, open_tokenizer
    from wordbot.ngram import KneserNey

    frozen = Predictor.load(model_dir, backend=backend)
    if train is None:
        return frozen, training_messages(frozen.manifest, model_directory(model_dir))
    if frozen.backend != "mix":
        raise ValueError("only the mix has an n-gram to refit")
    network, ngram = frozen.lm.models
    ngram = KneserNey.from_texts(train, open_tokenizer(network.tokenizer, train), ngram.order)
    lm = OrderWeighted(network, ngram, frozen.lm.weights)
    return Predictor(lm, name=frozen.name, manifest=frozen.manifest, backend="mix"), list(train)


def learned(frozen: Predictor, history: Sequence[str], memory: Memory | None = None) -> Predictor:
    """A view of `frozen` that learned `history` in order (`memory`: an empty one of
    another scheme, for validation)."""
    view = frozen.view(memory)
    for i, message in enumerate(history):
        view.learn(message, key=("history", i))
    return view


def refitted(frozen: Predictor, train: Sequence[str], history: Sequence[str], order: int = 4) -> Predictor:
    """KN`order` on `train` + `history`, over every word of both (as a user would refit it)."""
    from wordbot.mix import open_tokenizer
    from wordbot.ngram import KneserNey

    text = [*train, *history]
    model = KneserNey.from_texts(text, open_tokenizer(frozen.tokenizer, text), order)
    return Predictor(model, name=f"KN{order}+history", backend="ngram")


def learned_models(
    model_dir: str | os.PathLike | None, history: Sequence[str], order: int = 4, backend: str | None = None
) -> dict[str, Predictor]:
    """The three rows: frozen, the same predictor after learning `history`, and
    KN`order` refitted on the training text + `history`."""
    frozen, train = frozen_model(model_dir, backend)
    name = f"{frozen.name}/{frozen.backend}"
    return {
        f"{name} frozen": frozen,
        f"{name} learned": learned(frozen, history),
        f"KN{order}+history": refitted(frozen, train, history, order),
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
