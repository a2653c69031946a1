"""A Debian package's plain-text document as a community's history: one paragraph per
line, cut into a part to learn and a later part to score (`wordbot eval --learn-from`).

    apt-get download jargon-text debian-faq && for d in *.deb; do dpkg -x $d pkg; done
    python benchmarks/package_text.py pkg/usr/share/doc/jargon-text/jargon.txt.gz \\
        --between Glossary "Appendix A" --learn 0:1000 --score 1000:1300 --out /tmp/jargon
    python benchmarks/package_text.py pkg/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz \\
        --learn 0:60% --score 60%:100% --out /tmp/faq

writes OUT-learn.txt and OUT-score.txt and prints their sizes and sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
from pathlib import Path

MIN_WORDS = 8  # shorter paragraphs are headings, list stubs and page furniture


def paragraphs(path: str, between: tuple[str, str] | None = None) -> list[str]:
    """The document's paragraphs (blank-line separated, joined to one line), from the
    last line that is exactly `between[0]` to the last line starting with `between[1]`."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().replace("\xa0", " ").splitlines()
    if between:
        start = max(i for i, line in enumerate(lines) if line.strip() == between[0])
        end = max(i for i, line in enumerate(lines) if line.startswith(between[1]))
        lines = lines[start:end]
    out, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(" ".join(current).replace("{", "").replace("}", ""))
            current = []
    return [p for p in out if len(p.split()) >= MIN_WORDS and not re.search("[│┌└├─]", p)]


def cut(items: list[str], spec: str) -> list[str]:
    """`items[a:b]` for "a:b"; "a%:b%" cuts by share of the paragraphs."""
    a, b = spec.split(":")

    def at(x: str) -> int:
        return round(len(items) * float(x[:-1]) / 100) if x.endswith("%") else int(x)

    return items[at(a) : at(b)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("document", help="a .txt.gz from a Debian package")
    parser.add_argument("--between", nargs=2, metavar=("FIRST", "LAST"), help="only this part of the document")
    parser.add_argument("--learn", required=True, help="paragraphs to learn, a:b or a%%:b%%")
    parser.add_argument("--score", required=True, help="paragraphs to score, a:b or a%%:b%%")
    parser.add_argument("--out", required=True, help="write OUT-learn.txt and OUT-score.txt")
    args = parser.parse_args()
    found = paragraphs(args.document, tuple(args.between) if args.between else None)
    for part, spec in (("learn", args.learn), ("score", args.score)):
        path = Path(f"{args.out}-{part}.txt")
        data = ("\n".join(cut(found, spec)) + "\n").encode("utf-8")
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()[:16]
        print(f"{path}: {len(cut(found, spec))} paragraphs, {len(data):,} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
