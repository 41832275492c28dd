"""WorkbenchScreen: header, the nav bar, the screen's body, the footer; errors in one place.

Every screen's workers use ``exit_on_error=False``; a failed worker lands here and becomes a
notification with the error's hint (tuneterm.tui.errors), never a crash.
"""

from __future__ import annotations

from typing import ClassVar, Iterable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from tuneterm.tui.widgets.nav_bar import NavBar


class WorkbenchScreen(Screen):
    MODE: ClassVar[str] = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar(self.MODE, id="nav")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> Iterable[Widget]:  # pragma: no cover - overridden
        return ()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.report_error(event.worker.error)

    def report_error(self, exc: BaseException) -> None:
        self.app.report_error(exc)
