"""The terminal REPL: the completer and ghost text called directly, the whole prompt
driven through a pipe, a real pseudo-terminal, and the non-TTY pipe mode."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.data_structures import Size
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from wordbot import repl as repl_module
from wordbot.repl import (
    KEYS_HELP,
    GhostText,
    Repl,
    Settings,
    SuggestionCompleter,
    completion_text,
    display,
    format_prob,
    one_line,
    run,
    visible,
)
from wordbot.repl import suggest as suggest_module

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = ROOT / "data" / "models" / "default"

# Keys as a terminal sends them.
TAB, ENTER, DOWN, UP, RIGHT = "\t", "\r", "\x1b[B", "\x1b[A", "\x1b[C"
CTRL_P, CTRL_N, PAGE_UP = "\x10", "\x0e", "\x1b[5~"
ALT_F, CTRL_RIGHT, CTRL_C, CTRL_D, BACKSPACE = "\x1bf", "\x1b[1;5C", "\x03", "\x04", "\x7f"
LEFT, ESC, CTRL_W, CTRL_U, CTRL_Y, ALT_BACKSPACE = "\x1b[D", "\x1b", "\x17", "\x15", "\x19", "\x1b\x7f"
CTRL_R = "\x12"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


def completions(predictor, text: str, k: int = 5, cursor: int | None = None):
    completer = SuggestionCompleter(predictor, Settings(k=k))
    return list(completer.get_completions(Document(text, cursor), CompleteEvent(text_inserted=True)))


def ghost(predictor, text: str, temperature: float = 0.0) -> str | None:
    suggestion = GhostText(predictor, Settings(temperature=temperature)).get_suggestion(None, Document(text))
    return None if suggestion is None else suggestion.text


def a_word(predictor, min_length: int = 5) -> str:
    """A lowercase vocabulary word to type half of; the tiny model's vocabulary varies."""
    vocab = predictor.tokenizer.vocab
    return next(vocab[i] for i in predictor.tokenizer.word_ids if len(vocab[i]) >= min_length and vocab[i].isalpha())


def a_cased_word(predictor) -> tuple[str, str]:
    """A three-letter prefix whose likeliest completion after "so " has capitals ("dij": "Dijkstra")."""
    for lower, cased in predictor.tokenizer.cased.items():
        if len(lower) >= 5 and lower.isalpha() and cased != lower:
            top = predictor.complete("so " + lower[:3], 1)
            if top and top[0].word == cased:
                return lower[:3], cased
    pytest.skip("no capitalised word is a likeliest completion in this model")


def a_text_followed_by(predictor, punctuation: bool) -> str:
    """A text ending in a space whose greedy continuation starts with punctuation (", you")
    or with a word (" you"), as asked."""
    for text in ("the cat ", "hello ", "so ", "the cat sat on ", "i am ", "what is the ", "you ", "it is a "):
        rest = predictor.continue_text(text, repl_module.GHOST_WORDS, temperature=0)
        if rest[:1] and (not rest[:1].isspace() and not rest[:1].isalnum()) == punctuation:
            return text
    pytest.skip(f"no text here is followed by {'punctuation' if punctuation else 'a word'}")


# ---- the completer, called directly ----


def test_after_a_space_the_menu_offers_the_next_words_with_probabilities(tiny_predictor):
    found = completions(tiny_predictor, "the cat sat on ", k=4)
    expected = tiny_predictor.next_words("the cat sat on ", 4)
    assert [c.text for c in found] == [p.word for p in expected]
    assert all(c.start_position == 0 for c in found)
    assert [c.display_meta_text for c in found] == [format_prob(p.prob) for p in expected]
    assert all(c.display_meta_text.endswith("%") for c in found)


def test_inside_a_word_the_menu_completes_it_and_replaces_the_partial_word(tiny_predictor):
    word = a_word(tiny_predictor)
    text = "the " + word[:3]
    found = completions(tiny_predictor, text)
    assert found, f"no completion for {word[:3]!r}"
    assert word in [c.text for c in found]
    for c in found:
        assert c.start_position == -3
        assert c.text.startswith(word[:3])
    assert [c.text for c in found] == [p.word for p in tiny_predictor.complete(text)]


def test_completion_works_at_a_cursor_inside_the_line(tiny_predictor):
    word = a_word(tiny_predictor)
    text = "the " + word[:3] + " and more"
    found = completions(tiny_predictor, text, cursor=len("the ") + 3)
    assert found and all(c.start_position == -3 and c.text.startswith(word[:3]) for c in found)


def test_on_an_empty_line_the_menu_offers_first_words(tiny_predictor):
    found = completions(tiny_predictor, "", k=3)
    assert [c.text for c in found] == [p.word for p in tiny_predictor.next_words("", 3)]
    assert all(c.start_position == 0 and not c.text.startswith(" ") for c in found)


def test_after_punctuation_a_next_word_brings_its_own_space(tiny_predictor):
    after_comma = completions(tiny_predictor, "well,")
    assert after_comma and all(c.text.startswith(" ") and c.start_position == 0 for c in after_comma)
    assert [c.display_text for c in after_comma] == [p.word for p in tiny_predictor.next_words("well,")]
    after_paren = completions(tiny_predictor, "well (")
    assert after_paren and not any(c.text.startswith(" ") for c in after_paren)


def test_emoji_and_non_ascii_input_get_suggestions(tiny_predictor):
    assert completions(tiny_predictor, "naïve café 😀 ")
    assert all(c.text.startswith(" ") for c in completions(tiny_predictor, "so 😀"))


def test_inside_a_word_the_menu_offers_nothing_that_would_split_it(tiny_predictor):
    # "the ca|t": a completion would leave "t" behind ("the cant"), a next word glue onto it.
    assert completions(tiny_predictor, "the cat sat", cursor=6) == []
    assert completions(tiny_predictor, "the cat sat", cursor=4) == []
    assert completions(tiny_predictor, "the cat sat", cursor=7)  # at a word's end: fine


def test_a_prefix_no_word_starts_with_offers_nothing(tiny_predictor):
    assert completions(tiny_predictor, "the zqxjw") == []
    assert ghost(tiny_predictor, "the zqxjw") is None


def test_capitals_the_user_typed_are_kept(tiny_predictor):
    assert completion_text("Hel", "hello") == "Hello"
    assert completion_text("i", "I'm") == "I'm"  # the model's form wins over lowercase typing
    word = a_word(tiny_predictor)
    found = completions(tiny_predictor, "so " + word[:3].upper())
    assert found and all(c.text.startswith(word[:3].upper()) for c in found)


def test_command_lines_complete_to_command_names(tiny_predictor):
    assert [c.text for c in completions(tiny_predictor, ":mo")] == [":model"]
    assert {c.text for c in completions(tiny_predictor, ":")} == {
        ":help",
        ":k",
        ":temp",
        ":model",
        ":learned",
        ":forget",
        ":quit",
    }
    assert completions(tiny_predictor, ":k 3") == []


def test_probabilities_read_as_short_percentages():
    assert format_prob(0.31) == "31%"
    assert format_prob(0.004) == "0.4%"
    assert format_prob(0.00001) == "<0.1%"


# ---- the ghost text, called directly ----


def test_ghost_text_after_a_space_is_the_greedy_continuation(tiny_predictor):
    text = a_text_followed_by(tiny_predictor, punctuation=False)
    expected = tiny_predictor.continue_text(text, repl_module.GHOST_WORDS, temperature=0).lstrip()
    assert ghost(tiny_predictor, text) == expected


def test_ghost_text_after_a_space_starts_with_a_word_not_punctuation(tiny_predictor):
    # Accepted, ", everybody" after "hello " would read "hello , everybody".
    text = a_text_followed_by(tiny_predictor, punctuation=True)
    shown = ghost(tiny_predictor, text)
    first = tiny_predictor.next_words(text, 1)[0].word
    assert shown.startswith(first)
    rest = tiny_predictor.continue_text(text + first, repl_module.GHOST_WORDS - 1, temperature=0)
    assert shown == first + rest


def test_ghost_text_inside_a_word_finishes_it_first(tiny_predictor):
    word = a_word(tiny_predictor)
    text = "the " + word[:3]
    top = tiny_predictor.complete(text, 1)[0].word
    assert ghost(tiny_predictor, text).startswith(top[3:])


def test_ghost_text_is_none_on_an_empty_line_a_command_or_mid_line(tiny_predictor):
    assert ghost(tiny_predictor, "") is None
    assert ghost(tiny_predictor, "   ") is None
    assert ghost(tiny_predictor, ":k 3") is None
    suggester = GhostText(tiny_predictor, Settings())
    assert suggester.get_suggestion(None, Document("the cat sat", cursor_position=3)) is None


def test_sampled_ghost_text_is_stable_for_the_same_text(tiny_predictor):
    assert ghost(tiny_predictor, "the cat ", 1.0) == ghost(tiny_predictor, "the cat ", 1.0)


def test_ten_kilobytes_of_text_get_suggestions(tiny_predictor):
    text = "the cat sat on the mat and " * 380  # ~10 kB
    assert len(text) > 10_000
    assert completions(tiny_predictor, text)
    assert ghost(tiny_predictor, text)


# ---- commands ----


def recording_repl(predictor, state_dir, **options) -> Repl:
    """A Repl whose output goes to `repl.said`, as (style, text) pairs."""
    said: list[tuple[str, str]] = []
    repl = Repl(predictor, state_dir=state_dir, write=lambda text, style: said.append((style, text)), **options)
    repl.said = said
    return repl


@pytest.fixture
def quiet_repl(tiny_predictor, tmp_path):
    return recording_repl(tiny_predictor, tmp_path)


def test_k_and_temp_change_the_settings(quiet_repl):
    assert quiet_repl.commit(":k 3")
    assert quiet_repl.settings.k == 3
    assert quiet_repl.commit(":temp 0.7")
    assert quiet_repl.settings.temperature == 0.7
    assert quiet_repl.errors == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (":k", "whole number from 1 to 20, got 'nothing'"),
        (":k three", "got 'three'"),
        (":k 0", "got 0"),
        (":k 500", "got 500"),
        (":temp -1", "0 (greedy) or a number from 0.01 to 5"),
        (":temp hot", "got 'hot'"),
        (":temp nan", "got 'nan'"),
        (":model /no/such/model", "cannot load model '/no/such/model'"),
        (":frobnicate", "unknown command :frobnicate"),
    ],
)
def test_bad_command_arguments_get_a_clear_error_and_change_nothing(quiet_repl, line, message):
    predictor = quiet_repl.predictor
    assert quiet_repl.commit(line)
    assert quiet_repl.errors == 1
    style, text = quiet_repl.said[-1]
    assert style == "error" and message in text
    assert (quiet_repl.settings.k, quiet_repl.settings.temperature) == (5, 0.0)
    assert quiet_repl.predictor is predictor


def test_model_loads_another_model_directory(quiet_repl, tiny_model_dir):
    before = quiet_repl.predictor
    assert quiet_repl.commit(f":model {tiny_model_dir}")
    assert quiet_repl.predictor is not before
    assert quiet_repl.predictor.name == Path(tiny_model_dir).name


def test_help_lists_every_command_and_the_model(quiet_repl):
    quiet_repl.commit(":help")
    text = quiet_repl.said[-1][1]
    for command in (":help", ":k", ":temp", ":model", ":quit", "Ctrl-D"):
        assert command in text
    assert quiet_repl.predictor.describe() in text


def test_quit_ends_and_text_that_only_starts_with_a_colon_is_text(quiet_repl):
    assert quiet_repl.commit(":)")
    assert quiet_repl.transcript == [":)"]
    assert not quiet_repl.commit(":quit")
    assert not quiet_repl.commit(":q")


def test_history_lives_in_the_state_dir_and_the_env_var_moves_it(tmp_path, monkeypatch):
    assert repl_module.history_path(tmp_path) == tmp_path / "history"
    monkeypatch.setenv("WORDBOT_STATE_DIR", str(tmp_path / "env"))
    assert repl_module.history_path() == tmp_path / "env" / "history"
    monkeypatch.delenv("WORDBOT_STATE_DIR")
    assert repl_module.history_path().parts[-2:] == ("wordbot", "history")


# ---- the whole prompt, driven through a pipe ----


class Driver:
    """Runs the REPL's prompt loop in a thread on a pipe input, so a test can type keys
    and wait for the (threaded) suggestions to arrive, as a user would."""

    def __init__(self, repl: Repl, output=None):
        self.repl = repl
        self.output = output or DummyOutput()
        self.status: int | None = None

    def __enter__(self) -> Driver:
        self._input_cm = create_pipe_input()
        self.input = self._input_cm.__enter__()
        self.session = self.repl.session(self.input, self.output)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.wait(lambda: self.session.app.is_running, "the prompt to start")
        return self

    def _run(self) -> None:
        self.status = self.repl.interact(self.session)

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.input.send_text(CTRL_D)
            self.thread.join(5)
        self._input_cm.__exit__(*exc)

    @property
    def buffer(self):
        return self.session.default_buffer

    def type(self, text: str) -> None:
        self.input.send_text(text)

    def wait(self, condition, what: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = condition()
            except (AttributeError, IndexError, TypeError):
                value = None
            if value:
                return value
            time.sleep(0.005)
        raise AssertionError(f"timed out waiting for {what}; buffer {self.buffer.text[-80:]!r}")

    def menu(self) -> list:
        return self.wait(lambda: self.buffer.complete_state.completions, "the completion menu")

    def ghost(self) -> str:
        return self.wait(lambda: self.buffer.suggestion.text, "ghost text")


def test_typing_shows_the_menu_and_tab_then_enter_inserts_the_word_and_a_space(quiet_repl):
    with Driver(quiet_repl) as d:
        d.type("the cat sat on ")
        menu = d.menu()
        assert [c.text for c in menu] == [p.word for p in quiet_repl.predictor.next_words("the cat sat on ")]
        d.type(TAB)
        d.wait(lambda: d.buffer.complete_state.complete_index == 0, "the first entry selected")
        assert d.buffer.text == "the cat sat on " + menu[0].text
        d.type(ENTER)
        d.wait(lambda: d.buffer.text == f"the cat sat on {menu[0].text} ", "the word and a space")
        # The menu for the next word comes at once, without another keystroke.
        d.menu()
        assert quiet_repl.transcript == []  # Enter on a selected entry does not commit the line


def test_down_selects_and_typing_inside_a_word_completes_it(quiet_repl):
    word = a_word(quiet_repl.predictor)
    with Driver(quiet_repl) as d:
        d.type("so " + word[:3])
        menu = d.menu()
        assert all(c.text.startswith(word[:3]) for c in menu)
        d.type(DOWN + DOWN)
        d.wait(lambda: d.buffer.complete_state.complete_index == 1, "the second entry")
        d.type(ENTER)
        d.wait(lambda: d.buffer.text == f"so {menu[1].text} ", "the completed word and a space")


def test_backspace_brings_the_menu_back(quiet_repl):
    word = a_word(quiet_repl.predictor)
    with Driver(quiet_repl) as d:
        d.type("so " + word[:4])
        d.menu()
        d.type(BACKSPACE)
        d.wait(lambda: d.buffer.text == "so " + word[:3], "the deletion")
        d.wait(lambda: all(c.start_position == -3 for c in d.buffer.complete_state.completions), "new menu")


def test_right_accepts_the_ghost_text_and_alt_f_one_word(quiet_repl):
    text = a_text_followed_by(quiet_repl.predictor, punctuation=False)
    with Driver(quiet_repl) as d:
        d.type(text)
        full = d.ghost()
        assert full == quiet_repl.predictor.continue_text(text, repl_module.GHOST_WORDS, temperature=0).lstrip()
        first_word = full.split()[0]
        d.type(ALT_F)
        d.wait(lambda: d.buffer.text == text + first_word, "one word of the ghost text")
        assert d.buffer.suggestion is None or full.endswith(d.buffer.suggestion.text)
        d.ghost()
        rest = d.buffer.suggestion.text
        d.type(RIGHT)
        d.wait(lambda: d.buffer.text == text + first_word + rest, "all of the ghost text")
        d.type(CTRL_C)
        d.wait(lambda: d.buffer.text == "", "Ctrl-C to clear the line")
        d.type("the dog ")
        second = d.ghost().split()[0]
        d.type(CTRL_RIGHT)
        d.wait(lambda: d.buffer.text == "the dog " + second, "Ctrl-Right to accept a word")


def test_accepting_the_ghost_writes_the_word_as_the_menu_shows_it(quiet_repl):
    prefix, cased = a_cased_word(quiet_repl.predictor)
    for key in (RIGHT, ALT_F, CTRL_RIGHT):
        with Driver(quiet_repl) as d:
            # A message's first word ("What"), then a name mid-sentence as the training text writes it.
            for before, typed, word in (("", "wha", "What"), ("so ", prefix, cased)):
                d.type(before + typed)
                assert d.menu()[0].text == word
                ghost = d.ghost()
                assert (typed + ghost).lower().startswith(word.lower())
                accepted = ghost if key == RIGHT else re.match(r"\s*\S+", ghost).group()
                d.type(key)
                expected = before + word[: len(typed)] + accepted
                d.wait(lambda: d.buffer.text == expected, f"{expected!r} after {key!r}")  # noqa: B023
                d.type(CTRL_C)
                d.wait(lambda: d.buffer.text == "", "Ctrl-C to clear the line")


def test_accepting_the_ghost_keeps_capitals_the_user_typed(quiet_repl):
    with Driver(quiet_repl) as d:
        d.type("WHA")
        tab_word = d.menu()[0].text  # what Tab would write
        assert tab_word == "WHAt"
        ghost = d.ghost()
        d.type(RIGHT)
        d.wait(lambda: d.buffer.text == "WHA" + ghost, "the ghost text after the typed capitals")
        assert d.buffer.text.startswith(tab_word)


def test_a_space_then_right_never_puts_a_space_before_punctuation(quiet_repl):
    text = a_text_followed_by(quiet_repl.predictor, punctuation=True)
    first = quiet_repl.predictor.next_words(text, 1)[0].word
    with Driver(quiet_repl) as d:
        d.type(text)
        d.ghost()
        d.type(RIGHT)
        d.wait(lambda: d.buffer.text.startswith(text + first), "the menu's first word, then more")
        assert not re.search(r"\s[.,;:!?]", d.buffer.text)


def test_a_word_picked_with_tab_and_enter_then_committed_reads_without_a_doubled_space(quiet_repl):
    with Driver(quiet_repl) as d:
        d.type("the cat sat on ")
        word = d.menu()[0].text
        d.type(TAB)
        d.wait(lambda: d.buffer.text == "the cat sat on " + word, "the first entry")
        d.type(ENTER)  # inserts the word and a space
        d.wait(lambda: d.buffer.text == f"the cat sat on {word} ", "the word and a space")
        d.type(ENTER)  # commits the line
        d.wait(lambda: quiet_repl.transcript, "the commit")
    (line,) = [line for _, text in quiet_repl.said for line in text.splitlines() if line.startswith("  continued:")]
    shown = line.removeprefix("  continued: ")
    assert shown.startswith(f"the cat sat on {word}")
    assert "  " not in shown and not re.search(r"\s[.,;:!?]", shown), shown


def test_enter_commits_lines_to_the_transcript_and_history_and_up_recalls_them(quiet_repl, tmp_path):
    with Driver(quiet_repl) as d:
        d.type("first line" + ENTER)
        d.wait(lambda: quiet_repl.transcript == ["first line"], "the first commit")
        d.type("second line 😀" + ENTER)
        d.wait(lambda: len(quiet_repl.transcript) == 2, "the second commit")
        d.type(ENTER)  # an empty line: committed, but not kept in history
        d.wait(lambda: len(quiet_repl.transcript) == 3, "the empty commit")
        d.type("   " + ENTER)  # nor a line of spaces: Up must recall something
        d.wait(lambda: len(quiet_repl.transcript) == 4, "the blank commit")
        # Each prompt reloads its history in the background; a user is never this quick.
        d.wait(lambda: "second line 😀" in d.buffer._working_lines, "the history to load")
        d.type(UP)
        d.wait(lambda: d.buffer.text == "second line 😀", "Up to recall the last line")
        d.type(UP)
        d.wait(lambda: d.buffer.text == "first line", "Up to recall the line before")
        d.type(CTRL_D)
        d.thread.join(5)
        assert d.status == 0
    assert quiet_repl.transcript == ["first line", "second line 😀", "", "   "]
    assert any(text.startswith("  next words:") for _, text in quiet_repl.said)
    history = (tmp_path / "history").read_text(encoding="utf-8")
    assert "+first line" in history and "+second line 😀" in history


def _commit_history(d: Driver, repl: Repl, lines: list[str]) -> None:
    for line in lines:
        d.type(line + ENTER)
    d.wait(lambda: repl.transcript[-len(lines) :] == lines, "the commits")
    # Each prompt reloads its history in the background; a user is never this quick.
    d.wait(lambda: lines[-1] in d.buffer._working_lines, "the history to load")


def _shows_suggestions_for(d: Driver, predictor, text: str) -> None:
    expected = [c.text for c in completions(predictor, text)]
    assert expected, f"the model offers nothing after {text!r}"
    d.wait(lambda: [c.text for c in d.buffer.complete_state.completions] == expected, f"the menu for {text!r}")
    assert d.ghost() == ghost(predictor, text)


def test_a_recalled_line_gets_its_menu_and_ghost_text_and_up_down_keep_moving_through_history(quiet_repl):
    predictor = quiet_repl.predictor
    older, newer = "the cat sat on ", "so the cat"  # a next word to offer, a word to complete
    with Driver(quiet_repl) as d:
        _commit_history(d, quiet_repl, [older, newer])
        d.type(UP)
        d.wait(lambda: d.buffer.text == newer, "Up to recall the last line")
        _shows_suggestions_for(d, predictor, newer)
        # With that menu open, Up and Down still move through history, not in the menu.
        d.type(UP)
        d.wait(lambda: d.buffer.text == older, "Up past the open menu to the line before")
        _shows_suggestions_for(d, predictor, older)
        d.type(UP)  # the oldest line: nothing further, the menu stays, nothing is picked
        d.type(DOWN)
        d.wait(lambda: d.buffer.text == newer, "Down to the later line")
        _shows_suggestions_for(d, predictor, newer)
        d.type(DOWN)  # back to the (empty) line being typed
        d.wait(lambda: d.buffer.text == "", "Down to the new line")
        # Ctrl-P and PageUp recall too; two keys at once leave the second line's suggestions.
        d.type(CTRL_P + CTRL_P)
        d.wait(lambda: d.buffer.text == older, "Ctrl-P twice")
        _shows_suggestions_for(d, predictor, older)
        d.type(CTRL_N)
        d.wait(lambda: d.buffer.text == newer, "Ctrl-N")
        _shows_suggestions_for(d, predictor, newer)
        d.type(PAGE_UP)
        d.wait(lambda: d.buffer.text == older, "PageUp")
        _shows_suggestions_for(d, predictor, older)
        # Tab picks from the menu; from then on Up and Down move in it, as on a typed line.
        menu = [c.text for c in d.buffer.complete_state.completions]
        d.type(TAB)
        d.wait(lambda: d.buffer.text == older + menu[0], "Tab to pick the first entry")
        d.type(DOWN)
        d.wait(lambda: d.buffer.text == older + menu[1], "Down to the second entry")
        d.type(ENTER)
        d.wait(lambda: d.buffer.text == f"{older}{menu[1]} ", "the picked word and a space")
    assert quiet_repl.transcript == [older, newer]


def test_an_edited_recalled_line_gets_the_menu_keys_back(quiet_repl):
    predictor = quiet_repl.predictor
    with Driver(quiet_repl) as d:
        _commit_history(d, quiet_repl, ["the cat sat on the"])
        d.type(UP)
        d.wait(lambda: d.buffer.text == "the cat sat on the", "Up to recall the line")
        d.type(" ")
        _shows_suggestions_for(d, predictor, "the cat sat on the ")
        first = d.buffer.complete_state.completions[0].text
        d.type(DOWN)  # edited: Down picks from the menu, as on a typed line
        d.wait(lambda: d.buffer.text == "the cat sat on the " + first, "Down to pick the first entry")


@pytest.mark.parametrize("key", [ENTER, ESC, UP, DOWN, LEFT, RIGHT])
def test_a_line_found_with_ctrl_r_gets_its_menu_and_ghost_text(quiet_repl, key):
    # Accepting a reverse search left the line with no menu and no ghost text until a key was typed.
    predictor = quiet_repl.predictor
    older, newer = "the cat sat on ", "so the dog"
    with Driver(quiet_repl) as d:
        _commit_history(d, quiet_repl, [older, newer])
        d.type(CTRL_R)
        d.wait(lambda: d.session.app.layout.is_searching, "Ctrl-R to start the search")
        d.type("cat")
        d.wait(lambda: d.session.search_buffer.text == "cat", "the search text")
        d.type(key)
        d.wait(lambda: not d.session.app.layout.is_searching, f"{key!r} to end the search")
        d.wait(lambda: d.buffer.text == older, "the line found")
        assert d.buffer.document.is_cursor_at_the_end
        _shows_suggestions_for(d, predictor, older)
        d.type("x" + ENTER)  # the found line is edited like a typed one
        d.wait(lambda: quiet_repl.transcript[-1] == older + "x", "the edited line committed")


@pytest.mark.parametrize(
    ("keys", "left"),
    [
        (CTRL_W, "so the cat sat on the "),
        (ALT_BACKSPACE, "so the cat sat on the "),
        (CTRL_U, ""),
        (CTRL_W + CTRL_Y, "so the cat sat on the mat"),  # kill, then yank it back
        (LEFT * 3 + "\x1b[3~" * 3, "so the cat sat on the "),  # Delete
    ],
)
def test_every_deleting_key_brings_the_suggestions_back(quiet_repl, keys, left):
    predictor = quiet_repl.predictor
    with Driver(quiet_repl) as d:
        d.type("so the cat sat on the mat")
        d.wait(lambda: d.buffer.complete_state is not None, "the first menu")
        d.type(keys)
        d.wait(lambda: d.buffer.text == left, f"the text after {keys!r}")
        before_cursor = d.buffer.document.text_before_cursor
        expected = [c.text for c in completions(predictor, left, cursor=len(before_cursor))]
        d.wait(lambda: [c.text for c in d.buffer.complete_state.completions] == expected, "a menu for what is left")
        if d.buffer.document.is_cursor_at_the_end and left.strip():
            assert d.ghost() == ghost(predictor, left)


def test_escape_closes_the_menu_and_goes_back_to_the_typed_text(quiet_repl):
    with Driver(quiet_repl) as d:
        d.type("the cat sat on ")
        word = d.menu()[0].text
        d.type(TAB)
        d.wait(lambda: d.buffer.text == "the cat sat on " + word, "the first entry")
        d.type(ESC)  # alone: prompt_toolkit waits a moment for an Alt- sequence first
        # Both at once: right after Tab inserts the entry, the menu is briefly closed too.
        d.wait(lambda: d.buffer.complete_state is None and d.buffer.text == "the cat sat on ", "the text as typed")
        d.type("x" + ENTER)
        d.wait(lambda: quiet_repl.transcript == ["the cat sat on x"], "the commit")


def test_a_word_picked_mid_line_takes_the_space_already_there(quiet_repl):
    word = a_word(quiet_repl.predictor)
    with Driver(quiet_repl) as d:
        d.type(f"so {word[:3]} more")
        d.type(LEFT * len(" more"))
        d.wait(lambda: d.buffer.document.text_before_cursor == f"so {word[:3]}", "the cursor after the prefix")
        d.type(TAB)
        picked = d.wait(lambda: d.buffer.complete_state.current_completion.text, "a picked completion")
        d.type(ENTER)
        d.wait(lambda: d.buffer.document.text_before_cursor == f"so {picked} ", "the cursor past the space")
        assert d.buffer.text == f"so {picked} more"


def test_a_paste_is_one_line_without_control_characters(quiet_repl):
    assert one_line("first line\r\n    second\tline\x01\x1b[31m red\n") == "first line second line[31m red"
    assert one_line("a\u2028b\rc") == "a b c"
    with Driver(quiet_repl) as d:
        d.type("so ")
        d.type(PASTE_START + "the cat\r\n  sat\ton\x07 the \x1b" + PASTE_END)
        d.wait(lambda: d.buffer.text == "so the cat sat on the ", "the paste as one line")
        assert [c.text for c in d.menu()] == [p.word for p in quiet_repl.predictor.next_words("so the cat sat on the ")]
        d.type(ENTER)
        d.wait(lambda: quiet_repl.transcript == ["so the cat sat on the "], "a single committed line")


def test_k_3_shortens_the_menu_and_ctrl_d_exits_with_status_0(quiet_repl):
    with Driver(quiet_repl) as d:
        d.type(":k 3" + ENTER)
        d.wait(lambda: quiet_repl.settings.k == 3, ":k 3")
        d.type("the cat ")
        assert len(d.menu()) == 3
        d.type(CTRL_D)
        d.thread.join(5)
        assert not d.thread.is_alive() and d.status == 0
    assert quiet_repl.transcript == []  # Ctrl-D drops the unfinished line


def test_quit_command_exits(quiet_repl):
    with Driver(quiet_repl) as d:
        d.type(":quit" + ENTER)
        d.thread.join(5)
        assert d.status == 0


def test_pasting_ten_kilobytes_behaves(quiet_repl):
    text = "the cat sat on the mat and " * 380
    with Driver(quiet_repl) as d:
        d.type(PASTE_START + text + PASTE_END)
        d.wait(lambda: d.buffer.text == text, "the paste")
        d.menu()
        d.type(ENTER)
        d.wait(lambda: quiet_repl.transcript == [text], "the commit")


class _SizedOutput(DummyOutput):
    """An output `columns` wide, or one whose width cannot be read (None)."""

    def __init__(self, columns: int | None):
        self.columns = columns

    def get_size(self) -> Size:
        if self.columns is None:
            raise OSError("not a terminal")
        return Size(rows=24, columns=self.columns)


@pytest.mark.parametrize(("columns", "width"), [(40, 39), (120, 119), (None, 79)])
def test_the_model_line_wraps_at_word_boundaries_to_the_terminal_width(quiet_repl, columns, width):
    if columns is None:
        quiet_repl.banner(display.text_width(_SizedOutput(None)))  # prompt_toolkit needs a size to draw
    else:
        with Driver(quiet_repl, _SizedOutput(columns)):
            pass
    said = next(text for style, text in quiet_repl.said if text.startswith("Model: "))
    rows = said.splitlines()
    model = f"Model: {quiet_repl.predictor.describe()}"
    assert " ".join(rows).split() == model.split()  # whole words, none cut in two
    assert all(len(row) <= width for row in rows), rows
    assert len(rows) == 1 if len(model) <= width else len(rows) > 1


@pytest.mark.parametrize("columns", [30, 40, 60, 80])
def test_the_keys_and_help_wrap_between_words_to_the_terminal_width(quiet_repl, columns):
    with Driver(quiet_repl, _SizedOutput(columns)) as d:
        d.type(":help" + ENTER)
        d.wait(lambda: any("Commands:" in text for _, text in quiet_repl.said), ":help")
    keys = next(text for _, text in quiet_repl.said if "Tab / Down" in text and "Commands:" not in text)
    shown = next(text for _, text in quiet_repl.said if "Commands:" in text)
    if columns == 80:
        assert keys == KEYS_HELP  # as shown where the width is unknown
        before_now = quiet_repl.help_text().partition("\nNow: ")[0]  # the model's name may wrap
        assert shown.startswith(before_now + "\nNow: ")
    for text, unwrapped in ((keys, KEYS_HELP), (shown, quiet_repl.help_text())):
        rows = text.splitlines()
        assert all(len(row) < columns for row in rows), rows
        assert text.split() == unwrapped.split()  # whole words, in order, none cut in two
    if columns < 40:  # too narrow for a key column: each key above its description
        assert "  Tab / Down" in keys.splitlines()


def test_the_start_screen_says_how_to_exit(quiet_repl):
    with Driver(quiet_repl):
        pass
    start = "\n".join(text for _, text in quiet_repl.said)
    assert "Ctrl-D" in start and ":quit" in start and ":help" in start


def test_the_toolbar_names_the_model_and_the_last_suggestion_time(quiet_repl):
    assert "-" in quiet_repl.toolbar()[0][1]
    with Driver(quiet_repl) as d:
        d.type("the ")
        d.menu()
    bar = "".join(text for _, text in quiet_repl.toolbar())
    assert quiet_repl.predictor.name[:16] in bar and " ms " in bar and "Ctrl-D" in bar
    assert len(bar) <= 80


# ---- pipe mode ----


def test_pipe_mode_prints_suggestions_for_each_line(tiny_model_dir, tmp_path):
    out = io.StringIO()
    lines = "the cat sat on\n:k 2\nthe c\n\nnaïve 😀\n"
    assert run(tiny_model_dir, input=io.StringIO(lines), output=out, state_dir=tmp_path) == 0
    text = out.getvalue()
    # A line is a finished text: its next words, even when it ends in a word's prefix.
    assert text.count("  next words:") == 3  # the blank line asks nothing
    assert "  continued: the cat sat on" in text
    assert "showing 2 suggestions" in text
    last_words = [line for line in text.splitlines() if line.startswith("  next words:")][-1]
    assert last_words.count("%") == 2
    assert not (tmp_path / "history").exists()  # pipes are not typed lines


def test_pipe_mode_shows_control_characters_instead_of_sending_them_to_the_terminal(tiny_model_dir, tmp_path):
    out = io.StringIO()
    lines = "a\x1b[31mred\nthe \x07cat\x9b\x08 sat\n"
    assert run(tiny_model_dir, input=io.StringIO(lines), output=out, state_dir=tmp_path) == 0
    text = out.getvalue()
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text), repr(text)
    assert text.count("a^[[31mred") == 2  # the echoed line and its continuation
    assert "the ^Gcat<9b>^H sat" in text


def test_pipe_mode_shows_bidi_controls_and_keeps_other_text(tiny_model_dir, tmp_path):
    # An override (U+202E) echoed as it came made the terminal show the rest of the line reversed.
    out = io.StringIO()
    text = "naïve café 日本語 👩\u200d👩\u200d👧 e\u0301 \u200c"
    lines = f"abc\u202edef\n\u2066x\u2069 \u202a\u202b\u202c\u202d \u2067\u2068\n{text}\n"
    assert run(tiny_model_dir, input=io.StringIO(lines), output=out, state_dir=tmp_path) == 0
    shown = out.getvalue()
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", shown), repr(shown)
    assert "abc<U+202E>def" in shown.splitlines()
    assert "<U+2066>x<U+2069> <U+202A><U+202B><U+202C><U+202D> <U+2067><U+2068>" in shown.splitlines()
    assert text in shown.splitlines()  # emoji with their joiners, CJK and accents as they are
    assert visible(text) == text


def test_pipe_mode_reports_a_bad_command_in_its_exit_status(tiny_model_dir, tmp_path, capsys):
    assert run(tiny_model_dir, input=io.StringIO(":k many\n"), output=io.StringIO(), state_dir=tmp_path) == 1
    assert ":k needs a whole number" in capsys.readouterr().err


def test_a_bad_model_path_is_one_clear_line_and_status_2(tmp_path, capsys):
    assert run(tmp_path / "nothing", input=io.StringIO(""), output=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err.startswith("wordbot: error: ") and "does not exist" in err and err.count("\n") == 1


def repl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "wordbot", "repl", *args]


def _env(tmp_path, **extra) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "NO_COLOR"}
    return {**env, "WORDBOT_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT), **extra}


def test_the_repl_never_imports_tensorflow_and_pipes_from_the_shell(tiny_model_dir, tmp_path):
    model, state = str(tiny_model_dir), str(tmp_path)
    probe = f"""
import io, sys
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from wordbot.predictor import Predictor
from wordbot.repl import Repl, run

status = run({model!r}, input=io.StringIO("the cat sat on\\n"), output=sys.stdout)
repl = Repl(Predictor.load({model!r}), state_dir={state!r})
with create_pipe_input() as keys:
    keys.send_text("the cat \\x04")
    status += repl.interact(repl.session(keys, DummyOutput()))
print("heavy:", [m for m in ("tensorflow", "keras") if m in sys.modules])
raise SystemExit(status)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout
    shell = subprocess.run(
        repl_command("--model", str(tiny_model_dir)),
        input="the cat sat on\n",
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    assert "  next words:" in shell.stdout and shell.stdout.count("%") >= 5


# ---- hardening: what a user may throw at it ----

HISTORY_PROBE = """
import sys
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from wordbot.predictor import Predictor
from wordbot.repl import Repl

said = []
repl = Repl(Predictor.load(sys.argv[1]), state_dir=sys.argv[2], write=lambda text, style: said.append(text))
with create_pipe_input() as keys:
    keys.send_text("the cat\\rso the\\r\\x04")
    status = repl.interact(repl.session(keys, DummyOutput()))
print("transcript:", repl.transcript)
print("history lines:", [text for text in said if "kept" in text and "Up recalls" not in text])
raise SystemExit(status)
"""


def _unusable_history(state: Path, how: str) -> None:
    if how == "a read-only history file":
        state.mkdir()
        (state / "history").write_text("\n# 2026-01-01\n+older line\n", encoding="utf-8")
        (state / "history").chmod(0o444)
    elif how == "a directory in its place":
        (state / "history").mkdir(parents=True)
    elif how == "a state directory without permission":
        state.mkdir(mode=0o500)
    elif how == "a file in the state directory's place":
        state.write_text("not a directory")


@pytest.mark.parametrize(
    ("how", "permission"),
    [
        ("a read-only history file", True),
        ("a directory in its place", False),
        ("a state directory without permission", True),
        ("a file in the state directory's place", False),
    ],
)
def test_an_unusable_history_file_is_said_once_in_one_line_and_the_session_goes_on(
    tiny_model_dir, tmp_path, how, permission
):
    from tests.unprivileged import run_unprivileged, skip_reason

    if permission and (reason := skip_reason()):
        pytest.skip(reason)
    state = tmp_path / "state"
    _unusable_history(state, how)
    command = [sys.executable, "-c", HISTORY_PROBE, str(tiny_model_dir), str(state)]
    done = run_unprivileged(command, env=_env(tmp_path), cwd=str(ROOT), timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "transcript: ['the cat', 'so the']" in done.stdout, done.stdout
    (line,) = eval(done.stdout.split("history lines:", 1)[1])  # said once
    assert line.startswith("history will not be kept: cannot use ") and "\n" not in line, line


def test_a_history_file_that_fails_later_is_said_once_and_up_still_recalls(quiet_repl, tmp_path):
    history = quiet_repl.history()
    assert quiet_repl.errors == 0
    path = tmp_path / "history"
    path.unlink()
    path.mkdir()  # a directory where the file was: every write fails from now on
    history.append_string("first line")
    history.append_string("second line")
    assert list(history.get_strings()) == ["first line", "second line"]
    assert quiet_repl.errors == 1
    assert quiet_repl.said[-1][1].startswith("history will not be kept: cannot use")


@pytest.mark.parametrize("value", ["1e-310", "1e-5", "0.001", "inf", "-0.5", "1e400"])
def test_a_temperature_too_small_to_sample_or_out_of_range_is_refused_in_one_line(quiet_repl, value):
    # :temp 1e-310 was accepted, and sampling divided by it: NaN and a traceback.
    assert quiet_repl.commit(f":temp {value}")
    assert quiet_repl.errors == 1 and quiet_repl.settings.temperature == 0.0
    style, text = quiet_repl.said[-1]
    assert (
        style == "error" and text.startswith(":temp needs 0 (greedy) or a number from 0.01 to 5") and "\n" not in text
    )
    assert quiet_repl.commit(":temp 0.01")  # the smallest taken: the ghost text and a report still work
    assert ghost(quiet_repl.predictor, "the cat ", 0.01) is not None
    assert quiet_repl.commit("the cat sat on")
    assert quiet_repl.errors == 1


def _broken_model(tiny_model_dir: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    broken = tmp_path / "broken"
    if how == "a file, not a directory":
        broken.write_text("{}")
        return broken
    shutil.copytree(tiny_model_dir, broken)
    if how == "an empty directory":
        shutil.rmtree(broken)
        broken.mkdir()
    elif how == "a manifest that is not JSON":
        (broken / "manifest.json").write_text("{not json")
    elif how == "a manifest that is a list":
        (broken / "manifest.json").write_text("[1, 2, 3]")
    elif how == "a deeply nested tokenizer":
        (broken / "tokenizer.json").write_text("[" * 100_000 + "]" * 100_000)
    elif how == "weights that are not a zip":
        (broken / "weights.embedding.npy").write_bytes(b"PK\x03\x04 not really")
    return broken


BROKEN_MODELS = [
    "a file, not a directory",
    "an empty directory",
    "a manifest that is not JSON",
    "a manifest that is a list",
    "a deeply nested tokenizer",
    "weights that are not a zip",
]


@pytest.mark.parametrize("how", BROKEN_MODELS)
def test_model_command_with_a_broken_directory_is_one_line_and_the_session_goes_on(
    quiet_repl, tiny_model_dir, tmp_path, how
):
    broken = _broken_model(Path(tiny_model_dir), tmp_path, how)
    predictor = quiet_repl.predictor
    assert quiet_repl.commit(f":model {broken}")
    style, text = quiet_repl.said[-1]
    assert style == "error" and text.startswith(f"cannot load model {str(broken)!r}: ") and "\n" not in text, text
    assert quiet_repl.errors == 1 and quiet_repl.predictor is predictor
    assert quiet_repl.commit("the cat sat on")
    assert quiet_repl.said[-1][1].startswith("  next words:")


@pytest.mark.parametrize("how", BROKEN_MODELS)
def test_a_broken_model_at_start_is_one_line_and_status_2(tiny_model_dir, tmp_path, capsys, how):
    broken = _broken_model(Path(tiny_model_dir), tmp_path, how)
    assert run(broken, input=io.StringIO("the cat\n"), output=io.StringIO(), state_dir=tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("wordbot: error: ") and err.count("\n") == 1, err


def test_a_model_directory_without_permission_is_one_line_at_start_and_on_model(tiny_model_dir, tmp_path):
    import shutil

    from tests.unprivileged import run_unprivileged, skip_reason

    if reason := skip_reason():
        pytest.skip(reason)
    locked = tmp_path / "locked"
    shutil.copytree(tiny_model_dir, locked)
    locked.chmod(0)
    try:
        env = _env(tmp_path)
        start = run_unprivileged(repl_command("--model", str(locked)), input="the cat\n", env=env, cwd=str(ROOT))
        later = run_unprivileged(
            repl_command("--model", str(tiny_model_dir)), input=f":model {locked}\nthe cat\n", env=env, cwd=str(ROOT)
        )
    finally:
        locked.chmod(0o700)
    assert start.returncode == 2 and start.stderr.startswith("wordbot: error: "), start.stderr
    assert start.stderr.count("\n") == 1 and "Traceback" not in start.stderr, start.stderr
    assert later.returncode == 1 and later.stderr.startswith(f"cannot load model {str(locked)!r}: "), later.stderr
    assert later.stderr.count("\n") == 1, later.stderr
    assert "  next words:" in later.stdout  # the session went on after the failed :model


# ---- a real pseudo-terminal ----


class Terminal:
    """pexpect for the pseudo-terminal, pyte for what a user would see on an 80x24 screen."""

    def __init__(self, command: list[str], env: dict[str, str], rows: int = 24, columns: int = 80):
        import pexpect
        import pyte

        self.child = pexpect.spawn(command[0], command[1:], env=env, dimensions=(rows, columns), cwd=str(ROOT))
        child = self.child

        class Screen(pyte.Screen):
            def write_process_input(self, data: str) -> None:
                child.send(data)  # answers prompt_toolkit's cursor-position requests

        self.screen = Screen(columns, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()  # everything the program wrote, escape sequences included

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def pump(self, seconds: float = 0.05) -> None:
        import pexpect

        with contextlib.suppress(pexpect.TIMEOUT):
            data = self.child.read_nonblocking(65536, timeout=seconds)
            self.raw += data
            self.stream.feed(data)

    def wait_for(self, condition, what: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            found = condition(self.screen)
            if found:
                return found
        raise AssertionError(f"timed out waiting for {what}; screen:\n{self.text()}")

    def finish(self) -> int:
        import pexpect

        self.child.expect(pexpect.EOF, timeout=20)
        self.child.close()
        return self.child.exitstatus


def _prompt_line(screen) -> str:
    return next((line for line in screen.display if line.startswith("> ")), "")


def _menu_rows(screen) -> list[str]:
    """Rows under the prompt that look like menu entries: a word, then a percentage."""
    lines = screen.display
    start = next(i for i, line in enumerate(lines) if line.startswith("> "))
    return [line.strip() for line in lines[start + 1 :] if line.strip().endswith("%")]


def _type_and_pick(term: Terminal, text: str) -> None:
    term.child.send(text)
    term.wait_for(lambda s: _prompt_line(s).startswith("> " + text), "the typed text")
    rows = term.wait_for(_menu_rows, "the completion menu under the cursor")
    first_word = rows[0].split()[0]
    term.child.send(TAB)
    term.wait_for(lambda s: _prompt_line(s).startswith(f"> {text}{first_word}"), f"{first_word!r} inserted")


def test_a_real_terminal_with_the_bundled_model(tmp_path):
    if not (BUNDLED_MODEL / "manifest.json").exists():
        pytest.skip(f"the bundled model {BUNDLED_MODEL} is not there yet")
    term = Terminal(repl_command(), _env(tmp_path, TERM="xterm-256color"))
    term.wait_for(lambda s: "Ctrl-D" in "\n".join(s.display) and _prompt_line(s), "the start screen")
    _type_and_pick(term, "deep learning is a ")
    term.child.send(CTRL_D)
    assert term.finish() == 0


def test_a_dumb_terminal_gets_line_mode_not_keys_it_cannot_show(tiny_model_dir, tmp_path):
    # prompt_toolkit's fallback for TERM=dumb echoed one character per change, so Tab
    # showed "the cat s" while the line held "the cat sat"; the menu keys did nothing visible.
    term = Terminal(repl_command("--model", str(tiny_model_dir)), _env(tmp_path, TERM="dumb"))
    term.wait_for(lambda s: _prompt_line(s), "the first prompt")
    assert "no live suggestions" in term.text() and "Tab" not in term.text()
    term.child.send("the cat sat on" + ENTER)
    term.wait_for(lambda s: "next words:" in "\n".join(s.display), "the line's report")
    term.wait_for(lambda s: s.display[s.cursor.y].startswith("> "), "the next prompt")
    assert term.text().count("the cat sat on") == 2  # as typed, then continued: not echoed twice
    term.child.sendeof()
    assert term.finish() == 0


def test_a_dumb_terminal_shows_typed_escape_sequences_rather_than_obeying_them(tiny_model_dir, tmp_path):
    term = Terminal(repl_command("--model", str(tiny_model_dir)), _env(tmp_path, TERM="dumb"))
    term.wait_for(lambda s: _prompt_line(s), "the first prompt")
    term.child.send("a\x1b[31mred" + ENTER)
    row = term.wait_for(
        lambda s: next((line for line in s.display if line.startswith("  continued:")), None), "the continuation"
    )
    assert row.startswith("  continued: a^[[31mred"), row
    term.child.sendeof()
    assert term.finish() == 0


def test_a_narrow_real_terminal_gets_the_model_line_wrapped_to_its_width(tiny_model_dir, tmp_path):
    from wordbot.predictor import Predictor

    columns = 50
    term = Terminal(repl_command("--model", str(tiny_model_dir)), _env(tmp_path, TERM="xterm"), columns=columns)
    term.wait_for(lambda s: _prompt_line(s), "the first prompt")
    lines = term.screen.display
    start = next(i for i, line in enumerate(lines) if line.startswith("Model: "))
    rows = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  ") or "Tab / Down" in line:
            break
        rows.append(line)
    model = f"Model: {Predictor.load(tiny_model_dir).describe()}"
    assert len(rows) > 1 and all(len(row.rstrip()) < columns for row in rows), rows
    assert " ".join(rows).split() == model.split()  # wrapped between words, not mid-word by the terminal
    term.child.send(CTRL_D)
    assert term.finish() == 0


def test_ctrl_c_in_a_dumb_terminal_drops_the_line_and_prompts_again(tiny_model_dir, tmp_path):
    # The terminal edits the line there, so Ctrl-C is a signal: it ended the REPL with 130.
    term = Terminal(repl_command("--model", str(tiny_model_dir)), _env(tmp_path, TERM="dumb"))
    term.wait_for(lambda s: _prompt_line(s), "the first prompt")
    term.child.send("the ca")
    term.wait_for(lambda s: "> the ca" in term.text(), "the typed text")
    term.child.send(CTRL_C)
    term.wait_for(lambda s: s.display[s.cursor.y].startswith("> ") and s.cursor.x == 2, "a fresh prompt")
    term.child.send("so the" + ENTER)
    term.wait_for(lambda s: "continued: so the" in term.text(), "the next line's report")
    assert "the caso the" not in term.text()  # the interrupted text was dropped
    term.wait_for(lambda s: s.display[s.cursor.y].startswith("> "), "the next prompt")
    term.child.sendeof()
    assert term.finish() == 0


@pytest.mark.parametrize("columns", [50, 80])
def test_line_mode_wraps_its_intro_between_words_to_the_terminal_width(tiny_model_dir, tmp_path, columns):
    term = Terminal(repl_command("--model", str(tiny_model_dir)), _env(tmp_path, TERM="dumb"), columns=columns)
    term.wait_for(lambda s: _prompt_line(s), "the first prompt")
    lines = term.screen.display
    start = next(i for i, line in enumerate(lines) if line.startswith("wordbot: "))
    end = next(i for i, line in enumerate(lines) if line.startswith(("> ", "wordbot learns")))
    rows = [line.rstrip() for line in lines[start:end]]
    notice = [line.rstrip() for line in lines[end:] if line.strip() and not line.startswith("> ")]
    assert notice and all(len(row) < columns for row in notice), notice  # the first start's line about learning
    intro = (
        "wordbot: this terminal (TERM=dumb) shows no live suggestions; each line you\n"
        "enter gets its next words and a continuation. :help for commands; Ctrl-D exits."
    )
    if columns == 80:
        assert "\n".join(rows) == intro  # as it always was
    assert all(len(row) < columns for row in rows), rows
    assert " ".join(rows).split() == intro.split()  # wrapped between words, not mid-word by the terminal
    term.child.sendeof()
    assert term.finish() == 0


def test_ctrl_c_just_after_enter_clears_the_line_and_never_ends_the_session(tiny_model_dir, tmp_path):
    # After Enter the terminal is back in its own mode while the line is handled, so Ctrl-C
    # there is a signal, not a key: within ~50 ms of Enter (a large paste) it ended the REPL
    # with status 130. Ctrl-C every few milliseconds from Enter on lands in every phase.
    import pexpect

    term = Terminal(repl_command("--model", str(tiny_model_dir)), _env(tmp_path, TERM="xterm"))
    term.child.delaybeforesend = None  # pexpect waits 50 ms before each send by default
    term.wait_for(lambda s: _prompt_line(s), "the first prompt")
    text = "the cat sat on the mat and " * 380
    for _ in range(3):
        term.child.send(PASTE_START + text + PASTE_END)
        term.wait_for(lambda s: "mat and the cat" in term.text(), "the paste")  # 10 kB: the prompt scrolled off
        term.pump(0.5)
        term.child.send(ENTER)
        deadline = time.monotonic() + 1.0
        with contextlib.suppress(OSError, pexpect.EOF):  # raised once the REPL is gone
            while time.monotonic() < deadline:
                term.child.send(CTRL_C)
                term.pump(0.003)
            term.pump(0.5)
        if not term.child.isalive():
            term.child.close()
            status, signal = term.child.exitstatus, term.child.signalstatus
            pytest.fail(f"Ctrl-C after Enter ended the REPL (status {status}, signal {signal})")
    term.child.send("so the cat" + ENTER)
    term.wait_for(lambda s: "continued: so the cat" in term.text(), "a line handled as usual afterwards")
    term.wait_for(lambda s: s.display[s.cursor.y].startswith(">"), "the next prompt")
    term.pump(0.3)  # a Ctrl-D sent before the prompt takes the terminal is the terminal's, not ours
    term.child.send(CTRL_D)
    assert term.finish() == 0


def test_a_real_terminal_80x24_with_no_color(tiny_model_dir, tmp_path):
    term = Terminal(repl_command("--model", str(tiny_model_dir)), _env(tmp_path, TERM="xterm", NO_COLOR="1"))
    term.wait_for(lambda s: _prompt_line(s), "the first prompt")
    assert "Ctrl-D" in term.text()
    _type_and_pick(term, "the cat sat on ")
    term.wait_for(lambda s: " ms |" in "\n".join(s.display), "the toolbar with the suggestion time")
    term.child.send(ENTER + ENTER)  # insert the word and a space, then commit the line
    term.wait_for(lambda s: "next words:" in "\n".join(s.display), "the committed line's report")
    term.child.send(":k 2" + ENTER)
    term.wait_for(lambda s: "showing 2 suggestions" in "\n".join(s.display), ":k 2")
    term.child.send(CTRL_D)
    assert term.finish() == 0
    colors = re.findall(rb"\x1b\[[0-9;]*(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m", bytes(term.raw))
    assert not colors, f"colour escape sequences under NO_COLOR: {colors[:5]}"
    assert "the cat sat on" in (tmp_path / "state" / "history").read_text(encoding="utf-8")


def test_model_command_loads_with_the_backend_asked_for_on_the_command_line(tiny_model_dir, tmp_path):
    out = io.StringIO()
    lines = f":model\n:model {tiny_model_dir}\n:model\n"
    assert run(tiny_model_dir, input=io.StringIO(lines), output=out, state_dir=tmp_path, backend="ngram") == 0
    lines = out.getvalue().splitlines()
    described = [line.removesuffix(" (:model PATH loads another)") for line in lines if line.startswith("model: ")]
    assert len(described) == 3 and len(set(described)) == 1, described
    assert "gram" in described[0]


def test_the_menu_comes_even_when_the_text_changes_while_an_older_menu_is_computed(quiet_repl, monkeypatch):
    """prompt_toolkit computes one menu at a time and drops requests made meanwhile: text
    typed after Ctrl-C, while the old line's menu was still being computed, got none."""
    suggest = suggest_module.suggest

    def slow_for_the_old_line(predictor, text, k):
        if text == "the cat":
            time.sleep(0.5)
        return suggest(predictor, text, k)

    monkeypatch.setattr(suggest_module, "suggest", slow_for_the_old_line)
    with Driver(quiet_repl) as d:
        d.type("the cat")
        time.sleep(0.1)  # its menu is being computed
        d.type(CTRL_C + "so th")
        d.wait(lambda: d.buffer.text == "so th", "the new text")
        assert [c.text for c in d.menu()] == [p.word for p in quiet_repl.predictor.complete("so th", 5)]


_OLD_PASTED_BREAK = re.compile(r"[ \t]*(?:\r\n|[\r\n\x0b\x0c\x85\u2028\u2029])\s*")


@given(st.text(alphabet=" \t\n\r\x0b\x0cab\x01", max_size=40))
def test_a_paste_becomes_one_line_as_before_but_in_one_pass(text):
    """The same line as the old pattern gave, which backtracked on long runs of spaces
    (10,000 took 0.8 s); runs of whitespace are now each looked at once."""
    old = _OLD_PASTED_BREAK.sub(" ", text.strip("\r\n")).replace("\t", " ").replace("\x01", "")
    assert one_line(text) == old


def test_a_paste_of_a_hundred_thousand_spaces_is_one_line():
    assert one_line(" " * 100_000 + "x\n" + " " * 100_000 + "y") == " " * 100_000 + "x y"


# ---- the REPL learns from you (issue 14) ----

TAUGHT = "we deploy the Zorblax cluster"


@pytest.fixture
def learning_repl(tiny_predictor, tmp_path):
    return recording_repl(tiny_predictor, tmp_path, learn=True)


def _menu_words(d: Driver) -> list[str]:
    return [c.text.strip() for c in d.buffer.complete_state.completions]


def _watch_questions(repl: Repl) -> list[str]:
    """The questions the REPL asks (its answers are typed as a user would, once it asks)."""
    asked: list[str] = []
    ask = repl.ask

    def recording(question: str):
        asked.append(question)
        return repl_ask(question)

    repl_ask = ask
    repl.ask = recording
    return asked


def test_committed_lines_are_learned_and_a_later_suggestion_reflects_them(learning_repl, tiny_predictor, tmp_path):
    with Driver(learning_repl) as d:
        d.type("we deploy the ")
        assert "Zorblax" not in [c.text.strip() for c in d.menu()]
        d.type("\x15")  # Ctrl-U: an empty line again
        _commit_history(d, learning_repl, [TAUGHT, TAUGHT])
        d.type(":k 5" + ENTER)
        d.wait(lambda: "showing 5" in learning_repl.said[-1][1], ":k 5")
        d.type(TAUGHT + ENTER)
        d.wait(lambda: len(learning_repl.transcript) == 3, "the third commit")
        d.type("we deploy the ")
        d.wait(lambda: _menu_words(d)[0] == "Zorblax", "the learned word first in the menu")
        assert "from your text" in "".join(text for _, text in learning_repl.toolbar())
        d.type("\x15we deploy the zorb")
        d.wait(lambda: _menu_words(d) == ["Zorblax"], "the learned word completed with its case")
        d.type("\x15:learned" + ENTER)
        d.wait(lambda: "learned 3 lines" in learning_repl.said[-1][1], ":learned")  # not the :k command
    assert tiny_predictor.memory.messages == 0  # the REPL taught its own view, not the model it was given
    notices = [text for _, text in learning_repl.said if "--no-learn" in text]
    assert len(notices) == 1 and "learns from what you type" in notices[0]
    again = Repl(tiny_predictor, state_dir=tmp_path, write=lambda text, style: learning_repl.said.append((style, text)))
    again.learner, before = learning_repl.learner, len(learning_repl.said)
    again.start_learning()
    assert not any("--no-learn" in text for _, text in learning_repl.said[before:])  # said at the first start only


def test_with_learning_off_committed_lines_are_not_learned(quiet_repl):
    with Driver(quiet_repl) as d:
        _commit_history(d, quiet_repl, [TAUGHT, TAUGHT, TAUGHT])
        d.type("we deploy the ")
        assert "Zorblax" not in [c.text.strip() for c in d.menu()]
        d.type("\x15:learned" + ENTER)
        d.wait(lambda: "learning is off" in quiet_repl.said[-1][1], ":learned")
    assert quiet_repl.predictor.memory.messages == 0


def test_no_learn_on_the_command_line_turns_learning_off():
    from wordbot.cli import build_parser

    assert build_parser().parse_args(["repl", "--no-learn"]).no_learn is True
    assert build_parser().parse_args(["repl"]).no_learn is False


@pytest.mark.parametrize("answer", ["y", "no"])
def test_forget_asks_then_empties_the_memory_and_the_history_file(learning_repl, tmp_path, answer):
    with Driver(learning_repl) as d:
        asked = _watch_questions(learning_repl)
        _commit_history(d, learning_repl, [TAUGHT, TAUGHT])
        d.type(":forget" + ENTER)
        d.wait(lambda: asked, "the question")
        time.sleep(0.2)  # the question's own prompt starts reading keys
        d.type(answer + ENTER)
        d.wait(lambda: learning_repl.said[-1][1].startswith(("forgotten", "nothing forgotten")), "the answer")
        history = (tmp_path / "history").read_text(encoding="utf-8")
        memory = learning_repl.predictor.memory
        if answer == "y":
            assert memory.messages == 0 and history == ""
            d.type("we deploy the ")
            assert "Zorblax" not in [c.text.strip() for c in d.menu()]
        else:
            assert memory.messages == 2 and TAUGHT in history
    assert "[y/N]" in asked[0]


def _write_history(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"\n# 2026-12-01 10:00:00.000000\n+{line}\n" for line in lines), encoding="utf-8")


def test_the_history_file_is_learned_at_start_without_delaying_the_prompt(learning_repl, tmp_path):
    from wordbot.repl.learning import HISTORY_LINES, history_lines

    lines = [f"line {i} about the weather" for i in range(HISTORY_LINES + 500)] + [":k 3", TAUGHT, TAUGHT]
    _write_history(tmp_path / "history", lines)
    assert history_lines(tmp_path / "history")[-2:] == [TAUGHT, TAUGHT]
    assert len(history_lines(tmp_path / "history")) == HISTORY_LINES - 1  # the last 10,000, the command left out
    start = time.perf_counter()
    learning_repl.start_learning()
    # The prompt comes at once; the learning goes on in a thread (10,000 lines take a second or more).
    assert learning_repl.learner.thread.is_alive() and time.perf_counter() - start < 0.5
    learning_repl.learner.thread.join(60)
    memory = learning_repl.predictor.memory
    assert memory.messages == HISTORY_LINES - 1
    assert [p.word for p in learning_repl.predictor.complete("we deploy the zorb")] == ["Zorblax"]
    # The last 10,000 entries: ":k 3", the two taught lines, and "line 503" on; older lines are not learned.
    assert memory.count("503") == 1 and memory.count("502") == 0


def _learned_menu_in_a_real_terminal(tiny_model_dir, tmp_path, *flags: str) -> list[str]:
    state = tmp_path / "state"
    _write_history(state / "history", [TAUGHT] * 5)
    term = Terminal([*repl_command("--model", str(tiny_model_dir)), *flags], _env(tmp_path, TERM="xterm"))
    term.wait_for(lambda s: _prompt_line(s), "the first prompt")
    screen = term.text()
    time.sleep(1.0)  # the history is learned in the background meanwhile
    term.child.send("we deploy the ")
    rows = term.wait_for(_menu_rows, "the completion menu")
    term.child.send(CTRL_D)
    assert term.finish() == 0
    return [screen, *rows]


def test_a_real_terminal_learns_its_history_unless_no_learn(tiny_model_dir, tmp_path):
    screen, *rows = _learned_menu_in_a_real_terminal(tiny_model_dir, tmp_path / "on")
    assert "learns from what you type" in screen and "--no-learn" in screen
    assert rows[0].split()[0] == "Zorblax"
    screen, *rows = _learned_menu_in_a_real_terminal(tiny_model_dir, tmp_path / "off", "--no-learn")
    assert "learns from what you type" not in screen
    assert "Zorblax" not in " ".join(rows)


def test_a_model_loaded_with_model_is_taught_what_was_learned(learning_repl, tiny_model_dir):
    for line in [TAUGHT, ":k 3", TAUGHT, ""]:
        learning_repl.commit(line)
    assert learning_repl.predictor.memory.messages == 2
    learning_repl.command(f":model {tiny_model_dir}")
    learning_repl.learner.thread.join(30)
    assert learning_repl.predictor.memory.messages == 2
    assert [p.word for p in learning_repl.predictor.complete("we deploy the zorb")] == ["Zorblax"]


def test_suggestions_and_committed_lines_do_not_wait_for_the_history_being_learned(learning_repl, tmp_path):
    from wordbot.repl.learning import HISTORY_LINES

    _write_history(
        tmp_path / "history", [f"line {i} says that we deploy the cluster today" for i in range(HISTORY_LINES)]
    )
    with Driver(learning_repl) as d:  # the prompt starts learning the history, in the background
        d.type("we deploy the ")
        d.menu()
        assert learning_repl.learner.thread.is_alive()  # the menu came while the history was being learned
        d.type("\x15" + TAUGHT + ENTER)
        d.wait(lambda: learning_repl.transcript == [TAUGHT], "the commit")
        # Learned at once, not after the history: the line waits for the memory's lock at most,
        # held a few ms at a time (it is in the transcript just before it is learned: a wait).
        d.wait(lambda: learning_repl.predictor.memory.count("zorblax") == 1, "the committed line learned")
        assert learning_repl.learner.thread.is_alive()
        learning_repl.learner.thread.join(120)
        assert learning_repl.predictor.memory.messages == HISTORY_LINES + 1
