"""The wheel: built offline from a copy of the checkout, installed into a folder of its
own, it holds every module of the package (subpackages found automatically) and the
bundled model, and works from there with the checkout nowhere on the path."""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Run inside the installed copy: import every module found there (walking the installed
# package, not the checkout), then load the bundled model and answer. Every file opened is
# recorded, so a model or corpus read from anywhere but the installed copy shows.
PROBE = """
import json, pkgutil, sys
opened = []
sys.addaudithook(lambda event, args: event == "open" and isinstance(args[0], str) and opened.append(args[0]))
import wordbot
modules = ["wordbot"]
def fail(name):
    raise ImportError(f"could not import {name}")
for info in pkgutil.walk_packages(wordbot.__path__, "wordbot.", onerror=fail):
    if info.name.endswith(".__main__"):
        continue  # running it is `python -m wordbot`, not an import
    __import__(info.name)
    modules.append(info.name)
files = {name: sys.modules[name].__file__ for name in modules}
from wordbot import Predictor, Prediction
predictor = Predictor.load()
words = predictor.next_words("the meaning of", k=3)
assert all(isinstance(p, Prediction) for p in words)
from wordbot.cli import main
with open(sys.argv[2], "w") as out:
    sys.stdout = out
    status = main(["next", "--json", "the meaning of"])
sys.stdout = sys.__stdout__
model = [path for path in opened if path.endswith(("manifest.json", "tokenizer.json", ".json.gz"))
         or (path.endswith(".npy") and "/weights." in path)]
json.dump({"files": files, "backend": predictor.backend, "words": [p.word for p in words],
           "status": status, "model_files": model}, open(sys.argv[1], "w"))
"""


def source_modules() -> set[str]:
    """Every module of the package in the checkout (what the wheel must carry)."""
    names = {"wordbot"}
    for info in pkgutil.walk_packages([str(ROOT / "wordbot")], "wordbot."):
        if not info.name.endswith(".__main__"):
            names.add(info.name)
    return names


def build_wheel(tmp_path: Path) -> Path:
    try:
        if int(version("setuptools").split(".")[0]) < 77:
            pytest.skip("needs setuptools >= 77 (pip install -e '.[dev]' installs it)")
    except PackageNotFoundError:
        pytest.skip("needs setuptools >= 77 (pip install -e '.[dev]' installs it)")
    # Built from a copy, so the build leaves nothing behind in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.partial", "*.egg-info")
    for name in ("wordbot", "data"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    if built.returncode != 0 and "No module named pip" in built.stderr:
        pytest.skip("pip is not available to build a wheel")
    assert built.returncode == 0, built.stderr[-2000:]
    assert "would be ignored" not in built.stdout + built.stderr  # every data folder is declared
    (wheel,) = tmp_path.glob("wordbot-*.whl")
    return wheel


@pytest.mark.slow
def test_the_installed_wheel_holds_every_module_and_the_bundled_model(tmp_path):
    """`pip install .` (not only `pip install -e .`) must give a working wordbot: every
    module of the checkout, the default model and the corpus its n-gram is counted from."""
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    bundled = {Path(name).name for name in names if name.startswith("wordbot/_data/models/default/")}
    assert {"manifest.json", "weights.embedding.npy", "tokenizer.json", "training-text.json.gz"} <= bundled
    assert "wordbot/_data/train-default.toml" in names

    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]

    # Outside the checkout, with only the installed copy on PYTHONPATH and a fresh n-gram
    # cache (so the n-gram is counted from the installed copy's text, not read back).
    env = {**os.environ, "PYTHONPATH": str(site), "WORDBOT_CACHE_DIR": str(tmp_path / "cache")}
    report, answer = tmp_path / "report.json", tmp_path / "answer.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), str(answer)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())

    assert set(result["files"]) == source_modules()
    elsewhere = {name: path for name, path in result["files"].items() if not path.startswith(str(site))}
    assert elsewhere == {}
    assert result["model_files"] and all(path.startswith(str(site)) for path in result["model_files"])
    assert result["backend"] == "mix"  # the corpus the n-gram is counted from came along
    assert len(result["words"]) == 3
    assert result["status"] == 0 and len(json.loads(answer.read_text())) >= 3
