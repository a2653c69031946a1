"""The n-gram's format version 2 (the cache): a directory of .npy files, memory-mapped,
checked at load without reading every page, and refused in one line when a file is not
as it was written."""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from wordbot.errors import ModelError
from wordbot.ngram import KneserNey
from wordbot.ngram_cache import load, load_directory, save_directory
from wordbot.text import BOS_ID, Tokenizer, debris_ids

from .conftest import TRAIN_FILE

MESSAGES = TRAIN_FILE.read_text(encoding="utf-8").splitlines()[:4000]


@pytest.fixture(scope="module")
def counted():
    tokenizer = Tokenizer.build(MESSAGES, max_size=3000, min_count=1)
    return KneserNey.from_texts(MESSAGES, tokenizer, 4)


@pytest.fixture
def saved(counted, tmp_path):
    save_directory(counted, tmp_path / "ngram")
    return tmp_path / "ngram"


def _contexts(ngram: KneserNey) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(0)
    seen = [tuple(ngram.tokenizer.encode(m, bos=True)[-3:]) for m in MESSAGES[:40]]
    unseen = [tuple(int(i) for i in rng.integers(0, ngram.vocab_size, 3)) for _ in range(20)]
    return [(BOS_ID,) * 3, *seen, *unseen]


def _mapped(array: np.ndarray) -> bool:
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base is not None


def test_a_saved_ngram_answers_exactly_as_the_counted_one_from_mapped_tables(counted, saved):
    loaded = KneserNey.load(saved, counted.tokenizer)
    for context in _contexts(counted):
        assert np.array_equal(loaded.probs(context), counted.probs(context))
        assert loaded.context_order(context) == counted.context_order(context)
    big = [a for t in loaded._orders for a in (t.words, t.values, t.starts, t.row_of_context) if a.nbytes >= 1 << 16]
    assert big and all(_mapped(a) and not a.flags.writeable for a in big)


def test_the_version_1_file_and_the_version_2_directory_agree(counted, saved, tmp_path):
    counted.save(tmp_path / "ngram.npz")
    old, new = KneserNey.load(tmp_path / "ngram.npz"), load(saved, counted.tokenizer)
    for context in _contexts(counted):
        assert np.abs(old.probs(context) - new.probs(context)).max() <= 1e-12


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("RssAnon:", "RssFile:")))


def test_loading_reads_a_few_pages_not_the_tables(counted, saved):
    """Validation is O(1) pages a table: the resident memory grows by far less than the
    files hold (a full check would read them all)."""
    size = sum(p.stat().st_size for p in saved.glob("*.npy"))
    assert size > 4 << 20
    before = _rss_kb()
    loaded = load_directory(saved, counted.tokenizer)
    grown = (_rss_kb() - before) * 1024
    assert grown < size / 8, (grown, size)
    assert loaded.order == 4


def _rewrite(name: str, change):
    def rewrite(d):
        path = d / name
        np.save(path, change(np.load(path)))

    return rewrite


def _header(**changes):
    def edit(d):
        header = json.loads((d / "ngram.json").read_text())
        header.update(changes)
        (d / "ngram.json").write_text(json.dumps(header))

    return edit


CHANGES = {
    "a table cut short": (
        lambda d: (d / "o4_words.npy").write_bytes((d / "o4_words.npy").read_bytes()[:500]),
        "truncated",
    ),
    "a file missing": (lambda d: (d / "o2_values.npy").unlink(), "o2_values.npy is missing"),
    "words out of range, same size": (_rewrite("o4_words.npy", lambda a: a + 10**6), "changed since it was written"),
    "rows out of range, same size": (_rewrite("o3_row_of_context.npy", lambda a: a + 10**6), "changed since"),
    "a table of another type": (_rewrite("o3_words.npy", lambda a: a.astype(np.int64)), "is int64, expected int32"),
    "lengths that disagree": (
        lambda d: _rewrite("o3_values.npy", lambda a: a[:-1])(d) or _header(files=_files_now(d))(d),
        "disagree in length",
    ),
    "starts past the words": (
        lambda d: _rewrite("o2_starts.npy", lambda a: a + 1)(d) or _header(files=_files_now(d))(d),
        "o2_starts does not index",
    ),
    "a newer format": (_header(format_version=3), "n-gram format_version 3"),
    "another vocabulary": (_header(vocab_sha256="0" * 64), "vocabulary differs"),
    "discounts not numbers": (_header(discounts="high"), "discounts or files malformed"),
    "order 99": (_header(order=99), "order 99"),
    "header not JSON": (lambda d: (d / "ngram.json").write_text("{"), "ngram.json: unreadable"),
}


def _files_now(d) -> dict:
    """ngram.json's record of the files as they are now (a consistent-looking forgery)."""
    return {p.stem: {"bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in d.glob("*.npy")}


@pytest.mark.parametrize("case", list(CHANGES))
def test_a_changed_cache_is_refused_in_one_line(counted, saved, case):
    change, message = CHANGES[case]
    change(saved)
    with pytest.raises(ModelError, match=message) as error:
        load_directory(saved, counted.tokenizer)
    assert "\n" not in str(error.value) and "ngram" in str(error.value)


def test_writing_refuses_tables_that_would_index_outside(counted, tmp_path):
    broken = KneserNey(
        counted.tokenizer, counted.order, list(counted._orders), counted._context_keys, counted.discounts
    )
    table = broken._orders[2]
    broken._orders[2] = type(table)(table.words + 10**6, table.values, table.starts, table.gamma, table.row_of_context)
    with pytest.raises(ValueError, match="o3_words holds ids outside the vocabulary"):
        save_directory(broken, tmp_path / "x")
    assert not (tmp_path / "x" / "ngram.json").exists()


def test_a_directory_needs_its_tokenizer(saved):
    with pytest.raises(ModelError, match="read with its model's tokenizer"):
        KneserNey.load(saved)
    assert os.path.isdir(saved)


# -- the served vocabulary, cached beside the n-gram ---------------------------------------


def _model(tmp_path, monkeypatch):
    from wordbot.corpus import sha256_of

    from .conftest import make_model_dir

    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))
    directory = make_model_dir(tmp_path / "m")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(MESSAGES[:2000]) + "\n", encoding="utf-8")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["corpus"]["files"] = [{"path": str(corpus), "sha256": sha256_of(corpus)}]  # pinned: a cache key
    (directory / "manifest.json").write_text(json.dumps(manifest))
    from wordbot.artifacts import load_model

    return directory, *load_model(directory)[:2]


def test_the_cached_served_vocabulary_is_the_built_one_sharing_the_networks_words(tmp_path, monkeypatch):
    from wordbot.mix import served_tokenizer

    directory, manifest, network = _model(tmp_path, monkeypatch)
    built = served_tokenizer(manifest, directory, network)
    (path,) = (tmp_path / "cache").glob("vocab-*.json")
    assert json.loads(path.read_text())["extra"] == built.vocab[len(network) :]  # only what it adds
    cached = served_tokenizer(manifest, directory, network)
    assert cached is not built and len(cached) > len(network)
    assert (cached.vocab, cached.cased, cached.word_ids, cached.debris_ids, cached.index) == (
        built.vocab,
        built.cased,
        built.word_ids,
        built.debris_ids,
        built.index,
    )
    assert all(a is b for a, b in zip(cached.vocab, network.vocab, strict=False))
    assert cached.debris_ids == debris_ids(cached.vocab) and cached.debris_ids  # the training text has some
    assert cached.word_ids == Tokenizer(cached.vocab).word_ids  # as matching every token gives


def test_a_served_vocabulary_cache_of_the_older_layout_is_read_and_completed_once(tmp_path, monkeypatch):
    """Version 2 held the extra words' ids only: it is still read (the network's word
    ids and the debris ids matched), and rewritten once with them, which version-2
    readers still read."""
    from wordbot.mix import served_tokenizer

    directory, manifest, network = _model(tmp_path, monkeypatch)
    built = served_tokenizer(manifest, directory, network)
    (path,) = (tmp_path / "cache").glob("vocab-*.json")
    data = json.loads(path.read_text())
    older = {key: data[key] for key in ("extra", "cased", "extra_word_ids")} | {"format_version": 2}
    path.write_text(json.dumps(older))
    again = served_tokenizer(manifest, directory, network)
    assert (again.vocab, again.word_ids, again.debris_ids) == (built.vocab, built.word_ids, built.debris_ids)
    assert json.loads(path.read_text()) == data


def test_cached_word_and_debris_ids_of_another_rule_are_not_used(tmp_path, monkeypatch):
    """A cache written by a wordbot whose rules differ: its ids are matched again, so a
    changed rule never shows debris or hides words."""
    from wordbot.mix import served_tokenizer

    directory, manifest, network = _model(tmp_path, monkeypatch)
    built = served_tokenizer(manifest, directory, network)
    (path,) = (tmp_path / "cache").glob("vocab-*.json")
    data = json.loads(path.read_text())
    data.update(network_word_ids=[4], word_rule="older", debris_ids=[], debris_rule="older")
    path.write_text(json.dumps(data))
    again = served_tokenizer(manifest, directory, network)
    assert (again.word_ids, again.debris_ids) == (built.word_ids, built.debris_ids)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(extra_word_ids=[0, 1, 2]),  # ids of the specials: outside the extra words
        lambda d: d.update(extra_word_ids=[10**9]),
        lambda d: d.update(extra_word_ids=list(reversed(d["extra_word_ids"]))),
        lambda d: d.update(network_word_ids=[2, 5]),  # a special
        lambda d: d.update(network_word_ids="5"),
        lambda d: d.update(debris_ids=[10**9]),
        lambda d: d.update(debris_ids=[[1], [2]]),
        lambda d: d.update(debris_ids=[5, 5]),
        lambda d: d.update(extra=[1, 2]),
        lambda d: d.update(cased={"x": "Y"}),
        lambda d: d.update(cased=[]),
    ],
)
def test_a_damaged_served_vocabulary_cache_is_built_again(tmp_path, monkeypatch, damage):
    from wordbot.mix import served_tokenizer

    directory, manifest, network = _model(tmp_path, monkeypatch)
    built = served_tokenizer(manifest, directory, network)
    (path,) = (tmp_path / "cache").glob("vocab-*.json")
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    again = served_tokenizer(manifest, directory, network)
    assert (again.vocab, again.word_ids, again.debris_ids) == (built.vocab, built.word_ids, built.debris_ids)
    data = json.loads(path.read_text())
    assert data["extra_word_ids"] == [i for i in built.word_ids if i >= len(network)]
    assert (data["network_word_ids"], data["debris_ids"]) == (network.word_ids, built.debris_ids)


def test_an_ensembles_float16_weights_are_stacked_once(tmp_path):
    """load_model converts an ensemble's float16 arrays into one array per name; the
    engine's stacks are those arrays, not copies, and answer as separate copies did."""
    from wordbot.artifacts import load_model
    from wordbot.engine import network

    from .conftest import make_model_dir

    directory = make_model_dir(tmp_path / "m", members=2, dtype="float16")
    manifest, tokenizer, weights = load_model(directory)
    ensemble = network(manifest, tokenizer, weights)
    assert np.shares_memory(ensemble._layers.recurrent[0], weights["member1/rnn0/recurrent_kernel"])
    assert np.shares_memory(ensemble._output_bias, weights["output/bias"])
    copies = network(manifest, tokenizer, {k: v.copy() for k, v in weights.items()})
    assert not np.shares_memory(copies._layers.recurrent[0], weights["rnn0/recurrent_kernel"])
    state, other = ensemble.initial_state(), copies.initial_state()
    for token in tokenizer.encode("the cat sat on the", bos=True):
        state, other = ensemble.advance(state, token), copies.advance(other, token)
    assert np.array_equal(ensemble.probs(state), copies.probs(other))


@pytest.mark.parametrize("xdg", [None, "/somewhere/cache", "relative/cache", ""])
def test_the_cache_directory_is_where_platformdirs_puts_it(monkeypatch, xdg):
    import platformdirs

    from wordbot.ngram_cache import cache_dir

    monkeypatch.delenv("WORDBOT_CACHE_DIR")
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    assert cache_dir() == Path(platformdirs.user_cache_dir("wordbot"))
