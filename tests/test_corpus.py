from __future__ import annotations

import pytest

from wordbot.corpus import read_corpus, read_messages, split_messages, token_stream, windows
from wordbot.errors import CorpusError
from wordbot.text import BOS_ID, EOS_ID, Tokenizer


def test_lines_and_paragraph_formats(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("one line\n\ntwo\r\nlines here\n", encoding="utf-8")
    assert read_messages(path, "lines") == ["one line", "two", "lines here"]
    assert read_messages(path, "paragraphs") == ["one line", "two lines here"]


def test_invalid_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nbroken \xff here\n")
    with pytest.raises(CorpusError, match=r"bad.txt: not UTF-8 text \(invalid byte at line 2"):
        read_messages(path)


def test_an_empty_or_missing_corpus_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(CorpusError, match="holds no text"):
        read_corpus([tmp_path / "empty.txt"])
    with pytest.raises(CorpusError, match="cannot read corpus"):
        read_corpus([tmp_path / "missing.txt"])


def test_validation_split_is_deterministic_and_disjoint():
    messages = [f"message {i}" for i in range(100)]
    train, val = split_messages(messages, 0.1, seed=3)
    assert (train, val) == split_messages(messages, 0.1, seed=3)
    assert len(val) == 10 and set(train).isdisjoint(val) and len(train) + len(val) == 100
    assert split_messages(messages, 0.1, seed=4)[1] != val


def test_windows_predict_the_next_token_at_every_position():
    tok = Tokenizer.build(["a b c", "d e"], min_count=1)
    stream = token_stream(["a b c", "d e"], tok)
    assert stream[0] == BOS_ID and stream[4] == EOS_ID
    x, y = windows(stream, 3)
    assert x.shape == y.shape == ((len(stream) - 1) // 3, 3)
    assert (x[:, 1:] == y[:, :-1]).all()
    assert (y.ravel() == stream[1 : 1 + y.size]).all()


def test_novel_messages_leave_out_repeated_quotations():
    from wordbot.corpus import novel_messages

    training = ["Time flies like an arrow; fruit flies like a banana, said Groucho Marx."]
    held_out = [
        "TIME flies like an arrow -- fruit flies like a banana!",  # the same eight words in a row
        "Time flies like an arrow, they say.",  # seven: a common phrase, not a repeat
        "Something else entirely.",
    ]
    assert novel_messages(held_out, training) == held_out[1:]
    assert novel_messages(held_out, training, run=4) == held_out[2:]


def test_byte_order_marks_and_windows_line_endings_are_read_as_text(tmp_path):
    """Notepad's "UTF-8 with BOM" and "Unicode" (UTF-16) files are text too."""
    messages = ["héllo world", "second line"]
    (tmp_path / "bom.txt").write_bytes("\ufeffhéllo world\r\nsecond line\r\n".encode())
    (tmp_path / "utf16.txt").write_text("héllo world\r\nsecond line\r\n", encoding="utf-16")
    (tmp_path / "utf16be.txt").write_bytes(b"\xfe\xff" + "héllo world\nsecond line\n".encode("utf-16-be"))
    for name in ("bom.txt", "utf16.txt", "utf16be.txt"):
        assert read_messages(tmp_path / name) == messages, name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("café au lait\n".encode("latin-1"), r"not UTF-8 text .*iconv -f cp1252 -t utf-8"),
        (b"\x7fELF\x02\x01\x00\x00\x00binary", "not text .*NUL bytes"),
        ("hello world\n".encode("utf-16-le"), "UTF-16 without a byte-order mark"),
    ],
)
def test_text_in_another_encoding_is_refused_with_how_to_convert_it(tmp_path, content, message):
    (tmp_path / "x.txt").write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        read_messages(tmp_path / "x.txt")


def test_a_directory_or_a_file_given_twice_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "a.txt").write_text("some text here\n")
    with pytest.raises(CorpusError, match=r"notes is a directory; give the text files in it \(for example notes/"):
        read_corpus(["notes"])
    with pytest.raises(CorpusError, match=r"a\.txt is given twice"):
        read_corpus(["a.txt", "a.txt"])
    with pytest.raises(CorpusError, match=r"notes/\.\./a\.txt \(the same file as a\.txt\) is given twice"):
        read_corpus(["a.txt", "notes/../a.txt"])
