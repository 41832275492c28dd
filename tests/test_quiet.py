"""Third-party warnings stay out of the terminal and job logs unless asked for (issue 15, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# What a job process does first (tuneterm.workers.run), then what its kinds import.
JOB_IMPORTS = "import tuneterm.workers.run; import bitsandbytes, peft, transformers; import warnings; " \
              "warnings.warn('a library deprecation', FutureWarning)"


def _run(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TUNETERM_DEBUG"}
    env.update(env_extra)
    done = subprocess.run([sys.executable, "-c", JOB_IMPORTS], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_job_processes_keep_library_chatter_out_of_the_log():
    loud = _run({"TUNETERM_DEBUG": "1"})
    if "trust_remote_code" not in loud and "deprecation" not in loud:
        pytest.skip("these library versions print nothing to quiet")
    quiet = _run({})
    assert "trust_remote_code" not in quiet  # never suggest enabling remote code
    assert "deprecation" not in quiet and quiet.strip() == ""


def test_verbose_flag_reaches_job_processes(monkeypatch):
    from tuneterm.core import quiet

    monkeypatch.delenv("TUNETERM_DEBUG", raising=False)
    assert quiet.install(True) is False and os.environ["TUNETERM_DEBUG"] == "1"  # children inherit it
    monkeypatch.delenv("TUNETERM_DEBUG")
    assert quiet.verbose() is False
