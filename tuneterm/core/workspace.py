"""The workspace: one folder with ``tuneterm.db``, ``datasets/``, ``models/``, ``jobs/``, ``evals/``.

Nothing here touches the disk at import time; :func:`workspace` creates the folders on
first use. The location is ``$TUNETERM_HOME``, else the settings file's ``home``, else
platformdirs' user data dir.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tuneterm.core.errors import RuntimeFailure

SUBDIRS = ("datasets", "models", "jobs", "evals", "conversations")


def home_path() -> Path:
    env = os.environ.get("TUNETERM_HOME")
    if env:
        return Path(env).expanduser().resolve()
    from tuneterm.core.settings import get_settings

    configured = get_settings().home
    if configured:
        return Path(configured).expanduser().resolve()
    from platformdirs import user_data_dir

    return Path(user_data_dir("tuneterm", appauthor=False))


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "tuneterm.db"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def models_dir(self) -> Path:
        env = os.environ.get("TUNETERM_MODELS_DIR")
        if env:
            return Path(env).expanduser().resolve()
        return self.root / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def evals_dir(self) -> Path:
        return self.root / "evals"

    @property
    def conversations_dir(self) -> Path:
        return self.root / "conversations"

    def ensure(self) -> "Workspace":
        try:
            for name in SUBDIRS:
                (self.root / name).mkdir(parents=True, exist_ok=True)
            self.models_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeFailure(
                "cannot create the workspace",
                [("path", str(self.root)), ("problem", exc.strerror or str(exc))],
                "set TUNETERM_HOME to a writable folder",
            ) from exc
        return self

    def size_bytes(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
        return total


def workspace(create: bool = True) -> Workspace:
    ws = Workspace(home_path())
    return ws.ensure() if create else ws
