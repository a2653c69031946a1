"""Models side by side: the table of figures `wordbot eval` prints, and how much one
model beats another on the same messages, with a paired-bootstrap interval (what
"beats by 2 points" can mean on other text like this).
"""

from __future__ import annotations

import numpy as np


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


_ROWS = [
    ("perplexity", "perplexity (lower is better)", "{:.1f}"),
    ("top1", "top-1 next word", "{:.1%}"),
    ("top3", "top-3 next word", "{:.1%}"),
    ("mrr3", "MRR@3", "{:.3f}"),
    ("ksr", "keystroke savings", "{:.1%}"),
    ("oov_rate", "OOV tokens (not in perplexity)", "{:.1%}"),
    ("left_out", "tokens left out of perplexity", "{:,}"),
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
