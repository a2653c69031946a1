"""Discord text in and out: the bot's reading of raw message text (wordbot/bot/parse.py) and what it sends back
(wordbot/bot/render.py), driven with adversarial text: long whitespace runs, mentions, counts,
control, invisible and bidi characters. Work is checked by counting the steps of the scan, not by
timing; meaning by agreement with the regex the scan replaced, kept here as the reference."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from wordbot.bot.parse import RAW_LIMIT, parse_prompt, split_count, squeeze
from wordbot.bot.render import MAX_OUTPUT_CHARS, fit, format_continuation, format_next
from wordbot.predictor import Prediction

# The trailing-count regex the bot used before the scan: right, but quadratic in a whitespace run.
OLD_TRAILING_COUNT = re.compile(
    r"(?:^|\s+)(?:(?P<key>[a-z]+)=|--?(?P<flag>[a-z]+)(?:=|\s+))?(?P<count>\d{1,4})\s*$", re.IGNORECASE
)
OLD_NAMES = {"k": {"k"}, "words": {"words", "n"}}


def old_split_count(text: str, key: str, *, bare: bool, bare_max: int = 100, alone: bool = False):
    match = OLD_TRAILING_COUNT.search(text)
    if match is None:
        return text, None
    named = match["key"] or match["flag"]
    if named and named.lower() not in OLD_NAMES.get(key, {key}):
        return text, None
    if not named and (not bare or (match.start() == 0 and not alone) or int(match["count"]) > bare_max):
        return text, None
    return text[: match.start()], int(match["count"])


MENTION, ROLE = "<@123456789012345678>", "<@&345678901234567890>"
PIECES = [
    " ", "  ", "\n", "\t", "\u3000", "\x1c", "\u200b", "\u2060", "\ufeff", "\u202e", "\u2066", "\u200f",
    "\x00", "\x1b[31m", MENTION, "<@!123456789012345678>", ROLE, "<:e:123456789012345678>", "<t:0:F>",
    "k=", "K=", "-k ", "--k=", "n=", "-n ", "words=", "x=", "-", "--", "---", "=",
    "0", "7", "42", "100", "101", "1984", "12345", "\u0663", "a", "é", "word", "**", "\\", "…",
]  # fmt: skip
# Adversarial text: the pieces above, and runs of one of them as long as a message allows.
runs = st.tuples(st.sampled_from(PIECES), st.integers(1, 2000)).map(lambda run: run[0] * run[1])
adversarial = st.lists(st.one_of(st.sampled_from(PIECES), runs, st.text(max_size=5)), max_size=12).map("".join)
# Short adversarial text for comparing with the old regex, which is quadratic on long runs. No
# characters that IGNORECASE's [a-z] took for letters (the Kelvin sign, dotless i, long s).
short = st.lists(st.sampled_from(PIECES), max_size=10).map("".join)


class Counting(str):
    """A str that counts how many characters a scan over it looks at."""

    steps = 0

    def __getitem__(self, index):  # type: ignore[override]
        part = str.__getitem__(self, index)
        Counting.steps += len(part)
        return part

    def __iter__(self):
        for char in str.__iter__(self):
            Counting.steps += 1
            yield char


def steps_of(function, text: str, *args, **kwargs) -> int:
    Counting.steps = 0
    function(Counting(text), *args, **kwargs)
    return Counting.steps


@settings(max_examples=400, deadline=None)
@given(text=short, key=st.sampled_from(["k", "words"]), bare=st.booleans(), alone=st.booleans())
def test_the_count_scan_reads_text_as_the_old_regex_did(text, key, bare, alone):
    assert split_count(text, key, bare=bare, alone=alone) == old_split_count(text, key, bare=bare, alone=alone)


def test_the_count_scan_takes_the_spellings_users_write():
    assert split_count("deep learning k=3", "k", bare=False) == ("deep learning", 3)
    assert split_count("deep learning -k 3", "k", bare=False) == ("deep learning", 3)
    assert split_count("a tale   n=30  ", "words", bare=True) == ("a tale", 30)
    assert split_count("born in 1984", "words", bare=True) == ("born in 1984", None)
    assert split_count("a" + " " * 1990 + "x", "k", bare=False) == ("a" + " " * 1990 + "x", None)


@settings(max_examples=300, deadline=None)
@given(text=adversarial, key=st.sampled_from(["k", "words"]), bare=st.booleans(), alone=st.booleans())
@example(text="wordwordword 0", key="k", bare=False, alone=False)  # the option-name scan reads a word thrice
def test_parsing_looks_at_each_character_a_bounded_number_of_times(text, key, bare, alone):
    # A quadratic parse of a whitespace run (the old regex) would look at it run-length times;
    # a linear one a few times at most (the count's digits, the option name, the run before).
    assert steps_of(squeeze, text) <= len(text)
    squeezed = squeeze(text).strip()
    assert steps_of(split_count, squeezed, key, bare=bare, alone=alone) <= 4 * len(squeezed) + 16
    request = parse_prompt(text, key, bare=bare, alone=alone)
    assert len(request.text) <= min(len(text), RAW_LIMIT)
    assert request.count is None or 0 <= request.count <= 9999


def test_a_message_longer_than_discord_allows_is_cut_before_it_is_read():
    raw = "a" + " " * (10 * RAW_LIMIT) + "x k=3"
    Counting.steps = 0
    parse_prompt(Counting(raw), "k", bare=False)
    assert Counting.steps <= RAW_LIMIT  # one slice of the bounded length; the rest is never looked at


def test_whitespace_runs_read_as_one_space_or_break():
    assert squeeze("a" + " " * 1990 + "x") == "a x"
    assert squeeze("a\n\n\n  b\t") == "a\nb\t"
    assert parse_prompt("a" + "\n" * 3990 + "x 30", "words", bare=True) == ("a\nx", 30)


BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


@settings(max_examples=300, deadline=None)
@given(text=adversarial, word=adversarial, continuation=adversarial)
def test_nothing_the_bot_sends_can_reorder_the_line_or_pass_discords_limit(text, word, continuation):
    answers = [
        format_next(text, [Prediction(word, 0.5), Prediction("the", 0.1)]),
        format_next(text, []),
        format_continuation(text, continuation),
        fit(text),
    ]
    for answer in answers:
        assert len(answer) <= MAX_OUTPUT_CHARS
        assert not BIDI.search(answer), ascii(answer[:80])


def test_bidi_controls_show_as_their_code_points():
    answer = format_next("hello \u202eevil", [Prediction("x\u2067", 0.5)])
    assert answer.startswith("hello <U+202E>evil → **x<U+2067>**"), answer
    assert "\u200f" in fit("שלום\u200f!")  # a right-to-left mark opens nothing: it stays


def bold_balanced(content: str) -> bool:
    """Whether every `**` that is markdown (not backslash-escaped) has its pair."""
    return re.sub(r"\\.", "", content).count("**") % 2 == 0


def test_fit_never_splits_an_escape_or_a_bold_delimiter():
    assert fit("ab **cdefgh** ij", 9) == "ab **c…**"
    assert fit("ab **cdefgh** ij", 8) == "ab …"  # no room for a closed bold with text in it
    assert fit("ab \\*\\*cd", 6) == "ab \\*…"
    assert fit("ab **cd** **efg**", 15) == "ab **cd** …"
    assert fit("short **bold**", 14) == "short **bold**"
    for limit in range(1, 60):
        cut = fit("x " + "**a\\*b** \\\\ " * 10, limit)
        assert len(cut) <= limit and bold_balanced(cut), (limit, cut)


def test_split_count_takes_the_command_lines_spellings_and_a_count_alone_in_a_reply():
    assert split_count("once upon a time -n 30", "words", bare=True) == ("once upon a time", 30)
    assert split_count("once upon a time --words=30", "words", bare=True) == ("once upon a time", 30)
    assert split_count("once upon n=30", "words", bare=True) == ("once upon", 30)
    assert split_count("the cat -k 3", "k", bare=False) == ("the cat", 3)
    assert split_count("the cat -n 3", "k", bare=False) == ("the cat -n 3", None)
    assert split_count("the score was 3 -1", "words", bare=True) == ("the score was 3 -1", None)
    assert split_count("30", "words", bare=True, alone=True) == ("", 30)
    assert split_count("30", "words", bare=True) == ("30", None)


def test_split_count_takes_only_the_option_meant():
    assert split_count("deep learning k=3", "k", bare=False) == ("deep learning", 3)
    assert split_count("the year 1984", "k", bare=False) == ("the year 1984", None)
    assert split_count("once upon a time 30", "words", bare=True) == ("once upon a time", 30)
    assert split_count("once upon words=12", "words", bare=True) == ("once upon", 12)
    assert split_count("42", "words", bare=True) == ("42", None)
    assert split_count("I was born in 1984", "words", bare=True) == ("I was born in 1984", None)  # a year, not a count
    assert split_count("I was born in words=1984", "words", bare=True) == ("I was born in", 1984)  # asked for
    assert split_count("k=7", "k", bare=False) == ("", 7)
    assert split_count("a k=3", "words", bare=True) == ("a k=3", None)


def test_formatted_answers_never_exceed_discords_limit():
    huge = "*_`~|>" * 400
    assert len(format_next(huge, [Prediction(huge, 0.5)] * 10)) <= MAX_OUTPUT_CHARS
    assert len(format_continuation(huge, " " + huge)) <= MAX_OUTPUT_CHARS
    assert format_next("", []).startswith("*(start of a message)*")
    assert format_next("\u200b\u2060", []).startswith("*(start of a message)*")
    assert format_continuation("a", "") == "a *(the model has nothing to add)*"
