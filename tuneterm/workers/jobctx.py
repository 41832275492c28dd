"""What a job's child process sees: :class:`JobContext`.

It reads the frozen ``spec.toml``, writes events, the log and the status (atomically, with a
heartbeat thread), turns SIGTERM into ``should_stop``, holds per-device locks so that jobs
needing the same GPU queue behind each other, and writes ``output/artifact.json`` so that
``job:ID`` resolves. Torch-free itself, so the fake ``sleep`` kind runs without torch.

Under ``torchrun`` every rank builds a context; only rank 0 writes status, events and artifacts.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from tuneterm.core.fsutil import atomic_write_json
from tuneterm.core.jobs import store


class JobCancelled(Exception):
    """Raised by a kind (or while queued) when a stop was requested before any work was done."""


def finite(value):
    """``value`` as strict JSON allows: infinities and NaN (a diverged loss, a ruined model's
    perplexity) become null, in nested dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class JobContext:
    def __init__(self, job_dir: str | Path, resume: bool = False):
        self.job_dir = Path(job_dir).resolve()
        self.spec = store.read_spec(self.job_dir)
        self.job: dict = self.spec.get("job", {})
        self.config: dict = self.spec.get("config", {})
        self.id: str = self.job.get("id", self.job_dir.name)
        self.kind: str = self.job.get("kind", "")
        self.resume = resume
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.is_main = self.rank == 0
        self.checkpoints_dir = self.job_dir / "checkpoints"
        self.output_dir = self.job_dir / "output"
        self._stop = threading.Event()
        self._status_lock = threading.Lock()
        self._beat_thread: threading.Thread | None = None
        self._beat_done = threading.Event()
        self._device_locks: dict[str, int] = {}

    # --- stop requests ---------------------------------------------------------------------

    @property
    def should_stop(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, signum=None, _frame=None) -> None:
        if not self._stop.is_set():
            self._stop.set()
            name = signal.Signals(signum).name if signum else "request"
            self.log(f"stop requested ({name}): finishing the step and saving a checkpoint")

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # --- status ------------------------------------------------------------------------------

    def update_status(self, **fields) -> None:
        if not self.is_main:
            return
        with self._status_lock:
            store.update_status(self.job_dir, **fields)

    def set_state(self, state: str, **fields) -> None:
        self.update_status(state=state, heartbeat=time.time(), **fields)
        if state != "running":
            self.event(type="state", state=state, **{k: v for k, v in fields.items() if k in ("error", "note")})

    def heartbeat(self) -> None:
        self.update_status(heartbeat=time.time())

    def start_heartbeat(self, interval: float | None = None) -> None:
        interval = interval or float(os.environ.get("TUNETERM_HEARTBEAT_S", "5"))
        if not self.is_main or self._beat_thread:
            return

        def beat():
            while not self._beat_done.wait(interval):
                try:
                    self.heartbeat()
                except OSError:
                    pass

        self.heartbeat()
        self._beat_thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._beat_thread.start()

    def stop_heartbeat(self) -> None:
        self._beat_done.set()
        if self._beat_thread:
            self._beat_thread.join(timeout=5)

    # --- events and log ------------------------------------------------------------------

    def event(self, **fields) -> None:
        """Append one JSON object (with ``time``) to events.jsonl."""
        if not self.is_main:
            return
        record = {"time": round(time.time(), 3), **finite(fields)}
        line = json.dumps(record, default=_json_default, allow_nan=False) + "\n"
        with open(self.job_dir / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line)

    def log(self, msg: str) -> None:
        """A line in log.txt (the child's stdout goes there)."""
        if not self.is_main:
            return
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {msg}", flush=True)

    # --- devices -------------------------------------------------------------------------

    def wait_for_device(self, device: str) -> None:
        """Hold ``jobs/.locks/<device>.lock`` for the life of the process; queue while another job has it."""
        if not device or device in ("cpu", "auto") or device in self._device_locks:
            return
        name = re.sub(r"[^a-z0-9]+", "", device.lower()) or "device"
        folder = store.jobs_root() / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    waiting = True
                    holder = _read_holder(fd)
                    note = f"waiting for {device}" + (f" (in use by job {holder})" if holder else "")
                    self.log(note)
                    self.update_status(state="queued", note=note)
                    self.event(type="queue", waiting_for=device, holder=holder)
                if self.should_stop:
                    os.close(fd)
                    raise JobCancelled(f"cancelled while waiting for {device}")
                time.sleep(0.25)
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.id.encode(), 0)
        self._device_locks[device] = fd
        if waiting:
            self.log(f"{device} is free; starting")
            self.event(type="queue", acquired=device)
            self.update_status(state="running", note=None)

    def release_devices(self) -> None:
        for fd in self._device_locks.values():
            try:
                os.close(fd)  # closing the descriptor drops the flock
            except OSError:
                pass
        self._device_locks.clear()

    # --- output --------------------------------------------------------------------------

    def write_artifact(self, kind: str, path: str | Path, base: str | None = None,
                       quant: dict | None = None, **extra) -> Path:
        """Write ``output/artifact.json`` (see tuneterm.core.modelref.Artifact); ``path`` may be absolute."""
        path = Path(path)
        if path.is_absolute():
            try:
                path = path.resolve().relative_to(self.output_dir.resolve())
            except ValueError:
                pass
        manifest = {"kind": kind, "path": str(path), "job": self.id}
        if base:
            manifest["base"] = base
        if quant:
            manifest["quant"] = quant
        manifest.update(extra)
        target = self.output_dir / "artifact.json"
        if self.is_main:
            atomic_write_json(target, manifest)
        return target


def _read_holder(fd: int) -> str | None:
    try:
        data = os.pread(fd, 64, 0).decode("utf-8", "replace").strip()
        return data or None
    except OSError:
        return None


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
