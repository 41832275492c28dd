"""The tuneterm workbench: one Textual app whose screens are modes (1-7 or F1-F7).

Only textual and the light core are imported here (tests/test_startup.py checks it); each
screen's module is imported when its mode is first opened (see navigation.py).
"""

from __future__ import annotations

from pathlib import Path

from textual import events, on, work
from textual.app import App
from textual.binding import Binding
from textual.message import Message

from tuneterm.tui.palette import WorkbenchCommands
from tuneterm.tui.errors import describe
from tuneterm.tui.job_watch import JobsSeen, JobWatcher
from tuneterm.tui.navigation import BY_MODE, PLACES, screen_factory


def _goto_bindings() -> list[Binding]:
    return [
        Binding(f"{p.key},f{p.key}", f"goto('{p.mode}')", p.title, show=False, id=f"goto.{p.mode}")
        for p in PLACES
    ]


class TunetermApp(App):
    TITLE = "tuneterm"
    SUB_TITLE = "fine-tuning workbench"
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses live elsewhere
    MODES = {p.mode: screen_factory(p) for p in PLACES}
    DEFAULT_MODE = "datasets"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    BINDINGS = [Binding("q", "quit", "Quit", show=False, id="quit"), *_goto_bindings()]

    class KeymapLoaded(Message):
        def __init__(self, keymap: dict[str, str], warnings: list[str] | None = None) -> None:
            super().__init__()
            self.keymap = keymap
            self.warnings = warnings or []

    def __init__(self, start: str | None = None) -> None:
        if start == "auto":  # the start_screen setting: Chat once a tuned job has finished
            from tuneterm.core.chat_lineup import start_screen
            from tuneterm.core.settings import get_settings

            start = start_screen(get_settings().start_screen)
        if start in BY_MODE:
            self.DEFAULT_MODE = start  # the first screen built is the one asked for, not Datasets
        super().__init__()
        self._start = start if start in BY_MODE else None
        self.first_frame_drawn = False  # True once the first frame is on the terminal
        self._after_paint: list = []
        self.job_watch = JobWatcher(self)  # screens subscribe to it (tuneterm.tui.job_watch)

    class JobsRead(Message):
        def __init__(self, seen: JobsSeen) -> None:
            super().__init__()
            self.seen = seen

    def on_mount(self) -> None:
        if self._start and self._start != self.current_mode:
            self.switch_mode(self._start)
        self.after_first_paint(self._load_keymap)
        self.after_first_paint(self._watch_jobs)

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs-watch")
    def _watch_jobs(self) -> None:
        from textual.worker import get_current_worker

        from tuneterm.core.settings import get_settings

        worker = get_current_worker()
        interval = max(0.2, float(get_settings().job_poll_seconds))
        self.job_watch.run(interval, lambda seen: self.post_message(self.JobsRead(seen)),
                           lambda: worker.is_cancelled)

    @on(JobsRead)
    def _jobs_read(self, event: JobsRead) -> None:
        self.job_watch.signal.publish(event.seen)

    def after_first_paint(self, callback) -> None:
        """Run ``callback`` once the first frame is drawn (now, if it is).

        Screens start their workers through this: a thread that imports pydantic or reads the
        workspace while the first frame is being built would compete with it for the GIL.
        """
        if self.first_frame_drawn:
            self.call_later(callback)
        else:
            self._after_paint.append(callback)

    @on(events.Ready)
    def _first_frame_drawn(self) -> None:
        self.first_frame_drawn = True
        waiting, self._after_paint = self._after_paint, []
        for callback in waiting:
            self.call_later(callback)

    @on(events.DescendantFocus)
    def _browser_text_keys(self, event: events.DescendantFocus) -> None:
        if self.is_web:  # ctrl+w would close the browser's tab: text fields delete a word on alt+backspace
            from tuneterm.tui.keymap import browser_text_keys

            browser_text_keys(event.widget)

    @work(thread=True, exit_on_error=False, group="keymap")
    def _load_keymap(self) -> None:
        from tuneterm.tui.keymap import browser_kept_warnings, user_keymap

        keymap = user_keymap()
        if keymap:
            warnings = browser_kept_warnings(keymap) if self.is_web else []
            self.post_message(self.KeymapLoaded(keymap, warnings))

    @on(KeymapLoaded)
    def _apply_keymap(self, event: KeymapLoaded) -> None:
        self.update_keymap(event.keymap)
        for warning in event.warnings:
            self.notify(warning, severity="warning", timeout=10)

    def action_goto(self, mode: str) -> None:
        if mode in BY_MODE and mode != self.current_mode:
            self.switch_mode(mode)
            self.call_after_refresh(self._focus_content)

    def _focus_content(self) -> None:
        """On arrival a screen's content has focus, never a field (the number keys must not type).
        Not on every resume: closing a dialog gives the focus back to where it was."""
        focus = getattr(self.screen, "focus_content", None)
        if focus is not None:
            focus()

    def report_error(self, exc: BaseException) -> None:
        """Show ``exc`` as a notification (title, facts, hint); never raise."""
        title, body = describe(exc)
        self.notify(body, title=title, severity="error", timeout=12)

    def on_unmount(self) -> None:
        import sys

        self.job_watch.stop()

        client = sys.modules.get("tuneterm.tui.mask_client")  # only if a screen started one
        if client is not None:
            client.close_all()
