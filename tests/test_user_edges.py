"""Rough edges met by using the commands as their users do (a person at a terminal, a
shell script, someone trying options), each pinned down through the real command: the
CLI's `main`, `python -m wordbot` in a pipe, or the REPL in a pseudo-terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wordbot.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "WORDBOT_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT), **extra}


# ---- wordbot continue: which option is wrong ----


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "-1"], "need --words >= 0, not -1"),
        (["--temperature", "-1"], "need finite --temperature >= 0, not -1"),
        (["--temperature", "nan"], "need finite --temperature >= 0, not nan"),
        (["--top-p", "0"], "need 0 < --top-p <= 1, not 0"),
        (["--top-p", "1.5"], "need 0 < --top-p <= 1, not 1.5"),
        (["--top-k", "-2"], "need --top-k >= 0 (0: no limit), not -2"),
        (["--seed", "-5"], "need --seed >= 0, not -5"),
    ],
)
def test_continue_names_the_one_option_that_is_out_of_range_and_its_value(tiny_model_dir, args, message, capsys):
    # It used to print every rule at once ("need --words >= 0, finite --temperature >= 0,
    # 0 < --top-p <= 1, ...") whichever option was wrong, leaving the user to guess.
    assert main(["continue", "hi", *args, "--model", str(tiny_model_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"wordbot: error: {message}\n"


def test_continue_help_says_what_top_k_0_means(capsys):
    with pytest.raises(SystemExit):
        main(["continue", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--top-k TOP_K sample among the k likeliest tokens; 0: no limit (default 40)" in help_text


# ---- the REPL in a pipe: why it learns nothing ----


def test_learned_in_a_pipe_says_piped_lines_are_not_learned_rather_than_blaming_no_learn(tiny_model_dir, tmp_path):
    command = [sys.executable, "-m", "wordbot", "repl", "--model", str(tiny_model_dir)]
    piped = subprocess.run(command, input=":learned\n", capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert "learning is off (lines read from a pipe are never learned)" in piped.stdout
    assert "--no-learn" not in piped.stdout  # the user never gave it
    told = subprocess.run(
        [*command, "--no-learn"], input=":learned\n", capture_output=True, text=True, env=_env(tmp_path), timeout=60
    )
    assert "learning is off (--no-learn)" in told.stdout
