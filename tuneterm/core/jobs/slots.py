"""Device slots: how many jobs run at once on each device, first come first served, with no daemon.

A job process takes its slots before its work starts. For each device it needs it holds an OS lock
(``flock``) on one of the device's ``jobs.max_running`` slot files, ``jobs/.slots/<device>.<n>.lock``,
whose content names the holding job. The kernel drops the lock when the process exits or dies, so a
killed job never keeps a slot. Order comes from tickets: a waiting process holds a lock on its
ticket, ``jobs/.slots/queue/<time_ns>-<job>.ticket``, and takes a slot only when no live earlier
ticket asks for one of the same devices. A ticket whose file is not locked belongs to a dead
process and is removed.

Devices are ``cpu`` and ``cuda:N``; ``cuda:*`` asks for any one GPU. :func:`acquire` is torch-free:
the train command, the job child and sweeps all use it. The caller sets ``CUDA_VISIBLE_DEVICES``
from :attr:`Held.gpus` before CUDA starts.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from tuneterm.core.errors import UsageError

ANY_GPU = "cuda:*"
HELD_ENV = "TUNETERM_SLOTS_HELD"  # set for processes whose parent holds the job's slots (torchrun's ranks)
# Job kinds that compute on a device and so take a slot by default (others only when their spec
# names devices).
SLOT_KINDS = ("train", "sequential", "distill", "feature", "cls_head", "quantize", "eval")


class Cancelled(Exception):
    """The wait for a slot ended because a stop was requested."""


def slots_dir(jobs_root: Path | None = None) -> Path:
    if jobs_root is None:
        from tuneterm.core.jobs.store import jobs_root as root

        jobs_root = root()
    return Path(jobs_root) / ".slots"


def gpu_ids() -> list[int]:
    """The GPUs of this machine, torch-free: ``$TUNETERM_GPUS`` (a count) if set, else ``nvidia-smi -L``;
    limited to ``$CUDA_VISIBLE_DEVICES`` when that lists indexes."""
    env = os.environ.get("TUNETERM_GPUS")
    if env is not None and env.strip().isdigit():
        ids = list(range(int(env)))
    else:
        ids = _nvidia_smi_ids()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and all(v.strip().isdigit() for v in visible.split(",") if v.strip()):
        allowed = {int(v) for v in visible.split(",") if v.strip()}
        ids = [i for i in ids if i in allowed]
    return ids


@lru_cache(maxsize=1)
def _nvidia_smi_ids() -> list[int]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(m.group(1)) for m in re.finditer(r"^GPU (\d+):", out, re.M)]


def max_running() -> int:
    """``jobs.max_running`` from the settings: jobs at once per device (default 1)."""
    from tuneterm.core.settings import get_settings

    return max(1, int(get_settings().jobs.max_running))


def parse_gpus(text: str) -> list[str]:
    """``--gpus 0,1`` as devices (``["cuda:0", "cuda:1"]``); checked against this machine's GPUs."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items or not all(t.isdigit() for t in items) or len(set(items)) != len(items):
        raise UsageError("--gpus takes GPU indexes separated by commas", [("--gpus", str(text))],
                         "for example --gpus 0 or --gpus 0,1")
    have = gpu_ids()
    missing = [t for t in items if int(t) not in have]
    if missing:
        raise UsageError(f"no GPU {', '.join(missing)} on this machine", [("--gpus", str(text)),
                         ("GPUs here", ", ".join(map(str, have)) or "none")],
                         "leave --gpus out to use any free GPU (or the CPU)")
    return [f"cuda:{t}" for t in items]


def devices_for(gpus: str | None, nproc: int, kind: str) -> tuple[list[str], int]:
    """``--gpus`` and ``--nproc`` of a command as (devices for the spec, processes): ``--gpus 0,1``
    alone means two processes for a train job; [] leaves the choice to :func:`request_for`."""
    if not gpus:
        return [], nproc
    devices = parse_gpus(gpus)
    if nproc == 1 and len(devices) > 1 and kind == "train":
        nproc = len(devices)
    if len(devices) != nproc:
        raise UsageError("--gpus names one GPU per process", [("--gpus", gpus), ("--nproc", str(nproc))],
                         f"give {nproc} GPU index(es), or leave --nproc out")
    return devices, nproc


def request_for(kind: str, devices: list[str] | None, nproc: int = 1) -> list[str]:
    """The devices a job of ``kind`` waits for: those its spec names, else (for computing kinds) any
    ``nproc`` GPUs, or the CPU on a machine without one."""
    if devices:
        return [d for d in devices if d and d != "auto"]
    if kind not in SLOT_KINDS:
        return []
    return [ANY_GPU] * max(1, nproc) if gpu_ids() else ["cpu"]


def describe(device: str) -> str:
    if device == "cpu":
        return "the CPU"
    if device == ANY_GPU:
        return "a GPU"
    m = re.fullmatch(r"cuda:(\d+)", device)
    return f"GPU {m.group(1)}" if m else device


@dataclass
class Held:
    """The slots a process holds; :meth:`release` (or the process's end) frees them."""

    devices: list[str]
    fds: list[int] = field(default_factory=list)

    @property
    def gpus(self) -> list[int]:
        return [int(d.split(":", 1)[1]) for d in self.devices if re.fullmatch(r"cuda:\d+", d)]

    def release(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)  # closing the descriptor drops the flock
            except OSError:
                pass
        self.fds.clear()


def acquire(job_id: str, devices: list[str], *, root: Path | None = None,
            on_wait: Callable[[str], None] | None = None, should_stop: Callable[[], bool] | None = None,
            poll: float = 0.25) -> Held:
    """Block until ``job_id`` holds a slot on each of ``devices``, in ticket order.

    ``on_wait(note)`` is called whenever what the job waits for changes ("waiting for GPU 0: job
    ID"); ``should_stop()`` is polled and, when true, the wait ends with :class:`Cancelled`.
    """
    if not devices:
        return Held([])
    folder = slots_dir(root)
    queue = folder / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    wanted = _expand(devices)
    ticket_fd, ticket = _take_ticket(queue, job_id, devices)
    last_note = None
    try:
        while True:
            if should_stop and should_stop():
                raise Cancelled(f"cancelled while {last_note or 'waiting for a slot'}")
            ahead = _earlier_tickets(queue, ticket, wanted)
            if not ahead:
                held = _try_slots(folder, job_id, devices)
                if isinstance(held, Held):
                    return held
                note = held
            else:
                device = ANY_GPU if ANY_GPU in devices else ahead[0][0]
                tokens = {_token(d) for d in _expand([device])}
                users = [j for name, j in holders(root).items() if name.rsplit(".", 1)[0] in tokens]
                note = (f"waiting for {describe(device)}: " + (f"job {', '.join(users)}; " if users else "")
                        + f"{len(ahead)} queued ahead (first: job {ahead[0][1]})")
            if note != last_note and on_wait:
                on_wait(note)
            last_note = note
            time.sleep(poll)
    finally:
        try:
            ticket.unlink()
        except OSError:
            pass
        os.close(ticket_fd)


def _expand(devices: list[str]) -> set[str]:
    """Every concrete device a request may take (``cuda:*`` stands for all GPUs)."""
    out = set()
    for d in devices:
        if d == ANY_GPU:
            out.update(f"cuda:{i}" for i in gpu_ids())
        else:
            out.add(d)
    return out


def _take_ticket(queue: Path, job_id: str, devices: list[str]) -> tuple[int, Path]:
    """A locked ticket file. It is locked before it is renamed into the queue, so nobody sees it unlocked."""
    name = f"{time.time_ns():020d}-{job_id}.ticket"
    tmp = queue / f".{name}.{os.getpid()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"job": job_id, "devices": devices}).encode())
    os.replace(tmp, queue / name)
    return fd, queue / name


def _earlier_tickets(queue: Path, mine: Path, wanted: set[str]) -> list[tuple[str, str]]:
    """(device, job) of each live ticket before ``mine`` that wants one of the same devices, oldest first."""
    out = []
    for path in sorted(queue.glob("*.ticket")):
        if path.name >= mine.name:
            break
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its process is alive and waiting
                info = json.loads(os.pread(fd, 4096, 0) or b"{}")
                overlap = _expand(info.get("devices", [])) & wanted
                if overlap:
                    out.append((sorted(overlap)[0], info.get("job", "?")))
                continue
            path.unlink(missing_ok=True)  # nobody holds it: its process died while waiting
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
    return out


def _try_slots(folder: Path, job_id: str, devices: list[str]) -> Held | str:
    """Take a slot on each device, or none: the Held, or the note saying what is in the way."""
    held = Held([])
    limit = max_running()
    for device in devices:
        choices = [f"cuda:{i}" for i in gpu_ids()] if device == ANY_GPU else [device]
        choices = [c for c in choices if c not in held.devices]
        fd, holders = None, []
        for choice in choices:
            fd, holders = _lock_one(folder, choice, limit, job_id)
            if fd is not None:
                held.devices.append(choice)
                held.fds.append(fd)
                break
        if fd is None:
            held.release()
            busy = choices[0] if len(choices) == 1 else device
            return f"waiting for {describe(busy)}: " + (
                f"job {', '.join(holders)}" if holders else "all its slots are taken")
    return held


def _token(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", device.lower()) or "device"


def _lock_one(folder: Path, device: str, limit: int, job_id: str) -> tuple[int | None, list[str]]:
    token = _token(device)
    holders = []
    for n in range(limit):
        fd = os.open(folder / f"{token}.{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            if holder:
                holders.append(holder)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, job_id.encode(), 0)
        return fd, holders
    return None, holders


def holders(root: Path | None = None) -> dict[str, str]:
    """Which job holds each taken slot now (``{"cpu.0": job_id}``), for displays."""
    out = {}
    folder = slots_dir(root)
    for path in sorted(folder.glob("*.lock")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)  # free
        except BlockingIOError:
            out[path.name[:-5]] = os.pread(fd, 64, 0).decode("utf-8", "replace").strip()
        finally:
            os.close(fd)
    return out
