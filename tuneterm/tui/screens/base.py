"""WorkbenchScreen: header, the nav bar, the screen's body, the footer; errors in one place.

Every screen's workers use ``exit_on_error=False``; a failed worker lands here and becomes a
notification with the error's hint (tuneterm.tui.errors), never a crash.
"""

from __future__ import annotations

from typing import ClassVar, Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, Input, TextArea
from textual.worker import Worker, WorkerState

from tuneterm.tui.widgets.nav_bar import NavBar


SHORT_ROWS = 32


# The header's icon (it opens the command palette). Textual's default, U+2B58, is missing from most
# monospace fonts and draws as an empty box in the browser (`tuneterm web`); U+2261 is in WGL4, the
# set every Windows, macOS and Linux monospace font covers.
HEADER_ICON = "\u2261"


class WorkbenchScreen(Screen):
    MODE: ClassVar[str] = ""
    # What has focus when the screen is opened or comes back (a table, a scroll, the tabs):
    # never a text field, so the number keys switch screens and never type. Tab reaches the fields.
    CONTENT: ClassVar[str] = ""
    AUTO_FOCUS = ""  # CONTENT decides, on every arrival (Textual's only applies to the first)
    # In a text field the number keys type; Escape leaves the field so that 1-7 switch screens
    # again (F1-F7 always do). ^q quits from anywhere; it comes first in every footer.
    BINDINGS = [
        Binding("ctrl+q", "app.quit", "Quit", id="quit.anywhere", priority=True),
        Binding("escape", "leave_field", "Leave field", show=False, id="leave_field"),
    ]

    def compose(self) -> ComposeResult:
        yield Header(icon=HEADER_ICON)
        yield NavBar(self.MODE, id="nav")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> Iterable[Widget]:  # pragma: no cover - overridden
        return ()

    def on_mount(self) -> None:
        self.call_after_refresh(self.focus_content)

    def focus_content(self) -> None:
        """Focus the screen's content (CONTENT); nothing when it is not there (yet)."""
        found = self.query(self.CONTENT) if self.CONTENT else None
        self.set_focus(found.first() if found else None)

    def action_leave_field(self) -> None:
        if isinstance(self.focused, (Input, TextArea)):
            self.set_focus(None)

    def on_resize(self, event) -> None:
        # app.tcss gives "-short" screens (an 80x24 terminal) smaller tables, so forms stay visible
        self.set_class(event.size.height < SHORT_ROWS, "-short")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.report_error(event.worker.error)

    def report_error(self, exc: BaseException) -> None:
        self.app.report_error(exc)

    # --- jobs: one watcher for the app (tuneterm.tui.job_watch) -------------------------------------

    _jobs_callback = None
    _jobs_pending = None
    _jobs_error = ""

    def watch_jobs(self, callback) -> None:
        """Call ``callback(seen)`` with every read of the jobs folder while this screen is shown
        (a read that came while it was hidden is drawn when it comes back). Errors are reported
        here, once per distinct problem."""
        watcher = getattr(self.app, "job_watch", None)
        if watcher is None:  # another App (a test harness): no jobs
            return
        self._jobs_callback = callback
        watcher.subscribe(self, self._jobs_seen)

    def follow_jobs(self, *job_ids: str | None, log: bool = False) -> None:
        """Read the events (and log) of these jobs for this screen; replaces the last call."""
        watcher = getattr(self.app, "job_watch", None)
        if watcher is not None:
            watcher.follow(self, job_ids, log=log)

    def poke_jobs(self) -> None:
        watcher = getattr(self.app, "job_watch", None)
        if watcher is not None:
            watcher.poke()

    def _jobs_seen(self, seen) -> None:
        if not self.is_current:
            self._jobs_pending = seen
            return
        self._jobs_pending = None
        text = f"{seen.error_job or ''}: {seen.error}" if seen.error is not None else ""
        if text and text != self._jobs_error:  # once per distinct problem, not once a second
            self.report_error(seen.error)
        self._jobs_error = text
        if self._jobs_callback is not None:
            self._jobs_callback(seen)

    def on_screen_resume(self) -> None:
        if self._jobs_pending is not None:
            self._jobs_seen(self._jobs_pending)
        self.poke_jobs()

    def after_first_paint(self, callback) -> None:
        """Run ``callback`` once the app's first frame is drawn (see TunetermApp.after_first_paint)."""
        after = getattr(self.app, "after_first_paint", None)
        if after is None:  # another App (a test harness): the next refresh will do
            self.call_after_refresh(callback)
        else:
            after(callback)
