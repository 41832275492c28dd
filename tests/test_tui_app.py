"""The workbench shell: screens by number and function keys, the command palette, errors, keymap."""

from __future__ import annotations

from tuneterm.core.errors import DatasetError
from tui_recording import RecordingApp
from tuneterm.tui.navigation import PLACES


async def test_number_and_function_keys_switch_screens():
    app = RecordingApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.current_mode == "datasets"
        assert type(app.screen).__name__ == "DatasetsScreen"
        await pilot.press("4")
        await pilot.pause()
        assert app.current_mode == "jobs" and type(app.screen).__name__ == "JobsScreen"
        await pilot.press("f3")
        await pilot.pause()
        assert app.current_mode == "train" and type(app.screen).__name__ == "TrainScreen"
        # Typing a digit into a focused input types it; it does not switch screens.
        app.screen.query_one("#train-model").focus()
        await pilot.press("5")
        assert app.current_mode == "train"
        await pilot.press("f5")
        await pilot.pause()
        assert app.current_mode == "quantize" and type(app.screen).__name__ == "QuantizeScreen"
        await pilot.press("f6")  # the model field has focus: "6" would be typed into it
        await pilot.pause()
        assert app.current_mode == "evals" and type(app.screen).__name__ == "EvalsScreen"
        # Escape leaves the variants field; then the number keys switch screens again.
        field = app.screen.query_one("#evals-models")
        field.focus()
        await pilot.pause()
        before = field.value
        await pilot.press("escape", "4")
        await pilot.pause()
        assert app.current_mode == "jobs" and field.value == before
        await pilot.press("f6")
        await pilot.pause()
        await pilot.press("f7")
        await pilot.pause()
        assert app.current_mode == "chat"
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running


async def test_palette_lists_screens_and_the_current_screens_actions():
    from tuneterm.tui.palette import WorkbenchCommands

    app = RecordingApp(start="jobs")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        provider = WorkbenchCommands(app.screen)
        names = [name for name, _run, _help in provider._commands()]
        for place in PLACES:
            assert f"Go to {place.title}" in names
        assert "Jobs: Cancel" in names and "Jobs: Resume" in names and "Jobs: Artifact" in names
        helps = {name: help_text for name, _run, help_text in provider._commands()}
        assert "id jobs.cancel" in helps["Jobs: Cancel"]
        # Through the real palette: type, enter, and the command runs.
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to cost")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.current_mode == "cost"


async def test_errors_become_notifications_with_the_hint():
    app = RecordingApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.report_error(DatasetError("line 3: message 2 has role 'bot'", [("file", "x.jsonl")],
                                      "use one of system, user, assistant, tool"))
        app.report_error(ValueError("boom"))
        await pilot.pause()
        notes = list(app.notes)
        assert notes[0].title == "line 3: message 2 has role 'bot'"
        assert "file: x.jsonl" in notes[0].message and "hint: use one of" in notes[0].message
        assert notes[1].title == "unexpected ValueError" and "boom" in notes[1].message
        assert app.is_running


async def test_keymap_from_the_settings_file(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('[keymap]\n"goto.jobs" = "j"\n')
    monkeypatch.setenv("TUNETERM_CONFIG", str(config))
    app = RecordingApp()
    async with app.run_test(size=(80, 24)) as pilot:
        def goto_jobs_key() -> bool:  # the keymap is read in a worker after the first frame
            active = app.screen.active_bindings.get("j")
            return active is not None and active.binding.action == "goto('jobs')"

        for _ in range(100):
            await pilot.pause(0.05)
            if goto_jobs_key():
                break
        assert goto_jobs_key()
        await pilot.press("j")
        await pilot.pause()
        assert app.current_mode == "jobs"


async def test_number_keys_never_type_every_footer_quits_every_column_has_a_title():
    from textual.widgets import DataTable, Input, TextArea
    from textual.widgets._footer import FooterKey
    from textual.widgets._header import HeaderIcon

    from tui_recording import until

    by_key = {p.key: p.mode for p in PLACES}
    app = RecordingApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for key in "2345671" + "3527":
            await pilot.press(key)  # a field focused on arrival would take the digit instead
            assert await until(pilot, lambda: app.current_mode == by_key[key]), f"{key} typed instead of switching"
            await pilot.pause()
            screen = app.screen
            assert not isinstance(screen.focused, (Input, TextArea)), (key, screen.focused)
            footer = list(screen.query(FooterKey))
            assert footer[0].description == "Quit" and footer[0].key_display == "^q", key
            assert footer[0].region.right <= 80
            # the header icon draws in any monospace font (Textual's U+2B58 is an empty box in browsers)
            icon = str(screen.query_one(HeaderIcon).render()).strip()
            assert icon and all(ord(c) < 0x2300 for c in icon), (key, icon)
            for table in screen.query(DataTable):
                titles = [str(c.label).strip() for c in table.columns.values()]
                assert all(titles), (key, table.id, titles)
        assert not any(n.severity == "error" for n in app.notes), app.notes

        # Leaving from inside a field and coming back: the field does not get the focus back.
        chat_prompt = app.screen.query_one("#chat-prompt", Input)
        await pilot.press("i")
        assert app.screen.focused is chat_prompt
        await pilot.press("f1", "7")
        assert await until(pilot, lambda: app.current_mode == "chat")
        await pilot.pause()
        assert app.screen.focused is not chat_prompt and chat_prompt.value == ""
        await pilot.press("i", "h", "q")  # q types in the field; ^q quits from it
        assert chat_prompt.value == "hq" and app.is_running
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert not app.is_running
