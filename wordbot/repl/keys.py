"""The REPL's keys, grouped by purpose (menu, ghost text, history, editing, search, the
line), and the work-arounds that make prompt_toolkit suggest again where it would not:
after a key that changes the text without inserting, and after a request it dropped."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prompt_toolkit import search
from prompt_toolkit.application.current import get_app, get_app_or_none
from prompt_toolkit.auto_suggest import Suggestion
from prompt_toolkit.buffer import CompletionState
from prompt_toolkit.completion import CompleteEvent, Completion
from prompt_toolkit.filters import Condition, has_completions, has_selection, is_searching
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.basic import if_no_repeat
from prompt_toolkit.key_binding.bindings.named_commands import get_by_name
from prompt_toolkit.keys import Keys

from wordbot.repl.display import one_line
from wordbot.repl.suggest import SuggestionCompleter, accept_ghost

if TYPE_CHECKING:
    from prompt_toolkit.buffer import Buffer

Handler = Callable[[KeyPressEvent], None]

_FIRST_WORD_RE = re.compile(r"\s*\S+")
MENU_CHECK_SECONDS = 0.05

# Keys that change the text without inserting any: prompt_toolkit suggests again only
# after an insert, so these would leave the menu and the ghost text gone until the next letter.
_EDITING_KEYS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("backspace",), "backward-delete-char"),
    (("c-h",), "backward-delete-char"),
    (("delete",), "delete-char"),
    (("c-w",), "unix-word-rubout"),
    (("escape", "backspace"), "backward-kill-word"),
    (("escape", "d"), "kill-word"),
    (("c-u",), "unix-line-discard"),
    (("c-k",), "kill-line"),
    (("c-y",), "yank"),
    (("c-_",), "undo"),
)

# prompt_toolkit's other keys through history; they never move in the menu.
_HISTORY_KEYS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("pageup",), "previous-history"),
    (("pagedown",), "next-history"),
    (("c-up",), "previous-history"),
    (("c-down",), "next-history"),
    (("escape", "<"), "beginning-of-history"),
    (("escape", ">"), "end-of-history"),
)


# ---- suggesting again ----


async def refresh_menu(buffer: Buffer) -> None:
    """Open the menu for the buffer's text as it stands, as typing it would have.

    Not `Buffer.start_completion`: prompt_toolkit drops that request while a completion
    for earlier text is still running, and retries only when the text grew, so after a
    quick Up, Up (or a held Backspace) the menu stayed shut."""
    document = buffer.document
    if buffer.completer is None or not buffer.complete_while_typing():
        return
    event = CompleteEvent(completion_requested=True)
    completions = [c async for c in buffer.completer.get_completions_async(document, event)]
    state = buffer.complete_state
    if buffer.document != document or (state is not None and state.complete_index is not None):
        return  # the text moved on (its own request follows), or the user picked from a menu
    if show_menu(buffer, completions):
        buffer.on_completions_changed.fire()  # a redraw: no key press follows to cause one


def show_menu(buffer: Buffer, completions: list[Completion]) -> bool:
    """Open the menu on `completions` for the buffer's text as it stands (none: no menu)."""
    if not completions:
        return False
    buffer.complete_state = CompletionState(original_document=buffer.document, completions=completions)
    return True


def menu_after_a_dropped_request(buffer: Buffer, completer: Callable[[], SuggestionCompleter]) -> None:
    """After any change of the text, make sure its menu comes.

    prompt_toolkit runs one completion at a time and drops a request made meanwhile; it
    asks again afterwards only if the text merely grew. So typing just after Ctrl-C (or
    after a Right that accepted the ghost text) could leave the new text without a menu
    until the next key. A moment later, if the text is unchanged, has no menu and the
    completer in use was never asked about it, ask (a text it answered with nothing stays so)."""
    app = get_app_or_none()
    if app is None or not buffer.text.strip():
        return
    document = buffer.document

    async def check() -> None:
        await asyncio.sleep(MENU_CHECK_SECONDS)
        if buffer.document == document and buffer.complete_state is None and completer().answered != document:
            await refresh_menu(buffer)

    app.create_background_task(check())


def suggest_again(event: KeyPressEvent) -> None:
    """The menu and the ghost text for the current text, after a change that inserted
    nothing (prompt_toolkit suggests again only after an insert)."""
    buffer = event.current_buffer
    event.app.create_background_task(refresh_menu(buffer))
    refresh_ghost = getattr(buffer, "_async_suggester", None)
    if refresh_ghost is not None and buffer.auto_suggest is not None:
        event.app.create_background_task(refresh_ghost())


@dataclass
class Recall:
    """The line the last history key brought up, until it is edited.

    A recalled line gets its menu and ghost text as if typed. While it stands unedited
    and no menu entry is picked, Up and Down (Ctrl-P, Ctrl-N) keep moving through history
    rather than in that menu; Tab picks from it. At the oldest or newest line they stop."""

    text: str | None = None

    def text_changed(self, buffer: Buffer) -> None:
        self.text = None  # an edit, or a move through history (which sets it again)

    def browsing(self, buffer: Buffer) -> bool:
        state = buffer.complete_state
        picked = state is not None and state.complete_index is not None
        # Compared too: a new prompt resets the buffer without a text-changed event.
        return self.text is not None and self.text == buffer.text and not picked


# ---- the bindings, by purpose ----


def key_bindings(recall: Recall) -> KeyBindings:
    """Every key the REPL binds on top of prompt_toolkit's Emacs defaults."""
    bindings = KeyBindings()
    _menu_keys(bindings)
    _ghost_keys(bindings)
    _history_keys(bindings, recall)
    _editing_keys(bindings)
    _search_keys(bindings, recall)
    _line_keys(bindings)
    return bindings


@Condition
def _ghost_available() -> bool:
    buffer = get_app().current_buffer
    return bool(buffer.suggestion and buffer.suggestion.text and buffer.document.is_cursor_at_the_end)


@Condition
def _completion_selected() -> bool:
    state = get_app().current_buffer.complete_state
    return bool(state and state.current_completion)


def _menu_keys(bindings: KeyBindings) -> None:
    @bindings.add("tab")
    def _select(event: KeyPressEvent) -> None:
        "Open the menu on its first entry, or move to the next one."
        buffer = event.current_buffer
        if buffer.complete_state and buffer.complete_state.completions:
            buffer.complete_next()
            return
        # Asked for here and now (a millisecond): prompt_toolkit's background completion
        # drops the request while one for older text is still running, and Tab is lost.
        if buffer.completer is None:
            return
        completions = list(buffer.completer.get_completions(buffer.document, CompleteEvent(completion_requested=True)))
        if show_menu(buffer, completions):
            buffer.go_to_completion(0)

    @bindings.add("enter", filter=_completion_selected)
    def _insert(event: KeyPressEvent) -> None:
        "Keep the selected entry (already in the text) and add a space for the next word."
        buffer = event.current_buffer
        buffer.complete_state = None
        if buffer.document.text_after_cursor[:1].isspace():
            buffer.cursor_position += 1  # a word picked mid-line: step over the space already there
            suggest_again(event)
        else:
            buffer.insert_text(" ")

    @bindings.add("escape", filter=has_completions)
    def _close_menu(event: KeyPressEvent) -> None:
        "Close the menu and go back to the text as typed."
        event.current_buffer.cancel_completion()


def _ghost_keys(bindings: KeyBindings) -> None:
    @bindings.add("right", filter=_ghost_available)
    @bindings.add("c-f", filter=_ghost_available)
    @bindings.add("c-e", filter=_ghost_available)
    def _accept(event: KeyPressEvent) -> None:
        "Accept the ghost text, with the word being typed as the menu writes it."
        buffer = event.current_buffer
        accept_ghost(buffer, buffer.suggestion.text)

    @bindings.add("escape", "f", filter=_ghost_available)
    @bindings.add("c-right", filter=_ghost_available)
    def _accept_word(event: KeyPressEvent) -> None:
        "Accept one word of the ghost text; the rest stays as ghost."
        buffer = event.current_buffer
        ghost = buffer.suggestion.text
        word = _FIRST_WORD_RE.match(ghost).group()
        accept_ghost(buffer, word)
        rest = ghost[len(word) :]
        # Set after the insert (which clears it) so the rest shows without a model call.
        buffer.suggestion = Suggestion(rest) if rest.strip() else None


def _through_history(recall: Recall, move: Handler) -> Handler:
    """`move`, and when it brought up another line of history, that line as recalled."""

    def handler(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        index = buffer.working_index
        move(event)
        if buffer.working_index != index:  # another line of history
            recall.text = buffer.text
            if buffer.text.strip():  # as if typed; a blank line, as at a fresh prompt, gets none
                suggest_again(event)

    handler.__doc__ = f"{move.__doc__} A recalled line gets its menu and ghost text."
    return handler


def _history_keys(bindings: KeyBindings, recall: Recall) -> None:
    def up(event: KeyPressEvent) -> None:
        "Up in the menu, else back through history; on a recalled line, back through history."
        buffer = event.current_buffer
        if recall.browsing(buffer):
            buffer.history_backward(count=event.arg)  # not auto_up: that moves in the menu
        else:
            buffer.auto_up(count=event.arg)

    def down(event: KeyPressEvent) -> None:
        "Down in the menu, else forward through history; on a recalled line, forward through history."
        buffer = event.current_buffer
        if recall.browsing(buffer):
            buffer.history_forward(count=event.arg)
        else:
            buffer.auto_down(count=event.arg)

    for key in ("up", "c-p"):
        bindings.add(key, filter=~is_searching)(_through_history(recall, up))
    for key in ("down", "c-n"):
        bindings.add(key, filter=~is_searching)(_through_history(recall, down))
    for keys, command in _HISTORY_KEYS:
        bindings.add(*keys, filter=~has_selection)(_through_history(recall, _named(command)))


def _named(command: str) -> Handler:
    def handler(event: KeyPressEvent) -> None:
        get_by_name(command).call(event)

    handler.__doc__ = f"{command}."
    return handler


def _edit_and_suggest_again(command: str) -> Handler:
    def handler(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        before = buffer.text
        get_by_name(command).call(event)
        if buffer.text != before:
            suggest_again(event)

    handler.__doc__ = f"{command}, then suggest again for the text left."
    return handler


def _editing_keys(bindings: KeyBindings) -> None:
    for keys, command in _EDITING_KEYS:
        # Undo saves no state of its own (else it would undo itself); a run of deletions is one step.
        save_before = (lambda event: False) if command == "undo" else if_no_repeat
        bindings.add(*keys, filter=~has_selection, save_before=save_before)(_edit_and_suggest_again(command))

    @bindings.add(Keys.BracketedPaste)
    def _paste(event: KeyPressEvent) -> None:
        "Paste as one line: line breaks and tabs become spaces, control characters go."
        event.current_buffer.insert_text(one_line(event.data))


def _search_keys(bindings: KeyBindings, recall: Recall) -> None:
    @bindings.add("enter", filter=is_searching)
    @bindings.add("escape", filter=is_searching, eager=True)
    @bindings.add("up", filter=is_searching)
    @bindings.add("down", filter=is_searching)
    @bindings.add("left", filter=is_searching)
    @bindings.add("right", filter=is_searching)
    def _accept_search(event: KeyPressEvent) -> None:
        "End a Ctrl-R (Ctrl-S) search on its match: the line as Up recalls one, with its suggestions."
        target = event.app.layout.search_target_buffer_control
        search.accept_search()
        if target is None:
            return
        buffer = target.buffer
        buffer.cursor_position = len(buffer.text)  # where typing goes on, and the ghost text shows
        recall.text = buffer.text  # Up and Down go on through history from the match
        if buffer.text.strip():
            suggest_again(event)  # accept_search gave the line back its focus: the event's buffer


def _line_keys(bindings: KeyBindings) -> None:
    @bindings.add("c-c")
    @bindings.add("<sigint>")
    def _clear(event: KeyPressEvent) -> None:
        "Clear the line."
        event.current_buffer.reset()

    @bindings.add("c-d")
    def _exit(event: KeyPressEvent) -> None:
        "Exit, whatever is on the line."
        event.app.exit(exception=EOFError)
