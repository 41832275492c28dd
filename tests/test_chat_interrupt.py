"""Ctrl-C in `tuneterm chat` while a local model streams: a clean stop with exit 130, never an abort
("terminate called without an active exception", exit 134), and no library chatter on the terminal
(issue 15, items 5 and 6). A real process, a real SIGINT to its process group, the embedded model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO


def _interrupt_while_streaming(delay: float) -> tuple[int, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tuneterm", "chat", "smollm2-135m-instruct",
                             "Tell me a long story about a cat who learns to sail.", "-n", "256"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        first = proc.stdout.read(1)  # the stream has started: the decode loop is running
        assert first, proc.stderr.read()
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C: the whole group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, first + out, err


def test_ctrl_c_while_chat_streams_exits_130_without_an_abort(embedded_model_dir):
    for delay in (0.0, 0.4):  # right at the first token, and a few tokens in
        code, out, err = _interrupt_while_streaming(delay)
        assert code == 130, (code, out[-500:], err[-2000:])
        assert "terminate called" not in err and "Traceback" not in err, err
        assert "interrupted" in err
        assert "trust_remote_code" not in err and "Warning" not in err, err  # item 6: no library chatter
