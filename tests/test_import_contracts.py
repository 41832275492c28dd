"""The layer rules of docs/architecture.md as import-linter contracts ([tool.importlinter] in
pyproject.toml): core imports nothing above it, the TUI neither the commands nor the ML layer, core
and the TUI no ML library, commands not each other. tests/test_startup.py checks the run-time half."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout
