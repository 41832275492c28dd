"""What a job's child process sees: :class:`JobContext`.

It reads the frozen ``spec.toml``, writes events, the log and the status (atomically, with a
heartbeat thread), turns SIGTERM into ``should_stop``, holds device slots (``core/jobs/slots.py``)
so that jobs needing the same device queue behind each other, and writes ``output/artifact.json`` so that
``job:ID`` resolves. Torch-free itself, so the fake ``sleep`` kind runs without torch.

Under ``torchrun`` every rank builds a context; only rank 0 writes status, events and artifacts.
"""

from __future__ import annotations

import json
import math
import os
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
        self._slots: list = []  # tuneterm.core.jobs.slots.Held

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
        """SIGTERM and SIGINT set ``should_stop``. The launcher starts the child with SIGTERM blocked
        (``launcher.unblock_term``), so a cancel sent before this point is delivered here, not lost."""
        from tuneterm.core.jobs.launcher import unblock_term

        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        unblock_term()

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

    def take_slots(self, devices: list[str]) -> None:
        """Hold a slot on each of ``devices`` for the life of the process (``tuneterm.core.jobs.slots``);
        the status stays ``queued`` with a note saying what the job waits for until then. Sets
        ``CUDA_VISIBLE_DEVICES`` to the GPUs taken."""
        from tuneterm.core.jobs import slots

        if not devices or os.environ.get(slots.HELD_ENV):
            return

        def waiting(note: str) -> None:
            self.log(note)
            self.update_status(state="queued", note=note)
            self.event(type="queue", waiting_for=note)

        try:
            held = slots.acquire(self.id, devices, on_wait=waiting, should_stop=lambda: self.should_stop)
        except slots.Cancelled as exc:
            raise JobCancelled(str(exc)) from None
        self._slots.append(held)
        if held.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, held.gpus))
        if held.devices:
            self.log(f"running on {', '.join(map(slots.describe, held.devices))}")
            self.event(type="queue", acquired=held.devices)
            self.update_status(note=None)

    def wait_for_device(self, device: str) -> None:
        """Queue for ``device`` unless this process already holds its slots (then its GPUs are
        ``CUDA_VISIBLE_DEVICES``, and ``cuda:N`` is the N-th of those)."""
        if device and device != "auto" and not self._slots:
            self.take_slots([device])

    def release_devices(self) -> None:
        for held in self._slots:
            held.release()
        self._slots.clear()

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


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
