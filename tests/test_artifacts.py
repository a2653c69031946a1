from __future__ import annotations

import json
import mmap
import os
import time

import numpy as np
import pytest

from wordbot.artifacts import FORMAT_VERSION, load_model, weight_file
from wordbot.errors import ModelError
from wordbot.predictor import Predictor
from wordbot.saving import save_model

from .conftest import make_model_dir


@pytest.fixture
def model_dir(tmp_path):
    return make_model_dir(tmp_path / "m")


@pytest.fixture
def v1_dir(tmp_path):
    """A directory as wordbot wrote them before format version 2: weights.npz."""
    return make_model_dir(tmp_path / "v1", format_version=1)


def _npy(d, name="embedding"):
    return d / weight_file(name)


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
        (lambda d: _npy(d).unlink(), "weights.embedding.npy is missing"),
        (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "manifest.json: unreadable"),
        (lambda d: _npy(d).write_bytes(b"garbage"), "weights.embedding.npy: not a weights file"),
        (lambda d: _npy(d).write_bytes(_npy(d).read_bytes()[:1000]), "weights.embedding.npy: .* damaged or truncated"),
        (lambda d: _npy(d).write_bytes(_npy(d).read_bytes() + b"\0" * 4), "weights.embedding.npy: .* damaged"),
        (
            lambda d: _npy(d, "rnn0/kernel").write_bytes(_npy(d, "rnn0/kernel").read_bytes()[:80]),
            "damaged or truncated",
        ),
        (lambda d: _edit_manifest(d, format_version=99), "format version 99.*upgrade wordbot"),
        (lambda d: _edit_manifest(d, format_version="2"), "format version '2'; this wordbot reads versions 1 and 2"),
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
            "weights.member1.embedding.npy is missing",
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


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: (d / "weights.npz").unlink(), "weights.npz is missing"),
        (lambda d: (d / "weights.npz").write_bytes(b"garbage"), "weights.npz: not a weights archive"),
        (
            lambda d: (d / "weights.npz").write_bytes((d / "weights.npz").read_bytes()[:1000]),
            "weights.npz: .* damaged or truncated",
        ),
    ],
)
def test_a_broken_version_1_directory_gives_a_clear_error(v1_dir, breakage, message):
    breakage(v1_dir)
    with pytest.raises(ModelError, match=message):
        Predictor.load(v1_dir)


def _rewrite_npz(d, change) -> None:
    with np.load(d / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(d / "weights.npz", **arrays)


def test_a_missing_array_is_named(v1_dir):
    _rewrite_npz(v1_dir, lambda arrays: arrays.pop("rnn0/recurrent_kernel"))
    with pytest.raises(ModelError, match="'rnn0/recurrent_kernel' is missing"):
        load_model(v1_dir)


def test_a_mismatched_array_shape_is_named(model_dir, v1_dir):
    _rewrite_npz(v1_dir, lambda arrays: arrays.update(embedding=arrays["embedding"][:, :8]))
    with pytest.raises(ModelError, match="'embedding' has shape"):
        load_model(v1_dir)
    np.save(_npy(model_dir), np.load(_npy(model_dir))[:, :8])
    with pytest.raises(ModelError, match=r"weights.embedding.npy has shape \(\d+, 8\), the manifest implies"):
        load_model(model_dir)


def test_a_version_1_directory_loads_and_answers_as_its_version_2_copy(v1_dir, tmp_path):
    """The same weights saved in both formats give the same served probabilities
    (network alone and the mix), and the version-2 copy has no weights.npz."""
    manifest, tokenizer, weights = load_model(v1_dir)
    assert manifest["format_version"] == 1
    v2_dir = save_model(tmp_path / "v2", manifest, tokenizer, weights)
    assert json.loads((v2_dir / "manifest.json").read_text())["format_version"] == FORMAT_VERSION == 2
    assert not (v2_dir / "weights.npz").exists() and _npy(v2_dir).is_file()
    for backend in ("rnn", "mix"):
        old, new = Predictor.load(v1_dir, backend=backend), Predictor.load(v2_dir, backend=backend)
        for text in ("", "the cat sat on the", "what is the meaning of life ?"):
            tokens = text.split()
            assert np.abs(old.probs_after(tokens) - new.probs_after(tokens)).max() <= 1e-9


def _mapped(array: np.ndarray) -> bool:
    """Whether `array`'s memory is a file mapping (somewhere down its chain of bases)."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base is not None


def test_version_2_float32_arrays_are_memory_mapped_not_copied(tmp_path):
    directory = make_model_dir(tmp_path / "m", embedding_dim=32)  # an embedding of 800 x 32 floats: 100 KB
    _, _, weights = load_model(directory)
    big = {name: a for name, a in weights.items() if a.nbytes >= 1 << 16}
    assert "embedding" in big
    assert all(_mapped(a) and not a.flags.writeable for a in big.values())
    assert np.array_equal(weights["embedding"], np.load(_npy(directory)))
    _, _, old = load_model(make_model_dir(tmp_path / "v1", embedding_dim=32, format_version=1))
    assert np.array_equal(old["embedding"], weights["embedding"])


def test_a_missing_directory_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        Predictor.load(tmp_path / "nope")


def test_an_interrupted_save_leaves_the_old_model_intact(model_dir, monkeypatch):
    before = _npy(model_dir).read_bytes()
    manifest, tokenizer, weights = load_model(model_dir)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the new weights were written

    monkeypatch.setattr(np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(model_dir, manifest, tokenizer, weights)
    assert _npy(model_dir).read_bytes() == before
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
    assert _npy(half).stat().st_size < 0.6 * _npy(full).stat().st_size
    manifest, _, weights = load_model(half)
    assert manifest["weights_dtype"] == "float16"
    assert all(w.dtype == np.float32 for w in weights.values())  # the engine computes in float32
    a = Predictor.load(full, backend="rnn").next_words("the cat sat on the", k=5)
    b = Predictor.load(half, backend="rnn").next_words("the cat sat on the", k=5)
    assert [p.word for p in a] == [p.word for p in b]
    assert np.allclose([p.prob for p in a], [p.prob for p in b], rtol=2e-2)


def test_every_float16_value_converts_to_the_float32_numpys_cast_gives():
    """The fast conversion (bit arithmetic) against NumPy's own cast over all 65,536
    float16 bit patterns: zeros of both signs, subnormals, the largest values, and the
    non-finite ones, which it reports (and writes as the cast does)."""
    from wordbot.bounded import half_to_single

    bits = np.arange(-(1 << 15), 1 << 15, dtype=np.int32).astype(np.int16)
    expected = bits.view(np.float16).astype(np.float32)
    finite = np.isfinite(expected)
    converted = np.full(finite.sum(), 7.0, dtype=np.float32)
    assert half_to_single(bits[finite], converted) is True
    assert np.array_equal(converted.view(np.uint32), expected[finite].view(np.uint32))
    out = np.full(len(bits), 7.0, dtype=np.float32)
    assert half_to_single(bits, out) is False
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_float16_and_float32_weights_load_exactly_as_stored(tmp_path, dtype):
    directory = make_model_dir(tmp_path / dtype, dtype=dtype, members=2, units=16, embedding_dim=16)
    weights = load_model(directory)[2]
    for name, array in weights.items():
        stored = np.load(directory / weight_file(name))
        assert stored.dtype == dtype
        assert np.array_equal(array.view(np.uint32), stored.astype(np.float32).view(np.uint32)), name


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_weights_holding_nan_or_infinity_are_refused(tmp_path, dtype, bad):
    directory = make_model_dir(tmp_path / "m", dtype=dtype, members=2, units=16, embedding_dim=16)
    path = directory / weight_file("member1/embedding")
    array = np.load(path)
    array[3, 5] = bad
    np.save(path, array)
    with pytest.raises(ModelError, match=r"weights\.member1\.embedding\.npy: holds NaN or infinite values"):
        load_model(directory)


def _bits(weights):
    return {name: array.view(np.uint32).tobytes() for name, array in weights.items()}


def test_float16_weights_are_converted_once_then_mapped_from_the_cache(tmp_path, monkeypatch):
    """The second start maps the float32 copy the first one kept: the same bits,
    read-only pages of a file, an ensemble's arrays still rows of one array (no copy
    when the engine stacks them), the same answers."""
    from wordbot.engine import _stack

    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))
    directory = make_model_dir(tmp_path / "m", dtype="float16", members=2)
    first = load_model(directory)[2]
    assert first["embedding"].flags.writeable  # converted
    (kept,) = (tmp_path / "cache").glob("weights-*.npy")
    second = load_model(directory)[2]
    assert _bits(second) == _bits(first)
    assert all(not a.flags.writeable and not a.flags.owndata for a in second.values())
    stacked = second["rnn0/kernel"].base
    assert _stack([second["rnn0/kernel"], second["member1/rnn0/kernel"]]) is stacked
    a = Predictor.load(directory, backend="rnn").next_words("the cat sat on the", k=5)
    kept.unlink()
    b = Predictor.load(directory, backend="rnn").next_words("the cat sat on the", k=5)
    assert a == b


def test_a_changed_weight_file_is_read_again_not_taken_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))
    directory = make_model_dir(tmp_path / "m", dtype="float16")
    load_model(directory)
    embedding = np.load(_npy(directory))
    np.save(_npy(directory), (embedding * 2).astype(np.float16))
    assert np.array_equal(load_model(directory)[2]["embedding"], 2 * embedding.astype(np.float32))
    embedding[0, 0] = np.inf
    np.save(_npy(directory), embedding)
    with pytest.raises(ModelError, match="holds NaN or infinite values"):
        load_model(directory)


def test_a_weight_file_rewritten_in_place_with_its_old_time_is_not_served_from_the_cache(tmp_path, monkeypatch):
    """Same inode, same size, the modification time set back: the change time still moved."""
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))
    directory = make_model_dir(tmp_path / "m", dtype="float16")
    load_model(directory)
    path = _npy(directory)
    before = path.stat()
    embedding = np.load(path)
    time.sleep(0.01)  # a change time the file system can tell apart
    with open(path, "r+b") as f:  # in place: same inode, same size
        np.save(f, (embedding * 2).astype(np.float16))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert np.array_equal(load_model(directory)[2]["embedding"], 2 * embedding.astype(np.float32))


@pytest.mark.parametrize("damage", ["truncated", "another type", "not an array"])
def test_a_damaged_weights_cache_is_converted_again_and_replaced(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))
    directory = make_model_dir(tmp_path / "m", dtype="float16")
    expected = _bits(load_model(directory)[2])
    (kept,) = (tmp_path / "cache").glob("weights-*.npy")
    size = kept.stat().st_size
    if damage == "truncated":
        os.truncate(kept, size - 4)
    elif damage == "another type":
        np.save(kept, np.zeros((size - 128) // 4, dtype=np.int32))
    else:
        kept.write_bytes(b"not an array")
    assert _bits(load_model(directory)[2]) == expected
    assert kept.stat().st_size == size


def test_the_weights_cache_keeps_the_most_recently_used_copies(tmp_path, monkeypatch):
    from wordbot.ngram_cache import CACHE_KEEP

    cache = tmp_path / "cache"
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(cache))
    directory = make_model_dir(tmp_path / "m", dtype="float16")
    load_model(directory)
    (kept,) = cache.glob("weights-*.npy")
    os.utime(kept, (1, 1))  # written long ago...
    others = [cache / f"weights-{i:032d}.npy" for i in range(CACHE_KEEP)]
    for i, other in enumerate(others):
        other.write_bytes(b"")
        os.utime(other, (1000 + i, 1000 + i))  # others[0] the oldest
    load_model(directory)  # ...and used now
    np.save(_npy(directory), np.load(_npy(directory)) * 2)  # another copy to write: the cache is pruned
    load_model(directory)
    assert kept.exists() and not others[0].exists()
    assert len(list(cache.glob("weights-*.npy"))) == CACHE_KEEP


def test_a_weights_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache directory would be")
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))
    directory = make_model_dir(tmp_path / "m", dtype="float16")
    assert _bits(load_model(directory)[2]) == _bits(load_model(directory)[2])


def test_weights_of_another_type_are_refused(model_dir, v1_dir):
    _rewrite_npz(v1_dir, lambda arrays: arrays.update(embedding=arrays["embedding"].astype(np.int32)))
    with pytest.raises(ModelError, match="'embedding' is int32"):
        load_model(v1_dir)
    np.save(_npy(model_dir), np.load(_npy(model_dir)).astype(np.int32))
    with pytest.raises(ModelError, match=r"weights\.embedding\.npy is int32, expected float32 or float16"):
        load_model(model_dir)


def test_a_pickled_npy_is_refused_without_unpickling(model_dir):
    np.save(_npy(model_dir), np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelError, match=r"weights\.embedding\.npy is object"):
        load_model(model_dir)


def test_a_newer_format_version_is_refused_and_nothing_else_is_read(model_dir):
    _edit_manifest(model_dir, format_version=3)
    _npy(model_dir).write_bytes(b"a newer layout")
    with pytest.raises(ModelError, match="format version 3; this wordbot reads versions 1 and 2; a newer wordbot"):
        load_model(model_dir)


def test_a_weights_file_linked_out_of_the_directory_is_refused(model_dir, tmp_path):
    outside = tmp_path / "elsewhere.npy"
    _npy(model_dir).rename(outside)
    _npy(model_dir).symlink_to(outside)
    with pytest.raises(ModelError, match=r"weights\.embedding\.npy: a link to"):
        load_model(model_dir)


def test_saving_in_an_unknown_dtype_is_refused(model_dir, tmp_path):
    manifest, tokenizer, weights = load_model(model_dir)
    with pytest.raises(ModelError, match="float32 or float16"):
        save_model(tmp_path / "other", manifest, tokenizer, weights, dtype="int8")
    assert not (tmp_path / "other").exists()
