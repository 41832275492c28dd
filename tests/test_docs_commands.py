"""Every `$ ` command in a ``console`` block of README.md and docs/*.md runs and exits as the page
says (0, or the code under a following `$ echo $?`). Each page runs in document order in a fresh
workspace and a fresh working directory that holds the checkout's sample_data/, evals/, recipes/,
benchmarks/ and scripts/, with `tuneterm` and `python` on PATH meaning this checkout. README's
"A first session" is walked by tests/test_wheel_install.py (from an installed wheel), not here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import OFFLINE_ENV, SHARED_MODELS
from tests.docs_commands import REPO, console_commands, pages

FIRST_SESSION = "A first session"  # README's, walked by tests/test_wheel_install.py
LINKED = ("sample_data", "evals", "recipes", "benchmarks", "scripts")


def _page_commands(page: Path):
    commands = console_commands(page)
    if page.name == "README.md":
        commands = [c for c in commands if c.section != FIRST_SESSION]
    return commands


PAGES = [p for p in pages() if _page_commands(p)]


def _workdir(root: Path) -> tuple[Path, dict[str, str]]:
    work, bin_dir = root / "work", root / "bin"
    work.mkdir()
    bin_dir.mkdir()
    for name in LINKED:
        (work / name).symlink_to(REPO / name)
    (bin_dir / "tuneterm").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tuneterm.cli "$@"\n')
    (bin_dir / "tuneterm").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TUNETERM_") and k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(OFFLINE_ENV, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
               TUNETERM_HOME=str(root / "workspace"), TUNETERM_CONFIG=str(root / "config.toml"),
               TUNETERM_MODELS_DIR=str(SHARED_MODELS), COLUMNS="100")
    return work, env


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_the_page_s_commands_run_as_written(page, tmp_path):
    work, env = _workdir(tmp_path)
    for command in _page_commands(page):
        try:
            done = subprocess.run(["bash", "-c", command.command], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=600, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command.where()}\n  did not finish in 600 s: show it in a ```text block, or "
                        "use its --dry-run/--check form")
        assert done.returncode == command.expected_exit, (
            f"{command.where()}\n  exited {done.returncode}, the page says {command.expected_exit}"
            f"\n--- stdout (end)\n{done.stdout[-1500:]}\n--- stderr (end)\n{done.stderr[-1500:]}")
