"""Runs tests/tmux_blind.sh (a blind round in the real workbench at 80x24) where tmux is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("tmux_blind.sh")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_blind_round():
    proc = subprocess.run(["bash", str(SCRIPT), sys.executable], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tmux blind: ok" in proc.stdout and "vote: 1" in proc.stdout
