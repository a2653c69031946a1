"""Measure language models on held-out text, side by side: perplexity, next-word
accuracy (top-1, top-3, MRR@3), keystroke savings and time per suggestion.

Every model is driven through the LanguageModel protocol (`initial_state / advance /
probs`), one message per line, so the RNN, the n-gram and a unigram are scored alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

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


def language_model(obj):
    """The LanguageModel inside `obj`: itself, or a Predictor's `.lm`."""
    if all(hasattr(obj, name) for name in ("initial_state", "advance", "probs")):
        return obj
    if hasattr(obj, "lm"):
        return obj.lm
    raise TypeError(f"{type(obj).__name__} is not a language model (initial_state/advance/probs)")


class _Suggester:
    """The words a keyboard would offer: the top-k real words overall, or among the
    vocabulary words that start with the typed prefix (one bisect, one slice)."""

    def __init__(self, tokenizer: Tokenizer):
        vocab = tokenizer.vocab
        ids = [i for i in tokenizer.word_ids if i != UNK_ID]
        self.word_ids = np.array(ids, dtype=np.int64)
        ranked = sorted(ids, key=lambda i: (vocab[i].lower(), i))
        self.sorted_words = [vocab[i].lower() for i in ranked]
        self.sorted_ids = np.array(ranked, dtype=np.int64)
        self.lower = [t.lower() for t in vocab]

    def top(self, p: np.ndarray, prefix: str = "") -> np.ndarray:
        if prefix:
            lo = bisect_left(self.sorted_words, prefix)
            hi = bisect_left(self.sorted_words, prefix + "\U0010ffff", lo)
            candidates = self.sorted_ids[lo:hi]
        else:
            candidates = self.word_ids
        if len(candidates) > TOP_K:
            scores = p[candidates]
            best = np.argpartition(-scores, TOP_K - 1)[:TOP_K]
            candidates = candidates[best[np.argsort(-scores[best], kind="stable")]]
        else:
            candidates = candidates[np.argsort(-p[candidates], kind="stable")]
        return candidates

    def position(self, suggestions: np.ndarray, word: str) -> int:
        """Where `word` sits in the suggestions (case-insensitively), or -1."""
        for rank, i in enumerate(suggestions.tolist()):
            if self.lower[i] == word:
                return rank
        return -1


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


def evaluate_messages(
    model,
    messages: Sequence[str],
    *,
    max_positions: int | None = None,
    label: str = "evaluating",
    progress: bool | None = None,
    per_message: bool = False,
) -> dict:
    """Score `model` (a LanguageModel or a Predictor) on messages, one per string.

    - perplexity: per token, over every token of the message and its `</s>`,
      punctuation included. Targets that are `<unk>` are left out, as is usual when
      models share one vocabulary (counting them would reward predicting `<unk>`);
      `oov_rate` says how many tokens that is.
    - top1, top3, mrr3: on word targets only (not punctuation, not `</s>`); the
      candidates are the model's likeliest real words (no specials, no punctuation),
      compared case-insensitively. An out-of-vocabulary word is a miss.
    - ksr: keystroke savings. Each word is typed letter by letter; before every
      letter, including the first, the top 3 suggestions are offered (the next words
      for an empty prefix, else the vocabulary words completing the typed prefix,
      ranked by the model). Accepting one costs one keystroke and inserts the word and
      its space. KSR = 1 - keystrokes used / (letters + one space per word).
    - latency: per word, the time to advance the model by the previous token and rank
      the next words; per keystroke, the time to rank the completions of a prefix.

    With `per_message`, the counts behind each figure are kept per scored message too
    (for `paired_differences`).
    """
    lm = language_model(model)
    tokenizer: Tokenizer = lm.tokenizer
    suggester = _Suggester(tokenizer)
    sample = sample_messages(messages, max_positions)
    bar = _Progress(label, sum(len(t) + complete for t, complete in sample), progress)
    log_likelihood, scored, oov, positions = 0.0, 0, 0, 0
    words, hits1, hits3, reciprocal = 0, 0, 0, 0.0
    keys_used, keys_plain = 0, 0
    word_times: list[float] = []
    key_times: list[float] = []
    started = time.perf_counter()
    counts = []  # per message: the running totals after it
    for message, complete in sample:
        state = lm.advance(lm.initial_state(), BOS_ID)
        tokens = [*message, EOS] if complete else message
        targets = tokenizer.encode_tokens(tokens)  # EOS maps to EOS_ID
        previous = None
        for token, target in zip(tokens, targets, strict=True):
            t0 = time.perf_counter()
            if previous is not None:
                state = lm.advance(state, previous)
            p = lm.probs(state)
            word = is_word(token)
            if word:
                suggestions = suggester.top(p)
            word_times.append(time.perf_counter() - t0)
            positions += 1
            if target == UNK_ID:
                oov += 1
            else:
                log_likelihood += math.log(max(float(p[target]), 1e-300))
                scored += 1
            if word:
                typed = token.lower()
                words += 1
                keys_plain += len(typed) + 1
                cost = len(typed) + 1
                rank = suggester.position(suggestions, typed) if target != UNK_ID else -1
                if rank >= 0:
                    hits1 += rank == 0
                    hits3 += 1
                    reciprocal += 1.0 / (rank + 1)
                    cost = 1
                elif target != UNK_ID:
                    for j in range(1, len(typed)):
                        t1 = time.perf_counter()
                        found = suggester.position(suggester.top(p, typed[:j]), typed) >= 0
                        key_times.append(time.perf_counter() - t1)
                        if found:
                            cost = j + 1
                            break
                keys_used += cost
            previous = target
        bar.update(len(targets))
        if per_message:
            counts.append((words, hits1, hits3, keys_used, keys_plain, log_likelihood, scored))
    bar.close()
    word_ms = np.array(word_times) * 1e3
    key_ms = np.array(key_times) * 1e3 if key_times else np.zeros(1)
    extra = {}
    if per_message:
        totals = np.array(counts, dtype=np.float64).reshape(-1, len(_PER_MESSAGE))
        each = np.diff(totals, axis=0, prepend=np.zeros((1, len(_PER_MESSAGE))))
        extra["per_message"] = {name: each[:, i] for i, name in enumerate(_PER_MESSAGE)}
    return extra | {
        "positions": positions,
        # None where there was nothing to score (a text of punctuation has no words):
        # "-" in the table, null in JSON, rather than a 0% that reads as a measurement.
        "perplexity": math.exp(-log_likelihood / scored) if scored else None,
        "oov_rate": oov / positions if positions else None,
        "words": words,
        "top1": hits1 / words if words else None,
        "top3": hits3 / words if words else None,
        "mrr3": reciprocal / words if words else None,
        "ksr": 1.0 - keys_used / keys_plain if keys_plain else None,
        "latency_word_ms_median": float(np.median(word_ms)) if len(word_ms) else 0.0,
        "latency_word_ms_p99": float(np.percentile(word_ms, 99)) if len(word_ms) else 0.0,
        "latency_key_ms_median": float(np.median(key_ms)),
        "latency_key_ms_p99": float(np.percentile(key_ms, 99)),
        "seconds": time.perf_counter() - started,
    }


_PER_MESSAGE = ("words", "hits1", "hits3", "keys_used", "keys_plain", "log_likelihood", "scored")


def paired_differences(a: dict, b: dict, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """How much model `a` beats model `b` on the same messages, with a paired bootstrap
    interval: messages are resampled with replacement and both models rescored on each
    resample, so what varies with the choice of text varies for both alike.

    `a` and `b` come from `evaluate_messages(..., per_message=True)` on the same messages.
    Returns, for top-1, top-3 and keystroke savings, the difference in points
    (percentage points), and for perplexity the relative change of a against b (%),
    each as {"difference", "low", "high"}."""
    pa, pb = a["per_message"], b["per_message"]
    n = len(pa["words"])
    if n == 0 or len(pb["words"]) != n:
        raise ValueError("both models must be scored on the same, non-empty messages")
    rng = np.random.default_rng(seed)
    # Row r says how often each message is drawn in resample r; row 0 is the text itself.
    draws = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)])

    def total(p, name):
        return draws @ p[name]

    def rate(p, hits, of):
        return total(p, hits) / np.maximum(total(p, of), 1)

    def ksr(p):
        return 1 - total(p, "keys_used") / np.maximum(total(p, "keys_plain"), 1)

    def ppl(p):
        return np.exp(-total(p, "log_likelihood") / np.maximum(total(p, "scored"), 1))

    series = {
        "top1": 100 * (rate(pa, "hits1", "words") - rate(pb, "hits1", "words")),
        "top3": 100 * (rate(pa, "hits3", "words") - rate(pb, "hits3", "words")),
        "ksr": 100 * (ksr(pa) - ksr(pb)),
        "perplexity": 100 * (ppl(pa) / ppl(pb) - 1),
    }
    tail = 100 * (1 - level) / 2
    return {
        name: {
            "difference": float(values[0]),
            # Resampling one message only ever draws that message: no interval to give.
            "low": float(np.percentile(values[1:], tail)) if n > 1 else None,
            "high": float(np.percentile(values[1:], 100 - tail)) if n > 1 else None,
        }
        for name, values in series.items()
    }


def format_differences(a_name: str, b_name: str, found: dict, messages: int) -> str:
    """One line per figure: `a` against `b`, with the interval `paired_differences` gave."""
    labels = {"top1": "top-1", "top3": "top-3", "ksr": "keystroke savings", "perplexity": "perplexity"}
    if messages > 1:
        lines = [f"{a_name} against {b_name} (95% paired-bootstrap interval over the {messages:,} messages):"]
    else:
        lines = [f"{a_name} against {b_name} (one message: no interval):"]
    for key, label in labels.items():
        d = found.get(key)
        if d is None:
            continue
        unit = "%" if key == "perplexity" else " points"
        interval = f"  ({d['low']:+.2f} to {d['high']:+.2f})" if d["low"] is not None else ""
        lines.append(f"  {label:<18} {d['difference']:+.2f}{unit}{interval}")
    return "\n".join(lines)


def _scored_states(lm, messages: Sequence[str]):
    """(state, target) at every scored position: every token and `</s>`, `<unk>` skipped."""
    for message in messages:
        targets = lm.tokenizer.encode(message, eos=True)
        state = lm.advance(lm.initial_state(), BOS_ID)
        for target in targets:
            if target != UNK_ID:
                yield state, target
            state = lm.advance(state, target)


def target_probs(model, messages: Sequence[str]) -> np.ndarray:
    """p(target) at every scored position (every token and `</s>`, `<unk>` skipped)."""
    lm = language_model(model)
    return np.array([float(lm.probs(state)[target]) for state, target in _scored_states(lm, messages)])


def best_mix_weight(model, ngram, messages: Sequence[str], weights: Sequence[float] | None = None):
    """The n-gram weight w minimising the perplexity of (1 - w) p_model + w p_ngram on
    `messages` (use validation text, never the test file). Returns (w, {w: perplexity})."""
    weights = np.linspace(0.0, 0.6, 13) if weights is None else weights
    p_model, p_ngram = target_probs(model, messages), target_probs(ngram, messages)
    table = {float(w): _mix_perplexity(p_model, p_ngram, w) for w in weights}
    return min(table, key=table.get), table


def _mix_perplexity(p_model: np.ndarray, p_ngram: np.ndarray, w) -> float:
    return float(np.exp(-np.mean(np.log(np.maximum((1 - w) * p_model + w * p_ngram, 1e-300)))))


def context_orders(ngram, messages: Sequence[str]) -> np.ndarray:
    """The n-gram's `context_order` at every position `target_probs` scores."""
    return np.array([ngram.context_order(state) for state, _ in _scored_states(ngram, messages)], dtype=np.int64)


def best_order_weights(
    model, ngram, messages: Sequence[str], weights: Sequence[float] | None = None, min_positions: int = 200
) -> dict:
    """Weights for mixing `model` with a Kneser-Ney `ngram`, chosen on `messages` by
    perplexity (validation text, never the test file): one weight for all positions,
    and one per longest context the n-gram has seen (`OrderWeighted`); an order seen
    at fewer than `min_positions` positions gets the single weight."""
    weights = np.linspace(0.0, 0.95, 20) if weights is None else np.asarray(weights)
    p_model, p_ngram = target_probs(model, messages), target_probs(ngram, messages)
    orders = context_orders(ngram, messages)
    table = {float(w): _mix_perplexity(p_model, p_ngram, w) for w in weights}
    single = min(table, key=table.get)
    by_order = {}
    for k in range(1, ngram.order + 1):
        here = orders == k
        if here.sum() < min_positions:
            by_order[k] = single
            continue
        scores = [_mix_perplexity(p_model[here], p_ngram[here], w) for w in weights]
        by_order[k] = float(weights[int(np.argmin(scores))])
    w = np.array([by_order[k] for k in orders])
    return {
        "single": single,
        "by_order": by_order,
        "positions_by_order": {k: int((orders == k).sum()) for k in range(1, ngram.order + 1)},
        "model_perplexity": _mix_perplexity(p_model, p_ngram, 0.0),
        "single_perplexity": table[single],
        "by_order_perplexity": _mix_perplexity(p_model, p_ngram, w),
    }


def evaluate_file(model, path: str | os.PathLike, max_positions: int | None = None, **options) -> dict:
    """`evaluate_messages` on a file with one message per line."""
    from wordbot.corpus import read_messages

    return evaluate_messages(model, read_messages(path), max_positions=max_positions, **options)


_ROWS = [
    ("perplexity", "perplexity (lower is better)", "{:.1f}"),
    ("top1", "top-1 next word", "{:.1%}"),
    ("top3", "top-3 next word", "{:.1%}"),
    ("mrr3", "MRR@3", "{:.3f}"),
    ("ksr", "keystroke savings", "{:.1%}"),
    ("oov_rate", "OOV tokens (not in perplexity)", "{:.1%}"),
    ("latency_word_ms_median", "ms per word, median", "{:.3f}"),
    ("latency_word_ms_p99", "ms per word, p99", "{:.3f}"),
    ("latency_key_ms_median", "ms per keystroke, median", "{:.3f}"),
    ("latency_key_ms_p99", "ms per keystroke, p99", "{:.3f}"),
    ("positions", "tokens scored", "{:,}"),
    ("words", "words scored", "{:,}"),
]


def format_table(results: dict[str, dict]) -> str:
    """Models as columns, metrics as rows: `{"default": metrics, "KN4": metrics, ...}`."""
    names = list(results)
    header = ["metric", *names]
    rows = [header]
    for key, label, fmt in _ROWS:
        if any(key in m for m in results.values()):
            rows.append(
                [label, *(fmt.format(results[n][key]) if results[n].get(key) is not None else "-" for n in names)]
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_baseline(baseline: str | None) -> int | None:
    """'kn4' -> 4; 'none' or None -> no n-gram baseline."""
    if baseline is None or baseline.lower() in ("", "none"):
        return None
    name = baseline.lower()
    if name.startswith("kn") and name[2:].isdigit() and 1 <= int(name[2:]) <= 6:
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
    from wordbot.artifacts import DEFAULT_MODEL_DIR
    from wordbot.corpus import read_messages, training_messages
    from wordbot.ngram import KneserNey
    from wordbot.predictor import Predictor

    predictor = Predictor.load(model_dir, backend=backend)
    directory = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    tokenizer = predictor.tokenizer
    train = training_messages(predictor.manifest, directory)
    models = {f"{predictor.name}/{predictor.backend}": predictor.lm}
    if predictor.backend == "mix":
        # Show what the recurrent network does alone beside the interpolation.
        models[f"{predictor.name}/rnn"] = predictor.lm.models[0]
    order = parse_baseline(baseline)
    if order is not None:
        models[f"KN{order}"] = KneserNey.from_texts(train, tokenizer, order)
    models["unigram"] = Unigram.from_texts(train, tokenizer)
    served = next(iter(models))
    baseline_name = f"KN{order}" if order is not None else None
    report: dict[str, dict[str, dict]] = {}
    blocks = []
    for path in test_files:
        messages = read_messages(path)  # once for all the models
        results = {
            name: evaluate_messages(
                lm, messages, max_positions=max_positions, label=f"{name} on {Path(path).name}", per_message=True
            )
            for name, lm in models.items()
        }
        block = f"{path}\n\n{format_table(results)}"
        if baseline_name:
            # The served model against the baseline, with how much the figures could
            # move on other text like this (what "beats by 2 points" can mean).
            found = paired_differences(results[served], results[baseline_name])
            if not results[served]["words"]:  # nothing to compare but perplexity
                found = {k: v for k, v in found.items() if k == "perplexity"}
            results[served]["against"] = {baseline_name: found}
            messages = len(results[served]["per_message"]["words"])
            block += "\n\n" + format_differences(served, baseline_name, found, messages)
        for metrics in results.values():
            del metrics["per_message"]
        report[str(path)] = results
        blocks.append(block)
    if as_json:
        return json.dumps(report, indent=2, allow_nan=False)
    return "\n\n".join(blocks)


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
