"""How the workbench shows an error: a notification with the title, the facts and the hint.

Expected errors are :class:`~tuneterm.core.errors.TunetermError`; anything else is shown too
(the type and message, and where the full traceback went) instead of crashing the app.
"""

from __future__ import annotations

import logging
import traceback

from tuneterm.core.errors import TunetermError

log = logging.getLogger("tuneterm.tui")


def describe(exc: BaseException) -> tuple[str, str]:
    """(title, body) for a notification about ``exc``."""
    if isinstance(exc, TunetermError):
        lines = [f"{label}: {value}" for label, value in exc.facts]
        if exc.hint:
            lines.append(f"hint: {exc.hint}")
        return exc.title, "\n".join(lines) or exc.title
    log.error("unexpected error in the workbench\n%s", "".join(traceback.format_exception(exc)))
    return f"unexpected {type(exc).__name__}", f"{exc}\nhint: this is a bug in tuneterm; please report it"
