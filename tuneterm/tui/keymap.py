"""Remapped keys from the settings file: a ``[keymap]`` table of binding id -> keys.

    [keymap]
    "quit" = "ctrl+q"
    "jobs.cancel" = "x"

The ids are the ones docs/workbench.md lists (and the command palette shows). Read in a worker:
the settings module pulls in pydantic.
"""

from __future__ import annotations

import tomllib

# Keys Chromium keeps for itself: a page (`tuneterm web`) never sees them, whatever it does. From
# Chromium's reserved commands (new window/tab, close tab/window, reopen tab, next/previous tab, quit),
# plus full screen and developer tools. No workbench binding may use one (tests/test_tui_keys.py).
BROWSER_KEPT_KEYS: tuple[str, ...] = (
    "ctrl+n", "ctrl+shift+n",  # new window, new incognito window
    "ctrl+t", "ctrl+shift+t",  # new tab, reopen the closed tab
    "ctrl+w", "ctrl+shift+w", "ctrl+f4",  # close the tab (ends the session), close the window
    "ctrl+tab", "ctrl+shift+tab", "ctrl+pageup", "ctrl+pagedown",  # next / previous tab
    "ctrl+shift+q",  # quit the browser
    "f11", "f12",  # full screen, developer tools
)


# Textual's text fields (Input, TextArea) delete the word left of the cursor on ctrl+w, which a browser
# keeps: it closes the tab and ends the session. In a browser the fields take and show alt+backspace
# instead. xterm.js (the page's terminal) sends ESC DEL for alt+backspace and Textual reads that as
# ctrl+w, so the ctrl+w entry stays, shown as alt+backspace: a real ctrl+w never reaches the page.
BROWSER_WORD_DELETE = "alt+backspace"
_WORD_DELETE_ACTIONS = ("delete_left_word", "delete_word_left")  # Input's, TextArea's


def browser_text_keys(widget) -> bool:
    """In a browser (``tuneterm web``): rebind ``widget``'s delete-a-word-left from ctrl+w to
    :data:`BROWSER_WORD_DELETE`, on the widget itself (its class is left alone). True if it had one."""
    from dataclasses import replace

    bindings = widget._bindings.key_to_bindings  # the widget's own copy of its class's bindings
    words = [b for b in bindings.get("ctrl+w", ()) if b.action in _WORD_DELETE_ACTIONS]
    if not words:
        return False
    shown = [replace(b, key_display=BROWSER_WORD_DELETE) for b in words]
    bindings["ctrl+w"] = shown  # what alt+backspace arrives as from xterm.js
    bindings[BROWSER_WORD_DELETE] = [replace(b, key=BROWSER_WORD_DELETE) for b in shown]
    return True


def _canonical(key: str) -> str:
    *mods, name = key.strip().lower().split("+")
    name = {"page_up": "pageup", "page_down": "pagedown"}.get(name, name)
    return "+".join([*sorted(set(mods)), name])


_KEPT = frozenset(_canonical(k) for k in BROWSER_KEPT_KEYS)


def browser_kept(keys: str) -> list[str]:
    """The keys of a binding's key list (``"n,ctrl+n"``) that a browser keeps for itself."""
    return [k.strip() for k in keys.split(",") if k.strip() and _canonical(k) in _KEPT]


def browser_kept_warnings(keymap: dict[str, str]) -> list[str]:
    """One line per remapped binding whose keys a browser keeps (shown under `tuneterm web`)."""
    return [f"keymap: {binding_id} = {keys!r}: {', '.join(kept)} never reaches the page in a browser; "
            "pick another key" for binding_id, keys in keymap.items() if (kept := browser_kept(keys))]


def user_keymap() -> dict[str, str]:
    from tuneterm.core.settings import config_path

    path = config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    table = data.get("keymap")
    if not isinstance(table, dict):
        return {}
    return {str(k): str(v) for k, v in table.items() if isinstance(v, str) and v.strip()}
