"""How a model is named to people: the one line help screens show (`describe_model`,
`Predictor.describe`), the n-gram weights in words (`mix_weights_text`), and the
lines `wordbot info` prints (`info_lines`). Wording only: nothing here loads a network.
"""

from __future__ import annotations

import os
from pathlib import Path

from wordbot.artifacts import DEFAULT_ORDER, load_model, model_directory, served_backend

CELL_NAMES = {"simple_rnn": "SimpleRNN", "gru": "GRU", "lstm": "LSTM"}
_METRIC_LABELS = {
    "validation_perplexity": "validation perplexity of the network (<unk> counted)",
    "train_minutes": "training minutes",
}


def describe_model(name: str, manifest: dict, backend: str, vocab_size: int, kind: str = "model") -> str:
    """One line for help screens, from a model's manifest and the backend it serves."""
    arch = manifest.get("architecture")
    if not arch:
        return f"{name}: {kind}, vocabulary {vocab_size:,}"
    cell = CELL_NAMES.get(arch["cell"], arch["cell"])
    model = f"{cell} {arch['layers']}×{arch['units']}"
    if arch.get("members", 1) > 1:
        model = f"ensemble of {arch['members']} {cell} {arch['layers']}×{arch['units']}"
    mix = manifest.get("mix") or {}
    if backend == "mix" and mix:
        model += f" mixed with a Kneser-Ney {mix.get('order', DEFAULT_ORDER)}-gram"
    elif backend == "ngram":
        model = f"Kneser-Ney {mix.get('order', DEFAULT_ORDER)}-gram on the text of {model}"
    vocabulary = f"vocabulary {vocab_size:,}"
    network_size = manifest.get("vocab_size")
    if isinstance(network_size, int) and vocab_size > network_size:  # the open vocabulary of the mix
        vocabulary += f" (every word of its training text; the network knows {network_size:,})"
    parts = [model, vocabulary]
    files = (manifest.get("corpus") or {}).get("files") or []
    if files:
        parts.append("trained on " + ", ".join(Path(f["path"]).name for f in files))
    metrics = manifest.get("metrics") or {}
    if backend == "mix" and "mix_perplexity" in mix:
        parts.append(f"validation perplexity {mix['mix_perplexity']:.1f}")
    elif backend == "rnn" and "rnn_perplexity" in mix:
        parts.append(f"validation perplexity {mix['rnn_perplexity']:.1f}")
    elif backend == "rnn" and "validation_perplexity" in metrics:
        parts.append(f"validation perplexity {metrics['validation_perplexity']:.1f}")
    return f"{name}: " + ", ".join(parts)


def mix_weights_text(mix: dict) -> str:
    """'0.35 / 0.40 / 0.50 / 0.60 (by longest context seen: 2 / 3 / 4 / 5 words)'."""
    weights = mix.get("ngram_weight_by_order")
    if not weights:
        return f"{mix['ngram_weight']:.2f}"
    orders = sorted(weights, key=int)
    text = (
        " / ".join(f"{weights[k]:.2f}" for k in orders)
        + " (by the order of the longest context it has seen: "
        + " / ".join(orders)
        + ")"
    )
    positions = mix.get("positions_by_order") or {}
    untuned = [k for k in orders if k in positions and not positions[k]]
    if untuned:  # no validation position to tune them on: they keep the single weight
        text += f"; order {', '.join(untuned)} never came up in validation and keeps the single weight"
    return text


def _made_lines(manifest: dict, directory: Path) -> list[str]:
    """How the model was made and from what: the model it was fine-tuned from, the
    fitting settings, and its training log."""
    lines = []
    base = manifest.get("from")
    config = manifest.get("config") or {}
    if isinstance(base, dict):
        sha = str(base.get("sha256", "?"))[:12]
        made_from = ", ".join(base.get("corpus") or []) or "?"
        lines.append(
            f"from:      {base.get('model', '?')} (sha256 {sha}…, trained on {made_from}); its vocabulary kept"
        )
    if config:
        lines.append(
            f"fitting:   learning rate {config.get('learning_rate', '?')} ({config.get('lr_schedule', '?')}), "
            f"at most {config.get('epochs', '?')} epochs, stopping after {config.get('patience', '?')} without "
            f"validation gain, dropout {config.get('dropout', '?')}"
        )
    mix = manifest.get("mix") or {}
    if mix.get("ngram_text"):
        tried = ", ".join(f"{k} {v}" for k, v in (mix.get("ngram_text_perplexity") or {}).items())
        lines.append(f"n-gram:    counted on the {mix['ngram_text']} (validation perplexity of the mix: {tried})")
    log = directory / "training-log.csv"
    if log.is_file():
        lines.append(f"training log: {log} (draw it: wordbot info {directory} --plot curves.png)")
    return lines


def _served_size(manifest: dict, directory, tokenizer) -> int:
    """How many words the served model offers: with the n-gram, every word of the training
    text (counted once, then cached); the network's vocabulary where that text is gone."""
    if served_backend(manifest) == "rnn":
        return len(tokenizer)
    from wordbot.errors import WordbotError
    from wordbot.mix import served_tokenizer

    try:
        return len(served_tokenizer(manifest, directory, tokenizer))
    except WordbotError:
        return len(tokenizer)


def info_lines(path: str | os.PathLike | None) -> list[str]:
    """What `wordbot info` prints about a model directory (None: the bundled model),
    after checking the whole directory as loading it would."""
    manifest, tokenizer, _ = load_model(path)
    directory = model_directory(path)
    backend = served_backend(manifest)
    lines = [
        describe_model(directory.resolve().name, manifest, backend, _served_size(manifest, directory, tokenizer)),
        f"directory: {directory}",
        f"created:   {manifest.get('created', '?')}, wordbot {manifest.get('wordbot_version', '?')}",
        *_made_lines(manifest, directory),
    ]
    for key, value in (manifest.get("metrics") or {}).items():
        if key == "networks":
            for i, net in enumerate(value, 1):
                lines.append(f"network {i}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in net.items()))
        else:
            lines.append(f"{_METRIC_LABELS.get(key, key.replace('_', ' '))}: {value}")
    mix = manifest.get("mix")
    if mix:
        lines.append(
            f"mix: Kneser-Ney {mix.get('order', DEFAULT_ORDER)}-gram weight {mix_weights_text(mix)}; validation "
            f"perplexity (<unk> not counted) {mix.get('rnn_perplexity', '?')} alone, "
            f"{mix.get('mix_perplexity', '?')} mixed"
        )
        lines.append(f"served backend: {backend}")
    return lines
