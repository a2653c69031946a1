"""Shared fixtures: a tiny model directory made with NumPy alone (no TensorFlow), so
tests of the predictor, the bot and the REPL run in milliseconds."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from wordbot.artifacts import expected_shapes
from wordbot.corpus import read_messages
from wordbot.saving import save_model
from wordbot.text import Tokenizer, tokenize

ROOT = Path(__file__).resolve().parent.parent
TRAIN_FILE = ROOT / "data" / "corpus" / "fortunes-train.txt"


def make_model_dir(
    directory: Path,
    cell: str = "simple_rnn",
    units: int = 24,
    embedding_dim: int = 16,
    seed: int = 0,
    members: int = 1,
    dtype: str = "float32",
    format_version: int | None = None,
) -> Path:
    """A random-weight model whose output bias is the log unigram frequency, so its
    suggestions are frequent real words rather than noise (`members` > 1: an ensemble
    of such networks; `format_version` 1: weights.npz as older wordbots wrote it)."""
    messages = read_messages(TRAIN_FILE)[:1500]
    tokenizer = Tokenizer.build(messages, max_size=800, min_count=2)
    counts = Counter(t for m in messages for t in tokenize(m))
    architecture = {
        "cell": cell,
        "layers": 1,
        "units": units,
        "embedding_dim": embedding_dim,
        "projection": embedding_dim if units != embedding_dim else None,
        "tied": True,
    } | ({"members": members} if members > 1 else {})
    rng = np.random.default_rng(seed)
    weights = {
        name: rng.normal(0, 0.3, shape).astype(np.float32)
        for name, shape in expected_shapes(architecture, len(tokenizer)).items()
    }
    freq = np.array([counts.get(t, 0) + 1 for t in tokenizer.vocab], dtype=np.float64)
    freq[tokenizer.index["</s>"]] = len(messages)
    for name in weights:
        if name.endswith("output/bias"):
            weights[name] = np.log(freq / freq.sum()).astype(np.float32)
    manifest = {
        "architecture": architecture,
        "corpus": {
            "files": [{"path": str(TRAIN_FILE), "sha256": "", "bytes": 0}],
            "format": "lines",
            "validation_fraction": 0.0,
            "split_seed": 0,
        },
        "config": {"cell": cell, "units": units, "embedding_dim": embedding_dim, "seq_len": 16},
        "metrics": {"validation_perplexity": 999.0},
    }
    version = {} if format_version is None else {"format_version": format_version}
    return save_model(directory, manifest, tokenizer, weights, dtype=dtype, **version)


def served_mix_dir(root: Path, cell: str = "simple_rnn", members: int = 1) -> Path:
    """A tiny model served as the mix, its n-gram counted on the 1,500 messages its
    vocabulary came from (so the served vocabulary is open: words past the network's)."""
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(read_messages(TRAIN_FILE)[:1500]) + "\n", encoding="utf-8")
    directory = make_model_dir(root / "model", cell=cell, members=members)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["corpus"]["files"] = [{"path": str(corpus), "sha256": ""}]
    manifest["mix"] = {"order": 4, "ngram_weight_by_order": {"1": 0.2, "2": 0.3, "3": 0.4, "4": 0.5}}
    manifest["serving"] = {"backend": "mix"}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """Counted n-grams go to a directory of the test run's own, never ~/.cache
    (subprocesses inherit it)."""
    previous = os.environ.get("WORDBOT_CACHE_DIR")
    os.environ["WORDBOT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["WORDBOT_CACHE_DIR"])
    if previous is None:
        del os.environ["WORDBOT_CACHE_DIR"]
    else:
        os.environ["WORDBOT_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory, monkeypatch):
    """What a face remembers (the REPL's history, the bot's store and journal) goes to a
    directory of the test's own, never ~/.local/state nor another test's (subprocesses
    inherit it); a test that wants another sets its own."""
    monkeypatch.setenv("WORDBOT_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def tiny_predictor(tiny_model_dir):
    from wordbot.predictor import Predictor

    return Predictor.load(tiny_model_dir)


@pytest.fixture(scope="session")
def mix_model_dir(tmp_path_factory) -> Path:
    """The tiny model served as a mix with a Kneser-Ney n-gram (`served_mix_dir`): a predictor
    that holds an n-gram, so its memory's weight is the learned one, not the fixed fallback.
    Built once per session (its n-gram is counted at the first load, then cached)."""
    return served_mix_dir(tmp_path_factory.mktemp("mix"))


@pytest.fixture
def mix_predictor(mix_model_dir):
    from wordbot.predictor import Predictor

    return Predictor.load(mix_model_dir)


@pytest_asyncio.fixture
async def server(monkeypatch: pytest.MonkeyPatch):
    """The fake Discord server on 127.0.0.1, with discord.py pointed at it. Whatever the test
    did, nothing the bot sent could ping anyone: answers, refusals, apologies, help, slash
    command responses alike."""
    from wordbot.testing.fake_discord import FakeDiscord

    fake = FakeDiscord()
    await fake.start()
    fake.point_client_here(monkeypatch)
    yield fake
    await fake.close()
    for posted in fake.posted:
        mentions = posted.payload.get("allowed_mentions")
        assert mentions is not None and mentions["parse"] == [], posted.payload
        assert not mentions.get("replied_user"), posted.payload
