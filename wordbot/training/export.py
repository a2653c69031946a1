"""The export step: the manifest (architecture, corpus, configuration, figures), the
n-gram mix tuned on validation text, and the model directory written with its own copy
of the training text. NumPy only."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from wordbot.corpus import TRAINING_TEXT, pack_messages, sha256_of
from wordbot.predictor import mix_weights_text
from wordbot.saving import save_model
from wordbot.training.config import TrainConfig
from wordbot.training.data import TrainingData
from wordbot.training.watch import LOG_NAME


def export(
    config: TrainConfig,
    data: TrainingData,
    weights: dict,
    metrics: dict,
    log,
    base=None,
    training_log=None,
    manifest_extra: dict | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    """Write the model directory `config.out`; returns it. `base`: the model fine-tuned
    (a finetune.Base); `training_log`: the run's training-log.csv, copied in;
    `manifest_extra`, `files`: more manifest sections and files (see `run.train`)."""
    out = Path(config.out)
    manifest = {
        "architecture": config.architecture(),
        "corpus": _corpus_section(config, data, out),
        "config": dataclasses.asdict(config),
        "metrics": metrics,
    }
    if base is not None:
        manifest["from"] = base.provenance()
    manifest.update(manifest_extra or {})
    ngram, ngram_messages = None, data.train_messages
    if config.mix_order and data.val_messages:
        log(f"tuning the interpolation with a Kneser-Ney {config.mix_order}-gram on the validation text")
        ngram, ngram_messages, tuned = _ngram_and_mix(config, data, weights, manifest, base, log)
        manifest.update(tuned)
        log(
            f"validation perplexity (<unk> not counted): rnn {manifest['mix']['rnn_perplexity']:.1f}, "
            f"mix {manifest['mix']['mix_perplexity']:.1f} with n-gram weights {mix_weights_text(manifest['mix'])}; "
            f"serving {manifest['serving']['backend']}"
        )
    # The text the n-gram is counted from travels with the model (a few hundred kB for
    # the bundled corpus), so the mix works wherever the directory is copied.
    text = pack_messages(ngram_messages)
    manifest["corpus"]["training_text"] = {
        "path": TRAINING_TEXT,
        "sha256": hashlib.sha256(text).hexdigest(),
        "messages": len(ngram_messages),
    }
    files = {**(files or {}), TRAINING_TEXT: text}
    if training_log is not None and Path(training_log).exists():
        files[LOG_NAME] = Path(training_log).read_bytes()
    save_model(out, manifest, data.tokenizer, weights, dtype=config.weights_dtype, files=files)
    if ngram is not None and manifest["serving"]["backend"] == "mix":
        from wordbot.ngram_cache import remember

        remember(ngram, manifest)  # the first start counts nothing
    return out


def _corpus_section(config: TrainConfig, data: TrainingData, out: Path) -> dict:
    """The manifest's account of the training text: its files, format and split."""
    return {
        "files": [
            {"path": _portable_path(p, out), "sha256": sha256_of(p), "bytes": p.stat().st_size} for p in data.paths
        ],
        "format": config.format,
        "validation_fraction": config.validation_fraction,
        "split_seed": config.split,
        "train_messages": len(data.train_messages),
        "validation_messages": len(data.val_messages),
        "train_tokens": data.train_tokens,
    }


def _ngram_and_mix(config: TrainConfig, data: TrainingData, weights, manifest, base, log):
    """The n-gram counted on the new training text and, when fine-tuning, also on the base
    model's training text (each message counted once) if that mixes to a lower validation
    perplexity; returns (n-gram, the messages it counts, the manifest's mix sections)."""
    from wordbot.ngram import KneserNey

    candidates = {"new text": data.train_messages}
    if base is not None:
        from wordbot.corpus import training_messages
        from wordbot.errors import CorpusError

        try:
            candidates["new text + base text"] = data.train_messages + training_messages(base.manifest, base.directory)
        except CorpusError as e:
            log(f"the n-gram counts the new text alone: {e}")
    tried = {}
    for name, messages in candidates.items():
        ngram = KneserNey.from_texts(messages, data.tokenizer, config.mix_order)
        tuned = tune_mix(manifest, data.tokenizer, weights, ngram, data.val_messages, messages)
        tried[name] = (ngram, messages, tuned)
    chosen = min(tried, key=lambda name: tried[name][2]["mix"]["mix_perplexity"])
    ngram, messages, tuned = tried[chosen]
    if len(tried) > 1:
        tuned["mix"]["ngram_text"] = chosen
        tuned["mix"]["ngram_text_perplexity"] = {name: t[2]["mix"]["mix_perplexity"] for name, t in tried.items()}
        log(
            "n-gram counted on the "
            + " or the ".join(
                f"{name} (validation perplexity {t[2]['mix']['mix_perplexity']:.1f})" for name, t in tried.items()
            )
            + f": {chosen} chosen"
        )
    return ngram, messages, tuned


def tune_mix(manifest, tokenizer, weights, ngram, val_messages, train_messages, max_messages: int = 1000) -> dict:
    """Choose how the network is mixed with a Kneser-Ney n-gram, on validation text.

    The validation messages that repeat training text (an 8-word run in common: the
    same quotation filed twice) are left out when enough others remain: there the
    n-gram simply remembers, and weights tuned on them trust it more than new text
    deserves. The n-gram's weight is chosen per longest context it has seen
    (`ngram.OrderWeighted`); the mixture is served only if it beats the network alone
    by more than 1% in perplexity.
    """
    from wordbot.corpus import novel_messages
    from wordbot.engine import network
    from wordbot.evaluate import best_order_weights

    rnn = network(manifest, tokenizer, weights)
    candidates = val_messages[:max_messages]
    novel = novel_messages(candidates, train_messages)
    tune_on = novel if len(novel) >= min(50, len(candidates)) else candidates
    found = best_order_weights(rnn, ngram, tune_on)
    rnn_ppl, mix_ppl = found["model_perplexity"], found["by_order_perplexity"]
    described = f"{len(tune_on)} validation messages"
    if tune_on is novel and len(novel) < len(candidates):
        described += f" (of {len(candidates)}; those repeating an 8-word run of the training text left out)"
    return {
        "mix": {
            "order": ngram.order,
            "ngram_weight": round(found["single"], 2),
            "ngram_weight_by_order": {str(k): round(w, 2) for k, w in found["by_order"].items()},
            "positions_by_order": {str(k): n for k, n in found["positions_by_order"].items()},
            "rnn_perplexity": round(rnn_ppl, 2),
            "single_weight_perplexity": round(found["single_perplexity"], 2),
            "mix_perplexity": round(mix_ppl, 2),
            "tuned_on": described,
        },
        "serving": {"backend": "mix" if mix_ppl < 0.99 * rnn_ppl else "rnn"},
    }


def _portable_path(corpus: Path, out: Path) -> str:
    """The corpus path relative to the model directory when both share a tree."""
    try:
        return os.path.relpath(corpus.resolve(), out.resolve())
    except ValueError:  # different drives
        return str(corpus.resolve())
