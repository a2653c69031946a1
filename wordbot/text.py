"""Tokenizer: normalise text, split it into word and punctuation tokens, map tokens
to ids and back, and join tokens into natural text again.

Pure Python and deterministic: the same text always gives the same tokens, and a
vocabulary built from the same counts is always the same list.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path

from wordbot.debris import debris_ids
from wordbot.debris import is_debris as is_debris  # (re-exported: where it was)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
FORMAT_VERSION = 1

# Curly quotes and their cousins fold to the two ASCII quotes; a fancy apostrophe
# inside "don’t" must become the same token as "don't".
_FOLD = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
     "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
     "\u2013": "--", "\u2014": "--", "\u2026": "..."}
)  # fmt: skip

# Order matters: numbers with separators ("7:30", "3.14", "1,000") before words,
# words with inner apostrophes ("don't", "o'clock") as one token, then the
# multi-character punctuation we keep whole, then any other single symbol.
_TOKEN_RE = re.compile(
    r"""
    \d+(?:[.,:]\d+)+            # 3.14  1,000  7:30
  | [^\W_]+(?:'[^\W_]+)*        # words, digits, don't, o'clock, rock'n'roll
  | \.\.\.|--|[!?]+             # ellipsis, dash, ?! runs
  | [^\w\s]|_                   # any other symbol, emoji included, one at a time
    """,
    re.VERBOSE,
)
# A word still being typed at the end of a text, as the tokenizer reads words: "hel",
# "don'", "o’cl" (either apostrophe), or a number with separators ("3.1", "1,0").
# \Z: "li\n" has no partial word.
_PARTIAL_RE = re.compile(r"(?:\d+(?:[.,:]\d+)+|[^\W_]+(?:['\u2019][^\W_]*)*)\Z")
MAX_PARTIAL_CHARS = 100  # a word being typed is read from at most this many last characters
_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*|\d+(?:[.,:]\d+)+")
WORD_RULE = _WORD_RE.pattern  # what makes a token a word (`is_word`), as caches of word ids record it

# Detokenisation: which tokens hug their left or right neighbour.
_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", "...", ")", "]", "}", "%", "-", "/"}
_NO_SPACE_AFTER = {"(", "[", "{", "$", "#", "-", "/", "@"}
_CLITICS = {"'s", "'t", "'re", "'ll", "'ve", "'d", "'m", "n't"}
_SENTENCE_END = {".", "...", "!", "?"}
_BANGS = re.compile(r"[!?]+")
_QUOTES_AND_PARENS = ('"', "'", "(", ")")  # see through these to tell a sentence start
_SPEECH_INTRO = {":", ","}  # before an opening quote, these start quoted speech: `said, "It`
# Last parts of domain names and file names, after a dot with no space (`example.com`);
# not words that often start a sentence (`it`, `no`, `so`).
_DOMAIN_ENDS = {"com", "org", "net", "edu", "gov", "mil", "io", "uk", "au", "fi", "fr", "jp", "ca", "nl", "se", "ch",
                "html", "htm", "txt", "pdf", "exe"}  # fmt: skip
_FACE_MOUTHS = {")", "(", "p", "d"}  # what follows the eyes (and nose) of :) ;-) :p
_ABBREVIATIONS = {("a", "m"), ("p", "m"), ("i", "e"), ("e", "g"), ("u", "s"), ("u", "k"), ("a", "k"), ("k", "a"),
                  ("a", "d"), ("b", "c"), ("n", "b"), ("o", "k")}  # fmt: skip
_PAIRS = {"*": "*", "_": "_", "<": ">"}  # marks around words: *really*, _title_, <nick>
_SPACING_MARKS = {'"', "'", *_PAIRS, ">"}  # the tokens whose spacing depends on what is open
_OPENERS = {'"', "(", "[", "{", "*", "_", "<"}  # what may follow an opening quote
_NOT_PLURALS = {"is", "was", "has", "this", "his", "its", "us", "as", "yes", "does", "thus", "plus", "says", "less"}
_ELIDED_STARTS = {"cause", "em", "til", "n", "tis", "twas", "round"}  # `'cause`, `'em`: a quote-like start


def normalize(text: str, lower: bool = True) -> str:
    """NFKC, ASCII quotes, control characters to spaces, lowercase (unless `lower` is false)."""
    text = unicodedata.normalize("NFKC", text).translate(_FOLD)
    if not text.isprintable():  # the per-character pass only where it can matter
        text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    return text.lower() if lower else text


class Tokens(list):
    """The tokens of one text, remembering the (normalised) text they were cut from, so
    that `detokenize` can give back the text's own spacing (`foo@bar.com`, `C++`,
    `recipients' exercise`) where it cannot be guessed from the tokens alone.

    It is a plain list of plain strings otherwise: token boundaries, and so what a model
    sees, do not depend on spacing. The spacing is worked out only when text is rebuilt,
    so tokenizing at every keystroke costs no more than before. A slice or an edited
    copy is a plain list (or no longer matches the text) and is rebuilt by rule instead.
    """

    __slots__ = ("source",)

    def __init__(self, tokens: Iterable[str] = (), source: str = ""):
        super().__init__(tokens)
        self.source = source

    def spaces(self) -> list[bool] | None:
        """Whether whitespace preceded each token in the text; None if the list has been
        changed since it was cut from the text (its spacing is unknown then)."""
        matches = list(_TOKEN_RE.finditer(self.source))
        if len(matches) != len(self) or any(m.group() != t for m, t in zip(matches, self, strict=True)):
            return None
        return [m.start() > 0 and self.source[m.start() - 1].isspace() for m in matches]


def tokenize(text: str) -> Tokens:
    """Split text into tokens: `"Don't panic!"` -> `["don't", "panic", "!"]`."""
    normalized = normalize(text)
    return Tokens(_TOKEN_RE.findall(normalized), normalized)


def partial_word(text: str) -> str:
    """The word being typed at the end of `text`, as typed ('' after a space or punctuation)."""
    if not text or text[-1].isspace():
        return ""
    # A partial word holds no whitespace: search only the text's last run of non-space
    # characters (the same answer, without a scan of the whole text at every keystroke),
    # and of that run only its end: the search backtracks, so on a long run such as
    # "1.1.1.…" its cost grows faster than the run (2,000 characters took 0.1 s).
    match = _PARTIAL_RE.search(text.rsplit(None, 1)[-1][-MAX_PARTIAL_CHARS:])
    return match.group() if match else ""


def is_word(token: str) -> bool:
    """True for tokens a user would call words (not punctuation, not specials)."""
    return _WORD_RE.fullmatch(token) is not None


def display_form(token: str, sentence_start: bool = False, cased: Mapping[str, str] | None = None) -> str:
    """The form a user would type: `I`, `I'm`, the usual capitals of a name (`cased`,
    from the training text: `wilde` -> `Wilde`), and a capital at a sentence start."""
    if token == "i" or token.startswith("i'"):
        return "I" + token[1:]
    if cased:
        token = cased.get(token, token)
    if sentence_start and token[:1].isalpha():
        return token[:1].upper() + token[1:]
    return token


def join_text(text: str, continuation: str) -> str:
    """`text` followed by a continuation of it (`Predictor.continue_text`), without the
    doubled space, or the space before punctuation, that whitespace at the end of
    `text` would leave: "hello " + ", I" -> "hello, I"; "hello " + " world" -> "hello world"."""
    return (text.rstrip() if text[-1:].isspace() else text) + continuation


def at_sentence_start(tokens: Sequence[str]) -> bool:
    """Whether the next word begins a sentence: at the start of the text, after . ! ?, or
    at the start of quoted speech introduced by a colon or comma (`He said, "What`)."""
    quote_skipped = False
    for token in reversed(tokens):
        if token in _QUOTES_AND_PARENS:
            quote_skipped = quote_skipped or token == '"'
            continue
        if quote_skipped and token in _SPEECH_INTRO and tokens.count('"') % 2 == 1:
            return True  # the last '"' opens a quotation (an even count would close one)
        return token in _SENTENCE_END or token in (BOS, EOS) or _BANGS.fullmatch(token) is not None
    return True


def detokenize(
    tokens: Iterable[str],
    *,
    capitalize: bool = False,
    after: Sequence[str] = (),
    cased: Mapping[str, str] | None = None,
) -> str:
    """Join tokens into natural text: `hello , world .` -> `hello, world.`

    Tokens from `tokenize` (a `Tokens` list) get back the spacing of the text they were
    cut from; other tokens (a model's samples) are spaced by rule (`_attach_left`).
    `after` is the context the tokens follow (for quote pairing and sentence starts).
    With `capitalize`, `I`, names (`cased`: see `display_form`) and sentence-initial
    words get their capitals back.
    """
    spaces = tokens.spaces() if isinstance(tokens, Tokens) else None
    kept = [(t, s) for t, s in zip(tokens, spaces or itertools.repeat(None), strict=False) if t not in SPECIALS]
    tokens = [t for t, _ in kept]
    out: list[str] = []
    previous = after[-1] if after else None
    open_quote = _open_marks(after)
    sentence_start = at_sentence_start(after)
    for i, (token, spaced) in enumerate(kept):
        ends_sentence = token in _SENTENCE_END or _BANGS.fullmatch(token) is not None
        attach_left = _attach_left(tokens, i, previous, open_quote)
        if spaced is not None and out:
            attach_left = not spaced  # the text's own spacing
        # `wall.org`: a word hugging a full stop is no sentence start.
        starts = sentence_start and not (attach_left and previous in _SENTENCE_END)
        word = display_form(token, starts, cased) if capitalize else token
        out.append(word if attach_left else " " + word)
        if is_word(token):
            sentence_start = False
        elif ends_sentence or (token == '"' and open_quote['"'] and previous in _SPEECH_INTRO):
            sentence_start = True  # a sentence ended, or quoted speech opened (`said, "It`)
        previous = token
    return "".join(out)


def _open_marks(tokens: Sequence[str]) -> dict[str, bool]:
    """Which quotes (and paired marks) are open at the end of `tokens`, read by the same
    rules that space them: the apostrophe of `the dogs'` opens nothing."""
    open_marks = {'"': False, "'": False}
    ahead = [*tokens, "x"]  # what follows the context, as far as these rules look: a word
    previous = None
    for i, token in enumerate(tokens):
        if token in _SPACING_MARKS:
            _attach_left(ahead, i, previous, open_marks)
        previous = token
    return open_marks


def _attach_left(tokens: Sequence[str], i: int, previous: str | None, open_quote: dict[str, bool]) -> bool:
    """Whether tokens[i] hugs what comes before it, when no spacing is known; keeps
    `open_quote` (which quotes are open) up to date."""
    token = tokens[i]
    following = tokens[i + 1] if i + 1 < len(tokens) else None
    after_opening_quote = open_quote.get(previous, False)  # as it stood before this token
    attach = token in _NO_SPACE_BEFORE or token in _CLITICS or _BANGS.fullmatch(token) is not None
    attach = attach or token in _SENTENCE_END
    paired = _pair_mark(tokens, i, open_quote)
    if paired is not None:
        attach = paired
    elif token in open_quote:
        # An opening quote takes a space before it; a closing one hugs the word.
        attach = open_quote[token]
        if not attach and token == "'" and _elides(previous, following):
            return True  # `recipients' exercise`, `razzin' frazzin'`: not a quote at all
        open_quote[token] = not attach
        if not attach and following in (None, "--"):
            # `end." -- Author`: this closes a quotation opened before the text we see
            # (fortunes open with one); a quotation does not open at the end.
            attach, open_quote[token] = True, False
    if previous is None or previous in SPECIALS or previous in _NO_SPACE_AFTER or after_opening_quote:
        attach = True
    return _written_together(tokens, i, previous, attach)


def _pair_mark(tokens: Sequence[str], i: int, open_marks: dict[str, bool]) -> bool | None:
    """For marks that come in pairs around words (`*really*`, `_title_`, `<nick>`): whether
    this one hugs what comes before (a closing one does); None for any other token, or
    for a mark with no partner ahead (`2 * 3`)."""
    token = tokens[i]
    if token == ">" and open_marks.get("<"):
        open_marks["<"] = False
        return True
    if token not in _PAIRS:
        return None
    if token in _PAIRS.values() and open_marks.get(token):
        open_marks[token] = False
        return True
    # A partner a few words ahead, with only words between: `*for the rest of your life*`.
    for j in range(i + 1, min(i + 10, len(tokens))):
        if tokens[j] == _PAIRS[token] and j > i + 1:
            open_marks[token] = True
            return False
        if not is_word(tokens[j]):
            break
    return None


def _elides(previous: str | None, following: str | None) -> bool:
    """A lone apostrophe that is no opening quote: after a plural or a dropped g before a
    word (`dogs' toys`, `razzin' frazzin'`), or before punctuation (`tailor'!`)."""
    if previous is None or not is_word(previous):
        return False
    if not is_word(following or ""):
        return following not in _OPENERS
    return previous.endswith(("s", "in")) and previous not in _NOT_PLURALS and following not in _ELIDED_STARTS


def _written_together(tokens: Sequence[str], i: int, previous: str | None, attach: bool) -> bool:
    """The spacing of things people write without spaces though they are several
    tokens: e-mail addresses, domains, `C++`, `C#`, `a.m.`, emoticons, `<3`."""
    if previous is None:
        return attach
    token = tokens[i]
    following = tokens[i + 1] if i + 1 < len(tokens) else None
    before_previous = tokens[i - 2] if i >= 2 else None
    word_before = is_word(previous)
    if token == "@" and word_before and is_word(following or ""):
        return True  # foo@bar
    if previous == "." and (token in _DOMAIN_ENDS or before_previous == "www") and is_word(before_previous or ""):
        return True  # example.com, www.example
    if previous == "." and (before_previous, token) in _ABBREVIATIONS:
        return True  # a.m., i.e., u.s. (but `G. K. Chesterton`)
    if token == "+" and (previous == "+" or following == "+"):
        return True  # c++
    if token == "#" and previous in ("c", "f"):
        return True  # c#
    if previous == "#" and before_previous in ("c", "f"):
        return False  # `c# is`, not `c#is`
    if _starts_face(tokens, i):
        return False  # an emoticon starts: `ok :-)`
    if i >= 1 and _starts_face(tokens, i - 1):
        return True
    if previous == "(" and any(i >= k and _starts_face(tokens, i - k) for k in (2, 3)):
        return False  # `:( so`, `:-( so`: the mouth is no opening bracket
    if previous == "<" and token == "3":
        return True  # <3
    if token == "(" and following == ")":
        return True  # f()
    return attach


def _starts_face(tokens: Sequence[str], i: int) -> bool:
    """Whether tokens[i] is the eyes of an emoticon: `:)`, `;-)`, `:p`, `:(` (not `see: (1)`)."""
    if tokens[i] not in (":", ";") or i + 1 >= len(tokens):
        return False
    mouth, rest = tokens[i + 1], (tokens[i + 2] if i + 2 < len(tokens) else "")
    if mouth == "-":
        return rest in _FACE_MOUTHS
    if mouth == "(":
        return ")" not in tokens[i + 2 : i + 8]  # `:( and`, but `see: (1)`
    return mouth in _FACE_MOUTHS and not is_word(rest)


class Tokenizer:
    """A vocabulary over `tokenize`: ids 0-3 are the special tokens."""

    def __init__(self, vocab: Sequence[str], cased: Mapping[str, str] | None = None, *,
                 word_ids: Sequence[int] | None = None, debris_ids: Sequence[int] | None = None):  # fmt: skip
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self.vocab: list[str] = list(vocab)
        # How words that are usually capitalised are written (`wilde` -> `Wilde`, `tv` -> `TV`).
        self.cased: dict[str, str] = dict(cased or {})
        self.index: dict[str, int] = dict(zip(self.vocab, range(len(self.vocab)), strict=True))
        if len(self.index) != len(self.vocab):
            raise ValueError("vocabulary has duplicate tokens")
        # `word_ids`, `debris_ids`: as a cache of them says (the caller checks them), which
        # saves matching every token at start; else matched when first asked for.
        if word_ids is not None:
            self.word_ids = list(word_ids)
        if debris_ids is not None:
            self.debris_ids = list(debris_ids)

    @cached_property
    def word_ids(self) -> list[int]:
        """Ids of the tokens a user may be offered as a next word."""
        return [i for i, t in enumerate(self.vocab) if i >= len(SPECIALS) and is_word(t)]

    @cached_property
    def debris_ids(self) -> list[int]:
        """Ids of the chat-log debris tokens (`is_debris`), never offered or written."""
        return debris_ids(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    @classmethod
    def build(cls, texts: Iterable[str], max_size: int = 10_000, min_count: int = 2) -> Tokenizer:
        """Most frequent tokens first, ties broken alphabetically; specials included in max_size."""
        counts: Counter[str] = Counter()
        forms: Counter[tuple[str, str]] = Counter()  # (token, as written) away from sentence starts
        for text in texts:
            cased_text = normalize(text, lower=False)
            tokens = _TOKEN_RE.findall(cased_text.lower())  # = tokenize(text), normalised once
            counts.update(tokens)
            written = _TOKEN_RE.findall(cased_text)
            if [w.lower() for w in written] != tokens:
                continue  # lowercasing changed the tokens (rare scripts): no casing evidence here
            # at_sentence_start(tokens[:j]) kept up as j advances, but for quoted speech:
            # `said, "What` counts as casing evidence, as the bundled tokenizer was built.
            sentence_start = True
            for token, form in zip(tokens, written, strict=True):
                if not sentence_start and form[:1].isalpha():
                    forms[token, form] += 1
                if token not in _QUOTES_AND_PARENS:
                    sentence_start = token in _SENTENCE_END or _BANGS.fullmatch(token) is not None
        for special in SPECIALS:
            counts.pop(special, None)
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        vocab = list(SPECIALS) + ranked[: max(0, max_size - len(SPECIALS))]
        return cls(vocab, _usual_casing(forms, set(vocab)))

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.index.get(t, UNK_ID) for t in tokenize(text)]
        return ([BOS_ID] if bos else []) + ids + ([EOS_ID] if eos else [])

    def encode_tokens(self, tokens: Iterable[str]) -> list[int]:
        return [self.index.get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> str:
        return detokenize(self.vocab[i] for i in ids)

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "normalization": "NFKC, curly quotes folded, control characters removed, lowercase",
            "specials": list(SPECIALS),
            "vocab": self.vocab,
            "cased": self.cased,
        }

    @classmethod
    def from_json(cls, data: dict) -> Tokenizer:
        if not isinstance(data, dict) or "vocab" not in data:
            raise ValueError("not a tokenizer: no 'vocab' list")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"tokenizer format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        vocab = data["vocab"]
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise ValueError("tokenizer 'vocab' must be a list of strings")
        cased = data.get("cased", {})  # absent in tokenizers saved before it existed
        if not isinstance(cased, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.lower() == k for k, v in cased.items()
        ):
            raise ValueError("tokenizer 'cased' must map lowercase words to the same words capitalised")
        return cls(vocab, cased)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """A tokenizer.json (a model directory's is read by wordbot.artifacts, bounded)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except RecursionError:
            raise ValueError(f"{path}: nested too deeply; not a tokenizer") from None
        return cls.from_json(data)


def _usual_casing(forms: Counter[tuple[str, str]], vocab: set[str]) -> dict[str, str]:
    """Words written other than in lowercase in two thirds or more of their (at least
    two) occurrences away from a sentence start, mapped to that form: names, `TV`.
    Words written both ways often (`bill`, `may`) stay lowercase."""
    by_word: dict[str, Counter[str]] = {}
    for (token, form), n in forms.items():
        if token in vocab:
            by_word.setdefault(token, Counter())[form] += n
    cased = {}
    for token, seen in by_word.items():
        total = sum(seen.values())
        form, n = min(seen.items(), key=lambda item: (-item[1], item[0]))
        if form != token and total >= 2 and 3 * n >= 2 * total:
            cased[token] = form
    return dict(sorted(cased.items()))
