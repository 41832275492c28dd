"""No workbench key is one a browser keeps for itself (`tuneterm web`): every Binding of every screen,
modal and widget under tuneterm.tui, inherited ones included; and a remapped key that a browser keeps
is named in a warning when the workbench runs in a browser."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import tuneterm.tui
from tuneterm.tui.keymap import BROWSER_KEPT_KEYS, browser_kept, browser_kept_warnings

# Textual's own bindings that a browser keeps: horizontal paging in scroll views, and delete-a-word
# in text fields (in a browser ctrl+w closes the tab). Not ours to rebind; a new one fails below.
TEXTUAL_KEPT = {("page_left", "ctrl+pageup"), ("page_right", "ctrl+pagedown"),
                ("delete_left_word", "ctrl+w"), ("delete_word_left", "ctrl+w")}


def _classes():
    from textual.dom import DOMNode

    seen = set()
    for info in pkgutil.walk_packages(tuneterm.tui.__path__, "tuneterm.tui."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, DOMNode) and cls not in seen:
                seen.add(cls)
                yield cls


def test_browser_kept_normalises_binding_keys():
    assert browser_kept("n,ctrl+n") == ["ctrl+n"]
    assert browser_kept("shift+ctrl+T, ctrl+page_up") == ["shift+ctrl+T", "ctrl+page_up"]
    assert browser_kept("ctrl+o,ctrl+r,f2,t,n") == []
    assert {"ctrl+n", "ctrl+t", "ctrl+w", "ctrl+tab"} <= set(BROWSER_KEPT_KEYS)


def test_no_binding_uses_a_key_the_browser_keeps():
    from tuneterm.tui.app import TunetermApp
    from tuneterm.tui.screens.cost import CostScreen
    from tuneterm.tui.screens.import_modal import ImportModal

    classes = list(_classes())
    assert {TunetermApp, CostScreen, ImportModal} <= set(classes)  # the walk reaches screens and modals
    ours, textuals = [], []
    for cls in classes:
        for owner in cls.__mro__:
            for binding in owner.__dict__.get("BINDINGS", []):
                keys = binding.key if hasattr(binding, "key") else binding[0]
                action = binding.action if hasattr(binding, "action") else binding[1]
                for key in browser_kept(keys):
                    if owner.__module__.startswith("tuneterm"):
                        ours.append(f"{cls.__name__} ({owner.__module__}.{owner.__name__}): {key} -> {action}")
                    elif (action, key) not in TEXTUAL_KEPT:
                        textuals.append(f"{cls.__name__} ({owner.__module__}.{owner.__name__}): {key} -> {action}")
    assert ours == [], "keys a browser keeps for itself:\n" + "\n".join(ours)
    assert textuals == [], "new Textual bindings a browser keeps:\n" + "\n".join(textuals)


def test_warnings_name_the_remapped_keys_a_browser_keeps():
    assert browser_kept_warnings({"goto.jobs": "j", "cost.model": "ctrl+n"}) == [
        "keymap: cost.model = 'ctrl+n': ctrl+n never reaches the page in a browser; pick another key"]


async def test_a_browser_kept_remap_warns_only_in_a_browser(tmp_path, monkeypatch):
    from tui_recording import RecordingApp, until

    config = tmp_path / "config.toml"
    config.write_text('[keymap]\n"goto.jobs" = "ctrl+t"\n')
    monkeypatch.setenv("TUNETERM_CONFIG", str(config))
    for web in (False, True):
        monkeypatch.setattr(RecordingApp, "is_web", property(lambda self, web=web: web))
        app = RecordingApp()
        async with app.run_test(size=(80, 24)) as pilot:
            assert await until(pilot, lambda: "ctrl+t" in app.screen.active_bindings)  # applied either way
            await pilot.pause(0.1)
            warned = [n.message for n in app.notes if "never reaches the page" in n.message]
            assert warned == (["keymap: goto.jobs = 'ctrl+t': ctrl+t never reaches the page in a browser; "
                               "pick another key"] if web else [])


async def test_in_a_browser_text_fields_delete_a_word_on_alt_backspace_not_ctrl_w(monkeypatch):
    # Textual's Input and TextArea delete a word on ctrl+w, which closes a browser's tab (TEXTUAL_KEPT);
    # under `tuneterm web` they take and show alt+backspace (xterm.js sends it as ESC DEL, which Textual
    # reads as ctrl+w: that entry stays, shown as alt+backspace).
    from textual.widgets import Input, TextArea

    from tui_recording import RecordingApp, until

    def shown_keys(app, action: str) -> set[str]:
        """The keys the keys panel lists for ``action`` (a binding's key_display, else its key)."""
        return {b.binding.key_display or b.binding.key for b in app.screen.active_bindings.values()
                if b.binding.action == action}

    def text(field) -> str:
        return field.value if isinstance(field, Input) else field.text

    for web in (True, False):
        monkeypatch.setattr(RecordingApp, "is_web", property(lambda self, web=web: web))
        app = RecordingApp(start="cost")
        async with app.run_test(size=(100, 30)) as pilot:
            assert await until(pilot, lambda: app.screen.query("#cost-dataset"))
            await app.screen.mount(TextArea(id="notes"))
            for field, action in ((app.screen.query_one("#cost-dataset", Input), "delete_left_word"),
                                  (app.screen.query_one("#notes", TextArea), "delete_word_left")):
                field.focus()
                await pilot.pause()
                if isinstance(field, Input):
                    field.value = ""
                    field.insert_text_at_cursor("one two three")
                else:
                    field.insert("one two three")
                keys = shown_keys(app, action)
                if web:
                    assert "alt+backspace" in keys and not [k for k in keys if browser_kept(k)], keys
                    await pilot.press("alt+backspace")
                    assert text(field) == "one two "
                    await pilot.press("ctrl+w")  # what the page's terminal sends for alt+backspace
                    assert text(field) == "one "
                else:  # in a terminal the fields keep Textual's keys
                    assert "ctrl+w" in keys, keys
