from __future__ import annotations

import json
import os

import numpy as np
import pytest

from wordbot.artifacts import load_model
from wordbot.errors import ModelError
from wordbot.predictor import Predictor
from wordbot.saving import save_model

from .conftest import make_model_dir


@pytest.fixture
def model_dir(tmp_path):
    return make_model_dir(tmp_path / "m")


def _edit_manifest(model_dir, **changes):
    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_a_saved_model_loads_back(model_dir):
    manifest, tokenizer, weights = load_model(model_dir)
    assert manifest["vocab_size"] == len(tokenizer)
    assert weights["embedding"].shape == (len(tokenizer), 16)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: (d / "weights.npz").unlink(), "weights.npz is missing"),
        (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "manifest.json: unreadable"),
        (lambda d: (d / "weights.npz").write_bytes(b"garbage"), "weights.npz: not a weights archive"),
        (
            lambda d: (d / "weights.npz").write_bytes((d / "weights.npz").read_bytes()[:1000]),
            "weights.npz: .* damaged or truncated",
        ),
        (lambda d: _edit_manifest(d, format_version=99), "format version 99"),
        (lambda d: _edit_manifest(d, vocab_size=12), "vocabulary size 12"),
        (lambda d: _edit_manifest(d, architecture={"cell": "transformer"}), "unknown cell 'transformer'"),
        (
            lambda d: _edit_manifest(
                d, architecture=json.loads((d / "manifest.json").read_text())["architecture"] | {"members": 0}
            ),
            "members must be an integer from 1 to 16",
        ),
        (
            lambda d: _edit_manifest(
                d, architecture=json.loads((d / "manifest.json").read_text())["architecture"] | {"members": 2}
            ),
            "'member1/embedding' is missing",
        ),
        (
            lambda d: _edit_manifest(
                d, architecture=json.loads((d / "manifest.json").read_text())["architecture"] | {"layers": 0}
            ),
            "layers must be a positive integer",
        ),
        # The n-gram half is built from the manifest's "mix": an edit there is named, not a traceback.
        (
            lambda d: _edit_manifest(d, mix={"order": 9, "ngram_weight": 0.3}),
            "mix.order must be an integer from 1 to 6",
        ),
        (lambda d: _edit_manifest(d, mix={"order": 4, "ngram_weight": "high"}), "mix.ngram_weight must be a number"),
        (
            lambda d: _edit_manifest(d, mix={"order": 4, "ngram_weight_by_order": {"1": 2.0}}),
            "mix.ngram_weight_by_order must map",
        ),
        (lambda d: _edit_manifest(d, mix={"order": 4, "mix_perplexity": "?"}), "mix.mix_perplexity must be a number"),
        (lambda d: _edit_manifest(d, serving={"backend": "gpt"}), "serving.backend must be one of rnn, ngram, mix"),
        (
            lambda d: _edit_manifest(
                d, architecture=json.loads((d / "manifest.json").read_text())["architecture"] | {"units": "24"}
            ),
            "units must be a positive integer",
        ),
    ],
)
def test_a_broken_model_directory_gives_a_clear_error(model_dir, breakage, message):
    breakage(model_dir)
    with pytest.raises(ModelError, match=message):
        Predictor.load(model_dir)


def test_a_missing_array_is_named(model_dir):
    with np.load(model_dir / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "rnn0/recurrent_kernel"}
    np.savez(model_dir / "weights.npz", **arrays)
    with pytest.raises(ModelError, match="'rnn0/recurrent_kernel' is missing"):
        load_model(model_dir)


def test_a_mismatched_array_shape_is_named(model_dir):
    with np.load(model_dir / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["embedding"] = arrays["embedding"][:, :8]
    np.savez(model_dir / "weights.npz", **arrays)
    with pytest.raises(ModelError, match="'embedding' has shape"):
        load_model(model_dir)


def test_a_missing_directory_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        Predictor.load(tmp_path / "nope")


def test_an_interrupted_save_leaves_the_old_model_intact(model_dir, monkeypatch):
    before = (model_dir / "weights.npz").read_bytes()
    manifest, tokenizer, weights = load_model(model_dir)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the new weights were written

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(model_dir, manifest, tokenizer, weights)
    assert (model_dir / "weights.npz").read_bytes() == before
    assert load_model(model_dir)[0]["vocab_size"] == len(tokenizer)
    assert not [p for p in os.listdir(model_dir.parent) if p.startswith(".")]  # no debris left


def test_saving_over_a_model_replaces_it_whole(model_dir):
    manifest, tokenizer, weights = load_model(model_dir)
    weights["output/bias"] = weights["output/bias"] + 1.0
    save_model(model_dir, manifest, tokenizer, weights)
    assert np.allclose(load_model(model_dir)[2]["output/bias"], weights["output/bias"])


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_model_never_replaces_what_is_not_a_model(model_dir, tmp_path, kind):
    """`--out notes` must not delete the user's notes: only an older model is replaced."""
    manifest, tokenizer, weights = load_model(model_dir)
    target = tmp_path / "precious"
    if kind == "file":
        target.write_text("my corpus")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("my notes")
    with pytest.raises(ModelError, match="choose another --out"):
        save_model(target, manifest, tokenizer, weights)
    assert (target.read_text() if kind == "file" else (target / "notes.txt").read_text()).startswith("my ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "precious"]  # nothing moved aside


def test_a_saved_model_directory_is_readable_by_others(tmp_path):
    directory = make_model_dir(tmp_path / "shared")
    assert directory.stat().st_mode & 0o055 == 0o055  # group and others may read and enter


def test_float16_weights_take_half_the_space_and_predict_the_same(tmp_path):
    full = make_model_dir(tmp_path / "full")
    half = make_model_dir(tmp_path / "half", dtype="float16")
    assert (half / "weights.npz").stat().st_size < 0.6 * (full / "weights.npz").stat().st_size
    manifest, _, weights = load_model(half)
    assert manifest["weights_dtype"] == "float16"
    assert all(w.dtype == np.float32 for w in weights.values())  # the engine computes in float32
    a = Predictor.load(full, backend="rnn").next_words("the cat sat on the", k=5)
    b = Predictor.load(half, backend="rnn").next_words("the cat sat on the", k=5)
    assert [p.word for p in a] == [p.word for p in b]
    assert np.allclose([p.prob for p in a], [p.prob for p in b], rtol=2e-2)


def test_weights_of_another_type_are_refused(model_dir):
    with np.load(model_dir / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["embedding"] = arrays["embedding"].astype(np.int32)
    np.savez(model_dir / "weights.npz", **arrays)
    with pytest.raises(ModelError, match="'embedding' is int32"):
        load_model(model_dir)


def test_saving_in_an_unknown_dtype_is_refused(model_dir, tmp_path):
    manifest, tokenizer, weights = load_model(model_dir)
    with pytest.raises(ModelError, match="float32 or float16"):
        save_model(tmp_path / "other", manifest, tokenizer, weights, dtype="int8")
    assert not (tmp_path / "other").exists()
