"""Optional back-ends: the core modules a screen needs, imported when the screen needs them.

Screens call :func:`load` from a worker (the first import of a core module can take more than
a frame) and show :class:`Missing` as a clear message when the module is not in this build,
so that the workbench always starts, whatever has landed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Missing:
    """A back-end module that could not be imported, and what to do instead."""

    module: str
    reason: str
    instead: str = ""

    def describe(self) -> str:
        text = f"{self.module} is not available in this build ({self.reason})."
        if self.instead:
            text += f"\n{self.instead}"
        return text


def load(module: str, instead: str = "") -> ModuleType | Missing:
    """Import ``module``; a missing module (not a broken one) becomes :class:`Missing`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module == missing or module.startswith(missing + ".") or missing.startswith("tuneterm"):
            return Missing(module, f"no module {missing}", instead)
        raise


def has(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False
