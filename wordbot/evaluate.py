"""Measure language models on held-out text, side by side: perplexity, next-word
accuracy (top-1, top-3, MRR@3), keystroke savings and time per suggestion.

Every model is scored through the shipped `Predictor` (a baseline's LanguageModel is
wrapped in one), one message per line, so the RNN, the n-gram and a unigram are
ranked by exactly the suggestion policy the faces use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wordbot.artifacts import MAX_NGRAM_ORDER, model_directory
from wordbot.compare import format_differences, format_table, paired_differences
from wordbot.mix import best_order_weights, language_model  # noqa: F401  (training.py imports best_order_weights from here)
from wordbot.predictor import Prediction, Predictor
from wordbot.prefetch import Lookahead
from wordbot.text import BOS_ID, EOS, PAD_ID, UNK_ID, Tokenizer, is_word, tokenize

TOP_K = 3  # suggestions a keyboard shows
SAMPLE_SEED = 0  # the --max-positions sample is the same on every run


class Unigram:
    """Add-one unigram over a tokenizer's vocabulary: the floor any model must clear."""

    def __init__(self, tokenizer: Tokenizer, counts: np.ndarray):
        self.tokenizer = tokenizer
        p = np.asarray(counts, dtype=np.float64) + 1.0
        p[[PAD_ID, BOS_ID]] = 0.0  # never predicted, as in the n-gram
        self._p = p / p.sum()

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer: Tokenizer) -> Unigram:
        counts = np.zeros(len(tokenizer))
        for text in texts:
            np.add.at(counts, tokenizer.encode(text, eos=True), 1)
        return cls(tokenizer, counts)

    def initial_state(self) -> tuple:
        return ()

    def advance(self, state: tuple, token_id: int) -> tuple:
        return ()

    def probs(self, state: tuple) -> np.ndarray:
        return self._p.copy()


def sample_messages(messages: Sequence[str], max_positions: int | None) -> list[tuple[list[str], bool]]:
    """(tokens, whether `</s>` is scored too) for each message to score.

    With `max_positions`, messages are taken in a fixed-seed random order until that
    many token positions are covered, the last one cut short (and then without its
    `</s>`), so the same call always scores the same positions."""
    if max_positions is None:
        return [(tokenize(m), True) for m in messages]
    order = np.random.default_rng(SAMPLE_SEED).permutation(len(messages))
    out, positions = [], 0
    for i in order:
        room = max_positions - positions
        if room <= 0:
            break
        tokens = tokenize(messages[i])
        if len(tokens) + 1 <= room:
            out.append((tokens, True))
            positions += len(tokens) + 1
        else:
            out.append((tokens[:room], False))
            positions += room
    return out


class _Progress:
    """A one-line progress report on stderr, only when stderr is a terminal."""

    def __init__(self, label: str, total: int, enabled: bool | None = None):
        self.label, self.total, self.done = label, total, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last > 0.25:
            self._last = now
            pct = 100 * self.done / max(self.total, 1)
            sys.stderr.write(f"\r{self.label}: {pct:3.0f}% ({self.done:,}/{self.total:,} tokens)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * (len(self.label) + 40) + "\r")
            sys.stderr.flush()


def as_predictor(model) -> Predictor:
    """`model` as the shipped Predictor: itself, or a Predictor over a LanguageModel, so
    that every row of a table is ranked by the same code the faces call."""
    return model if isinstance(model, Predictor) else Predictor(language_model(model))


@dataclass
class _Tally:
    """The running counts behind every figure of `evaluate_messages`."""

    positions: int = 0
    oov: int = 0
    log_likelihood: float = 0.0
    scored: int = 0
    left_out: int = 0  # known to this model, but outside `scorable`: not in perplexity
    words: int = 0
    hits1: int = 0
    hits3: int = 0
    reciprocal: float = 0.0
    keys_used: int = 0
    keys_plain: int = 0
    word_times: list[float] = field(default_factory=list)
    key_times: list[float] = field(default_factory=list)

    def per_message(self) -> tuple:
        return tuple(getattr(self, name) for name in _PER_MESSAGE)


def evaluate_messages(
    model,
    messages: Sequence[str],
    *,
    max_positions: int | None = None,
    label: str = "evaluating",
    progress: bool | None = None,
    per_message: bool = False,
    scorable: Container[str] | None = None,
    prefetch: bool = True,
) -> dict:
    """Score `model` (a Predictor, or a LanguageModel served through one) on messages,
    one per string. Every suggestion comes from `Predictor.suggest_after`, the policy
    the faces ship, and every probability from the distribution it ranks.

    - perplexity: per token, over every token of the message and its `</s>`,
      punctuation included. Targets that are `<unk>` are left out, as is usual when
      models share one vocabulary (counting them would reward predicting `<unk>`);
      `oov_rate` says how many tokens that is. With `scorable` (the tokens every
      compared model knows), a target outside it is left out too (`left_out`), so
      that models with different vocabularies are compared on the same positions.
    - top1, top3, mrr3: on word targets only (not punctuation, not `</s>`); the
      candidates are the predictor's top 3 next words (no specials, no punctuation),
      compared case-insensitively. An out-of-vocabulary word is a miss.
    - ksr: keystroke savings. Each word is typed letter by letter; before every
      letter, including the first, the top 3 suggestions are offered (the next words
      for an empty prefix, else the completions of the typed prefix). Accepting one
      costs one keystroke and inserts the word and its space.
      KSR = 1 - keystrokes used / (letters + one space per word).
    - latency: per word, the time to advance the model by the previous token and rank
      the next words; per keystroke, the time to rank the completions of a prefix.

    With `per_message`, the counts behind each figure are kept per scored message too
    (for `paired_differences`). `prefetch=False` computes each distribution when it is
    asked for (what a face does), for comparison.
    """
    predictor = as_predictor(model)
    sample = sample_messages(messages, max_positions)
    bar = _Progress(label, sum(len(t) + complete for t, complete in sample), progress)
    tally = _Tally()
    started = time.perf_counter()
    counts = []  # per message: the running totals after it
    contexts = [message if complete else message[:-1] for message, complete in sample]
    lookahead = Lookahead(predictor, contexts) if prefetch else None
    for index, (message, complete) in enumerate(sample):
        _score_message(predictor, message, complete, tally, scorable, lookahead, index)
        bar.update(len(message) + complete)
        if per_message:
            counts.append(tally.per_message())
    bar.close()
    return _figures(tally, counts if per_message else None, time.perf_counter() - started)


def _score_message(
    predictor: Predictor, message: list[str], complete: bool, tally: _Tally, scorable, lookahead, index
) -> None:
    """Every position of one message: its probability, and for a word its suggestions.
    With a `lookahead` (the sample's contexts; this is its message `index`), the
    distributions are computed ahead in batches (the same values: the suggestions and
    figures do not change), and each position's time is its own plus its share of the
    batched work (but not the time of the batched work done for later positions)."""
    tokens = [*message, EOS] if complete else message
    targets = predictor.tokenizer.encode_tokens(tokens)  # EOS maps to EOS_ID
    if predictor.memory.messages:  # a learned word outside the vocabulary has its id past it
        learned = predictor.memory.learned_id
        targets = [learned(t) or UNK_ID if i == UNK_ID else i for t, i in zip(tokens, targets, strict=True)]
    for i, (token, target) in enumerate(zip(tokens, targets, strict=True)):
        context = message[:i]
        word = is_word(token)
        batched = lookahead.ready(index, i) if lookahead else 0.0  # its share of the batched work
        t0 = time.perf_counter() - batched
        p = predictor.probs_after(context)
        offered = predictor.suggest_after(context, "", TOP_K).predictions if word else []
        tally.word_times.append(time.perf_counter() - t0)
        tally.positions += 1
        if target == UNK_ID:
            tally.oov += 1
        elif scorable is not None and token not in scorable:
            tally.left_out += 1
        else:
            tally.log_likelihood += math.log(max(float(p[target]), 1e-300))
            tally.scored += 1
        if word:
            _type_word(predictor, context, token.lower(), offered, target != UNK_ID, tally)


def _type_word(predictor: Predictor, context: list[str], typed: str, offered, known: bool, tally: _Tally) -> None:
    """Type `typed` after `context` letter by letter, accepting it once it is offered."""
    tally.words += 1
    tally.keys_plain += len(typed) + 1
    cost = len(typed) + 1
    rank = _rank(offered, typed) if known else -1
    if rank >= 0:
        tally.hits1 += rank == 0
        tally.hits3 += 1
        tally.reciprocal += 1.0 / (rank + 1)
        cost = 1
    elif known:
        for j in range(1, len(typed)):
            t1 = time.perf_counter()
            found = _rank(predictor.suggest_after(context, typed[:j], TOP_K).predictions, typed) >= 0
            tally.key_times.append(time.perf_counter() - t1)
            if found:
                cost = j + 1
                break
    tally.keys_used += cost


def _rank(predictions: Sequence[Prediction], typed: str) -> int:
    """Where the word `typed` sits among the suggestions (case-insensitively), or -1."""
    for rank, prediction in enumerate(predictions):
        if prediction.word.lower() == typed:
            return rank
    return -1


def _figures(tally: _Tally, counts: list[tuple] | None, seconds: float) -> dict:
    word_ms = np.array(tally.word_times) * 1e3
    key_ms = np.array(tally.key_times) * 1e3 if tally.key_times else np.zeros(1)
    extra = {}
    if counts is not None:
        totals = np.array(counts, dtype=np.float64).reshape(-1, len(_PER_MESSAGE))
        each = np.diff(totals, axis=0, prepend=np.zeros((1, len(_PER_MESSAGE))))
        extra["per_message"] = {name: each[:, i] for i, name in enumerate(_PER_MESSAGE)}
    words, positions, scored = tally.words, tally.positions, tally.scored
    return extra | {
        "positions": positions,
        # None where there was nothing to score (a text of punctuation has no words):
        # "-" in the table, null in JSON, rather than a 0% that reads as a measurement.
        "perplexity": math.exp(-tally.log_likelihood / scored) if scored else None,
        "oov_rate": tally.oov / positions if positions else None,
        "left_out": tally.oov + tally.left_out,
        "words": words,
        "top1": tally.hits1 / words if words else None,
        "top3": tally.hits3 / words if words else None,
        "mrr3": tally.reciprocal / words if words else None,
        "ksr": 1.0 - tally.keys_used / tally.keys_plain if tally.keys_plain else None,
        "latency_word_ms_median": float(np.median(word_ms)) if len(word_ms) else 0.0,
        "latency_word_ms_p99": float(np.percentile(word_ms, 99)) if len(word_ms) else 0.0,
        "latency_key_ms_median": float(np.median(key_ms)),
        "latency_key_ms_p99": float(np.percentile(key_ms, 99)),
        "seconds": seconds,
    }


_PER_MESSAGE = ("words", "hits1", "hits3", "keys_used", "keys_plain", "log_likelihood", "scored")


def evaluate_file(model, path: str | os.PathLike, max_positions: int | None = None, **options) -> dict:
    """`evaluate_messages` on a file with one message per line."""
    from wordbot.corpus import read_messages

    return evaluate_messages(model, read_messages(path), max_positions=max_positions, **options)


def parse_baseline(baseline: str | None) -> int | None:
    """'kn4' -> 4; 'none' or None -> no n-gram baseline."""
    if baseline is None or baseline.lower() in ("", "none"):
        return None
    name = baseline.lower()
    if name.startswith("kn") and name[2:].isdigit() and 1 <= int(name[2:]) <= MAX_NGRAM_ORDER:
        return int(name[2:])
    raise ValueError(f"unknown baseline {baseline!r}: use kn2 .. kn5, or none")


def run(
    model_dir: str | os.PathLike | None,
    test_files: Sequence[str | os.PathLike],
    baseline: str | None = "kn4",
    as_json: bool = False,
    max_positions: int | None = None,
    backend: str | None = None,
) -> str:
    """`wordbot eval`: the model, the n-gram baseline and a unigram, trained on the
    model's own training text (validation part excluded), on each test file."""
    order = parse_baseline(baseline)
    models = _models(model_dir, backend, order)
    baseline_name = f"KN{order}" if order is not None else None
    report: dict[str, dict[str, dict]] = {}
    blocks = []
    for path in test_files:
        served = next(iter(models))
        compared = [(served, baseline_name)] if baseline_name else []
        results, block = file_report(models, path, max_positions, compared)
        report[str(path)] = results
        blocks.append(block)
    if as_json:
        return json.dumps(report, indent=2, allow_nan=False)
    return "\n\n".join(blocks)


def _models(model_dir: str | os.PathLike | None, backend: str | None, order: int | None) -> dict[str, Predictor]:
    """The rows of `wordbot eval`, each a Predictor, the served model first."""
    from wordbot.corpus import training_messages
    from wordbot.mix import open_tokenizer
    from wordbot.ngram import KneserNey

    predictor = Predictor.load(model_dir, backend=backend)
    train = training_messages(predictor.manifest, model_directory(model_dir))
    # The baselines know every word of the training text, as any n-gram a user built would.
    tokenizer = open_tokenizer(predictor.tokenizer, train)
    models = {f"{predictor.name}/{predictor.backend}": predictor}
    if predictor.backend == "mix":
        # Show what the recurrent network does alone beside the interpolation.
        models[f"{predictor.name}/rnn"] = Predictor(predictor.lm.models[0], name=predictor.name, backend="rnn")
    if order is not None:
        models[f"KN{order}"] = Predictor(
            KneserNey.from_texts(train, tokenizer, order), name=f"KN{order}", backend="ngram"
        )
    models["unigram"] = Predictor(Unigram.from_texts(train, tokenizer), name="unigram")
    return models


def file_report(models: dict[str, Predictor], path, max_positions: int | None, compared=(), messages=None):
    """(the figures of every model on one test file, the block of text that shows them).
    `compared`: (a, b) pairs of row names, each shown as a beats b with its interval;
    perplexity is over the tokens every model named in them (else the first) can score.
    `messages`: the file's messages, when they are at hand already."""
    from wordbot.corpus import read_messages

    messages = read_messages(path) if messages is None else messages  # once for all the models
    named = [name for name in models if any(name in pair for pair in compared)] or [next(iter(models))]
    scorable = set.intersection(*(set(models[name].tokenizer.vocab) for name in named))
    results = {
        name: evaluate_messages(
            model,
            messages,
            max_positions=max_positions,
            label=f"{name} on {Path(path).name}",
            per_message=True,
            scorable=scorable,
        )
        for name, model in models.items()
    }
    block = f"{path}\n\n{format_table(results)}"
    block += "\n\n" + _left_out_line(results, named)
    for a, b in compared:
        # How much a beats b, with how much that could move on other text like this
        # (what "beats by 2 points" can mean).
        found = paired_differences(results[a], results[b])
        if not results[a]["words"]:  # nothing to compare but perplexity
            found = {k: v for k, v in found.items() if k == "perplexity"}
        results[a].setdefault("against", {})[b] = found
        scored = len(results[a]["per_message"]["words"])
        block += "\n\n" + format_differences(a, b, found, scored)
    for metrics in results.values():
        del metrics["per_message"]
    return results, block


def _left_out_line(results: dict[str, dict], named: list[str]) -> str:
    """How many tokens perplexity leaves out, and why."""
    figures = results[named[0]]
    if len(named) == 1:
        both = f"{named[0]} can"
    else:
        both = ", ".join(named[:-1]) + f" and {named[-1]} can " + ("both" if len(named) == 2 else "all")
    line = (
        f"perplexity over the tokens {both} score: {figures['positions'] - figures['left_out']:,} of "
        f"{figures['positions']:,}, {figures['left_out']:,} left out (words outside their vocabularies)"
    )
    more = {name: m["left_out"] for name, m in results.items() if m["left_out"] > figures["left_out"]}
    if more:
        line += "; " + ", ".join(f"{name} leaves out {n:,}" for name, n in more.items())
    return line


def ngram_orders_report(
    train_path: str | os.PathLike,
    test_path: str | os.PathLike,
    orders: Sequence[int] = (2, 3, 4, 5),
    max_size: int = 10_000,
    min_count: int = 2,
    max_positions: int | None = None,
) -> dict[str, dict]:
    """Kneser-Ney of several orders (and a unigram) on one train/test pair, over a
    vocabulary built from the training file: the target a trained model must beat."""
    from wordbot.corpus import read_messages
    from wordbot.ngram import KneserNey

    train = read_messages(train_path)
    tokenizer = Tokenizer.build(train, max_size=max_size, min_count=min_count)
    ids = [tokenizer.encode(m, bos=True, eos=True) for m in train]
    results = {}
    for order in orders:
        started = time.perf_counter()
        model = KneserNey.train(ids, tokenizer, order)
        trained = time.perf_counter() - started
        results[f"KN{order}"] = evaluate_file(model, test_path, max_positions, label=f"KN{order}")
        results[f"KN{order}"]["train_seconds"] = trained
    counts = np.bincount(np.concatenate([seq[1:] for seq in ids]), minlength=len(tokenizer))
    unigram = Unigram(tokenizer, counts)
    results["unigram"] = evaluate_file(unigram, test_path, max_positions, label="unigram")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wordbot.evaluate", description="Kneser-Ney baselines of several orders on a test file."
    )
    parser.add_argument("--train", required=True, help="training text, one message per line")
    parser.add_argument("--test", required=True, help="held-out text, one message per line")
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 3, 4, 5], help="n-gram orders")
    parser.add_argument("--max-positions", type=int, help="score a fixed sample of this many tokens")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    results = ngram_orders_report(args.train, args.test, args.orders, max_positions=args.max_positions)
    print(json.dumps(results, indent=2) if args.json else format_table(results))


if __name__ == "__main__":
    main()
