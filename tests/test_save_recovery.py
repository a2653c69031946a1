"""A save of a model directory killed between any two of its steps is recovered: the
next load or save finishes or undoes it, never while a save is still running, and
never by writing where it may not (it then loads what stands for the model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from wordbot.artifacts import load_model
from wordbot.locks import LockHeld, locked
from wordbot.saving import recover_interrupted_save, save_model

from .conftest import ROOT, make_model_dir
from .unprivileged import run_unprivileged, skip_reason

STEPS = ["locked", "weights", "files", "manifest", "moved-aside", "renamed", "cleaned"]

# Saves the model at argv[1] again with notes "new", SIGKILLed right after step argv[2].
KILLED_SAVE = """
import os, signal, sys
from wordbot import artifacts, saving
path, step = sys.argv[1], sys.argv[2]
manifest, tokenizer, weights = artifacts.load_model(path)
manifest["notes"] = "new"
def hook(name):
    if name == step:
        os.kill(os.getpid(), signal.SIGKILL)
saving._save_step = hook
saving.save_model(path, manifest, tokenizer, weights)
"""


def _kill_a_save(model_dir, step: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(model_dir), step], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL


def _debris(parent) -> list[str]:
    return sorted(p for p in os.listdir(parent) if p.startswith("."))


def _notes(manifest) -> str:
    return manifest.get("notes", "old")


@pytest.fixture
def model_dir(tmp_path):
    return make_model_dir(tmp_path / "m")


@pytest.mark.parametrize("step", STEPS)
def test_a_save_killed_after_any_step_is_recovered_by_the_next_load(model_dir, step):
    _kill_a_save(model_dir, step)
    manifest, tokenizer, weights = load_model(model_dir)
    # Whole: the old model, or the new one once the old was moved aside for it (finished, not undone).
    assert _notes(manifest) == ("new" if STEPS.index(step) >= STEPS.index("moved-aside") else "old")
    assert _debris(model_dir.parent) == []  # finished or undone, nothing left aside
    manifest["notes"] = "again"
    save_model(model_dir, manifest, tokenizer, weights)
    assert load_model(model_dir)[0]["notes"] == "again" and _debris(model_dir.parent) == []


@pytest.mark.parametrize("step", ["moved-aside", "manifest"])
def test_a_save_killed_midway_is_recovered_by_the_next_save(model_dir, step):
    _kill_a_save(model_dir, step)
    manifest, tokenizer, weights = load_model(recover_interrupted_save(model_dir))
    manifest["notes"] = "next"
    save_model(model_dir, manifest, tokenizer, weights)
    assert load_model(model_dir)[0]["notes"] == "next" and _debris(model_dir.parent) == []


def test_a_save_still_running_is_not_raced(model_dir):
    """While the lock is held (a save under way), a load touches nothing and reads what
    stands for the model: here, between the two renames, the set-aside old copy."""
    _kill_a_save(model_dir, "moved-aside")
    before = _debris(model_dir.parent)
    assert not model_dir.exists() and any(".m.old-" in name for name in before)
    with locked(model_dir.parent / ".m.lock"):
        stand_in = recover_interrupted_save(model_dir)
        assert stand_in != model_dir and ".m.tmp-" in stand_in.name  # the whole new copy
        manifest = load_model(model_dir)[0]
        assert _notes(manifest) == "new"
        assert _debris(model_dir.parent) == before and not model_dir.exists()
    assert _notes(load_model(model_dir)[0]) == "new" and _debris(model_dir.parent) == []


def test_a_read_only_directory_is_loaded_from_what_the_killed_save_left(model_dir):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    _kill_a_save(model_dir, "weights")  # the new copy incomplete: the old one stands
    os.replace(model_dir, model_dir.parent / ".m.old-1")  # and the model itself set aside
    before = _debris(model_dir.parent)
    os.chmod(model_dir.parent, 0o555)
    try:
        code = "import sys; from wordbot.artifacts import load_model; print(load_model(sys.argv[1])[0]['vocab_size'])"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = run_unprivileged([sys.executable, "-c", code, str(model_dir)], env=env)
        assert proc.returncode == 0, proc.stderr
        assert (
            int(proc.stdout) == json.loads((model_dir.parent / ".m.old-1" / "manifest.json").read_text())["vocab_size"]
        )
        assert _debris(model_dir.parent) == before  # nothing written
    finally:
        os.chmod(model_dir.parent, 0o755)


def test_a_save_waits_for_a_running_save_and_says_who_holds_a_lock(tmp_path):
    lock = tmp_path / "x.lock"
    with locked(lock):
        with pytest.raises(LockHeld) as held, locked(lock, wait=False):
            pass
        assert held.value.pid == os.getpid()
