"""The TUI's side of tuneterm.workers.mask_preview: one helper process per model, JSON lines.

Called only from thread workers (each request blocks until the answer). The process loads
the model's tokenizer once; switching models replaces it; the app closes it on exit.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading

from tuneterm.core.errors import TunetermError

STARTUP_TIMEOUT_S = 180.0  # the first start may convert the embedded model (~20 s on 2 cores)
REQUEST_TIMEOUT_S = 120.0

_lock = threading.Lock()
_current: "MaskClient | None" = None


def error_from(payload: dict) -> TunetermError:
    from tuneterm.core import errors

    cls = getattr(errors, str(payload.get("error", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, TunetermError)):
        cls = errors.RuntimeFailure
    facts = payload.get("facts") or {}
    return cls(str(payload.get("title", "the mask preview failed")), list(facts.items()), str(payload.get("hint", "")))


class MaskClient:
    def __init__(self, model: str) -> None:
        self.model = model
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self._stderr = None

    def _start(self) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+b")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuneterm.workers.mask_preview", "--model", self.model],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, bufsize=1,
        )
        hello = self._read(STARTUP_TIMEOUT_S)
        if "error" in hello:
            self.close()
            raise error_from(hello["error"])

    def _read(self, timeout: float) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            code = self.proc.poll()
            tail = self._stderr_tail()
            self.close()
            from tuneterm.core.errors import RuntimeFailure

            raise RuntimeFailure(
                "the token mask helper stopped" if code is not None else "the token mask helper did not answer",
                [("model", self.model), ("exit code", str(code))] + ([("stderr", tail)] if tail else []),
                "check that the model loads: `tuneterm chat MODEL --prompt hi`",
            )
        return json.loads(line)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            return lines[-1][:300] if lines else ""
        except (OSError, ValueError):
            return ""

    def request(self, payload: dict, timeout: float = REQUEST_TIMEOUT_S) -> dict:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            assert self.proc is not None and self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps(payload) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.close()
                self._start()
                self.proc.stdin.write(json.dumps(payload) + "\n")
                self.proc.stdin.flush()
            answer = self._read(timeout)
        if "error" in answer:
            raise error_from(answer["error"])
        return answer

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
                proc.terminate()
                proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def client_for(model: str) -> MaskClient:
    """The helper for ``model``, replacing the one for another model."""
    global _current
    with _lock:
        if _current is not None and _current.model != model:
            _current.close()
            _current = None
        if _current is None:
            _current = MaskClient(model)
        return _current


def close_all() -> None:
    global _current
    with _lock:
        if _current is not None:
            _current.close()
            _current = None
