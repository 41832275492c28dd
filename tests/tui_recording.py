"""RecordingApp: the workbench, keeping every notification it shows (for Pilot tests); and
``until``, which lets the app run until a condition holds.

Textual keeps its own list privately; this records at the public door instead: every
``notify`` (screens and widgets call ``self.notify``, which goes to ``App.notify``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneterm.tui.app import TunetermApp


@dataclass(frozen=True)
class Note:
    message: str
    title: str
    severity: str


class RecordingApp(TunetermApp):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.notes: list[Note] = []

    def notify(self, message: str, *, title: str = "", severity="information", timeout=None, markup=True) -> None:
        self.notes.append(Note(str(message), str(title), str(severity)))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


async def until(pilot, predicate, tries: int = 300, step: float = 0.05) -> bool:
    """Let the app run (``step`` seconds at a time, at most ``tries`` times) until ``predicate()``
    holds; False if it never did. Workers finish in their own time: poll, never one pause."""
    for _ in range(tries):
        await pilot.pause(step)
        if predicate():
            return True
    return False
