"""Text rebuilding and chat-log debris, before and after this stage's changes, in one run.

    PYTHONPATH=. python benchmarks/bench_text.py [--continuations 200] [--examples 10]

1. Round trip: over the bundled model's validation messages (carved out of
   data/corpus/fortunes-train.txt as its manifest says; never the test file), the share
   for which `detokenize(tokenize(m))` gives back `m`, runs of whitespace collapsed and
   case folded. Three ways: the old rule-based rebuilder (kept below as the reference),
   today's tokens that keep their text's spacing, and today's rules alone (the tokens
   as plain strings, as a model samples them). Then examples of what still differs.
2. Debris: IRC nick markup (`<knghtbrd>`) and message-ID fragments in seeded
   continuations of the first words of validation messages, with the bundled model,
   as served and with the debris tokens (`wordbot.text.debris_ids`) banned.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wordbot.corpus import read_corpus, split_messages  # noqa: E402
from wordbot.predictor import Predictor  # noqa: E402
from wordbot.text import (  # noqa: E402
    _BANGS,
    _CLITICS,
    _NO_SPACE_AFTER,
    _NO_SPACE_BEFORE,
    _SENTENCE_END,
    SPECIALS,
    at_sentence_start,
    debris_ids,
    detokenize,
    is_debris,
    tokenize,
)

MODEL_DIR = ROOT / "data" / "models" / "default"
WORD_RE = re.compile(r"[\w']+")


def old_detokenize(tokens: Iterable[str], after: Sequence[str] = ()) -> str:
    """The rebuilder before this stage (wordbot/text.py at 97b7225), capitals left out."""
    out: list[str] = []
    previous = after[-1] if after else None
    open_quote = {q: sum(t == q for t in after) % 2 == 1 for q in ('"', "'")}
    at_sentence_start(after)
    tokens = [t for t in tokens if t not in SPECIALS]
    for i, token in enumerate(tokens):
        ends_sentence = token in _SENTENCE_END or _BANGS.fullmatch(token) is not None
        attach_left = token in _NO_SPACE_BEFORE or token in _CLITICS or ends_sentence
        if token in open_quote:
            attach_left = open_quote[token]
            open_quote[token] = not open_quote[token]
            following = tokens[i + 1] if i + 1 < len(tokens) else None
            if attach_left is False and previous in _SENTENCE_END and following in (None, "--"):
                attach_left, open_quote[token] = True, False
        if previous is None or previous in SPECIALS or previous in _NO_SPACE_AFTER or open_quote.get(previous):
            attach_left = True
        out.append(token if attach_left else " " + token)
        previous = token
    return "".join(out)


def validation_messages() -> list[str]:
    corpus = json.loads((MODEL_DIR / "manifest.json").read_text())["corpus"]
    messages = read_corpus([MODEL_DIR / f["path"] for f in corpus["files"]], corpus["format"])
    _, validation = split_messages(messages, corpus["validation_fraction"], corpus["split_seed"])
    return validation


def key(text: str) -> str:
    return " ".join(text.split()).casefold()


def round_trip(messages: list[str], n_examples: int) -> None:
    ways = {
        "before (rules, 97b7225)": lambda m: old_detokenize(tokenize(m)),
        "after, spacing kept (tokenize -> detokenize)": lambda m: detokenize(tokenize(m)),
        "after, rules alone (sampled tokens)": lambda m: detokenize(list(tokenize(m))),
    }
    print(f"Round trip over {len(messages)} validation messages (whitespace collapsed, case folded):")
    differing = {}
    for name, rebuild in ways.items():
        differing[name] = [(m, rebuild(m)) for m in messages if key(rebuild(m)) != key(m)]
        share = 1 - len(differing[name]) / len(messages)
        print(f"  {name:46s} {share:7.2%}  ({len(messages) - len(differing[name])} of {len(messages)})")
    for name in list(ways)[1:]:
        print(f"\nWhat still differs, {name} (first {n_examples}; message -> rebuilt):")
        for message, rebuilt in differing[name][:n_examples]:
            print("  " + "; ".join(_differences(key(message), key(rebuilt))))


def _differences(a: str, b: str, width: int = 14) -> list[str]:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [
        f"{a[max(0, i1 - width) : i2 + width]!r} -> {b[max(0, j1 - width) : j2 + width]!r}"
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
        if op != "equal"
    ][:2]


def debris_in(text: str) -> list[str]:
    """Nick markup and message-ID fragments as a user would see them in a continuation."""
    found = re.findall(r"<[^<>\s]*>?|>", text)
    return found + [w for w in WORD_RE.findall(text.lower()) if is_debris(w)]


def debris(messages: list[str], n: int) -> None:
    predictor = Predictor.load()
    banned = debris_ids(predictor.tokenizer.vocab)
    print(f"\nDebris tokens in the bundled vocabulary ({len(banned)}):")
    print("  " + " ".join(predictor.tokenizer.vocab[i] for i in banned))
    prompts = [" ".join(m.split()[:4]) for m in messages[:n]]
    served = predictor._banned
    for name, ban in (("as served", served), ("debris banned", np.union1d(served, banned))):
        predictor._banned = ban  # what the lead wires into predictor.py
        start = time.perf_counter()
        texts = [predictor.continue_text(p, 20, seed=i) for i, p in enumerate(prompts)]
        seconds = time.perf_counter() - start
        found = [debris_in(t) for t in texts]
        hits = [(p, t) for p, t, f in zip(prompts, texts, found, strict=True) if f]
        print(
            f"\n{name}: {len(hits)} of {len(texts)} continuations show debris, "
            f"{sum(map(len, found))} pieces ({seconds:.0f} s)"
        )
        for prompt, text in hits[:5]:
            print(f"  {prompt!r} -> {text.strip()!r}")
    predictor._banned = served


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--continuations", type=int, default=200, help="seeded continuations per way")
    parser.add_argument("--examples", type=int, default=10, help="differing messages to show")
    args = parser.parse_args(argv)
    messages = validation_messages()
    round_trip(messages, args.examples)
    debris(messages, args.continuations)


if __name__ == "__main__":
    main()
