"""The README and docs/: every relative link leads somewhere, every `#anchor` names a
heading that is there (by GitHub's rules), every doc is reachable from the README, and
the README stays a page a newcomer reads in five minutes."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_BUDGET = 9216  # bytes: the whole README, quick start first, details in docs/

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the target ends at whitespace (a title may follow) or `)`.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(CODE_SPAN.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").lower()
    kept = (
        ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM" or unicodedata.category(ch) == "Pc"
    )
    return "".join(kept).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub makes for the page's headings (a repeated one gets -1, -2, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """What is wrong with the page's relative links, one line each (none: an empty list)."""
    problems = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # https:, mailto: and the like are not ours to check offline
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            if not destination.exists():
                problems.append(f"{page.name}: {target}: no such file {destination}")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                problems.append(f"{page.name}: {target}: no heading #{anchor} in {destination.name}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_leads_somewhere(page):
    assert broken_links(page) == []


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    """The check itself: a missing file and a missing heading are reported; good ones are not."""
    (tmp_path / "other.md").write_text("# Other page\n\n## What's new: `wordbot next`?\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Quick start\n\n"
        "[good](other.md) [good anchor](other.md#whats-new-wordbot-next) [here](#quick-start)\n"
        "[web](https://example.com/nothing) `[in code](missing.md)`\n"
        "```\n[in a fence](missing-too.md)\n```\n"
        "[gone](missing.md) [wrong anchor](other.md#whats-old) [wrong here](#quick-stop)\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert "missing.md" in problems[0]
    assert "#whats-old" in problems[1] and "#quick-stop" in problems[2]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Quick start", "quick-start"),
        ("How the default's settings were chosen", "how-the-defaults-settings-were-chosen"),
        (
            "Training throughput: `python benchmarks/bench_training.py`",
            "training-throughput-python-benchmarksbench_trainingpy",
        ),
        ("The REPL", "the-repl"),
        ("REPL: per-keystroke latency and cold start", "repl-per-keystroke-latency-and-cold-start"),
    ],
)
def test_anchors_follow_githubs_rules(heading, anchor):
    assert slug(heading) == anchor


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Figures\n\n## Figures\n\n### Figures\n", encoding="utf-8")
    assert anchors(page) == {"figures", "figures-1", "figures-2"}


def test_the_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(readme)}
    docs = sorted((ROOT / "docs").glob("*.md"))
    assert docs, "docs/ holds the details the README leaves out"
    assert [doc.name for doc in docs if doc.resolve() not in linked] == []


def test_the_readme_is_short_and_starts_with_the_quick_start():
    readme = (ROOT / "README.md").read_bytes()
    assert len(readme) <= README_BUDGET
    sections = [line for line in readme.decode("utf-8").splitlines() if line.startswith("## ")]
    assert sections[0] == "## Quick start"
