"""The job store: one folder per job under ``<workspace>/jobs/<id>/`` (torch-free).

    spec.toml       the resolved config, written before the child starts; frozen
    pid             JSON: pid, pgid and start time (psutil's create_time) of the child
    status.json     state, exit code, error summary, heartbeat; replaced atomically
    events.jsonl    one JSON object per logged step
    log.txt         human log (the child's stdout and stderr)
    checkpoints/    resumable state
    output/         the artifact (``output/artifact.json`` makes ``job:ID`` a model reference)

Listing rediscovers jobs from the folders: a job that says queued/running but whose process is
gone is shown (and recorded) as failed, so nothing shows "running" forever.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from tuneterm.core.errors import InputError, JobError, JobStateError, NotFoundError
from tuneterm.core.fsutil import atomic_write_json, atomic_write_text

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
_ID_RE = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def stale_seconds() -> float:
    """A live process whose heartbeat is older than this is reported as hung."""
    return float(os.environ.get("TUNETERM_JOB_STALE_S", "120"))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def jobs_root() -> Path:
    from tuneterm.core.workspace import workspace

    return workspace().jobs_dir


@dataclass
class JobInfo:
    id: str
    kind: str
    state: str
    dir: Path
    name: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    pid: int | None = None
    heartbeat: float | None = None
    last_event: dict = field(default_factory=dict)
    error: str | None = None
    exit_code: int | None = None
    note: str | None = None  # e.g. "waiting for cuda:0", "hung?"
    model_ref: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dir"] = str(self.dir)
        return d


# --- ids and paths -----------------------------------------------------------------------------


def new_id() -> str:
    """Sortable, short: ``20261127-183000-ab12`` (UTC time of creation + 4 random hex digits)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def job_dir(job_id: str) -> Path:
    return jobs_root() / job_id


def resolve_id(text: str, root: Path | None = None) -> str:
    """A full id, a unique prefix, the 4-digit suffix, or ``last``; raises NotFoundError."""
    text = (text or "").strip()
    if text.startswith("job:"):
        text = text[4:]
    root = jobs_root() if root is None else root
    ids = _all_ids(root)
    if text == "last" and ids:
        return ids[-1]
    if text in ids:
        return text
    matches = [i for i in ids if i.startswith(text) or i.endswith("-" + text)] if text else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError(
            f"job id {text!r} is ambiguous",
            [("matches", ", ".join(matches[:6]) + (" ..." if len(matches) > 6 else ""))],
            "give more of the id",
        )
    raise NotFoundError(f"no job {text!r} in this workspace", [("jobs folder", str(root))],
                        "see `tuneterm jobs ls`")


def _all_ids(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _ID_RE.match(p.name))


# --- spec and status ---------------------------------------------------------------------------


def config_toml(config: dict) -> str:
    """``config`` as the TOML a job's spec.toml holds (``--dry-run`` prints it)."""
    import tomli_w

    return tomli_w.dumps(_toml_clean(dict(config)))


def _toml_clean(value):
    """TOML has no null: drop None values (the recipe loader never produces them on purpose)."""
    if isinstance(value, dict):
        return {str(k): _toml_clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_clean(v) for v in value if v is not None]
    if isinstance(value, Path):
        return str(value)
    return value


def create_job(kind: str, config: dict, name: str | None = None, *, devices: list[str] | None = None,
               nproc: int = 1, rendezvous: dict | None = None) -> JobInfo:
    """Write ``jobs/<id>/spec.toml`` and a ``queued`` status; nothing is started."""
    import tomli_w

    if not _KIND_RE.match(kind or ""):
        raise InputError("a job kind is a lowercase word", [("kind", repr(kind))])
    root = jobs_root()
    root.mkdir(parents=True, exist_ok=True)
    while True:
        job_id = new_id()
        folder = root / job_id
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    for sub in ("checkpoints", "output"):
        (folder / sub).mkdir()
    job = {"id": job_id, "kind": kind, "created_at": now_iso(), "nproc": int(nproc),
           "devices": list(devices or [])}
    if name:
        job["name"] = name
    if rendezvous and int(rendezvous.get("nnodes", 1) or 1) > 1:  # torchrun across nodes
        job["rendezvous"] = {k: v for k, v in rendezvous.items() if v is not None}
    spec = {"job": job, "config": _toml_clean(dict(config))}
    header = f"# tuneterm job {job_id} ({kind}): the resolved config, frozen before the child started\n"
    atomic_write_text(folder / "spec.toml", header + tomli_w.dumps(spec))
    write_status(folder, {"state": "queued", "created_at": job["created_at"], "heartbeat": None})
    (folder / "events.jsonl").touch()
    (folder / "log.txt").touch()
    return get_job(job_id)


def read_spec(folder: Path) -> dict:
    try:
        return tomllib.loads((Path(folder) / "spec.toml").read_text())
    except FileNotFoundError as exc:
        raise NotFoundError("job has no spec.toml", [("folder", str(folder))]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError("job spec is damaged", [("file", str(Path(folder) / "spec.toml")),
                                                 ("problem", str(exc))]) from exc


def read_status(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "status.json").read_text())
    except (OSError, ValueError):
        return {"state": "queued"}


def write_status(folder: Path, status: dict) -> None:
    atomic_write_json(Path(folder) / "status.json", status)


@contextmanager
def status_lock(folder: Path, timeout: float = 10.0) -> Iterator[None]:
    """Held while a process reads, changes and writes ``status.json``: the job's child (heartbeats,
    progress, its final state), a ``cancel`` and the reconciler write the same file, and without
    it one writer's field (``cancel_requested``, the final state) could be lost to another's older
    copy. Readers need no lock (the file is replaced whole). A lock that cannot be had within
    ``timeout`` (a stuck holder) does not stop the write."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(Path(folder) / ".status.lock"))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def update_status(folder: Path, **fields) -> dict:
    with status_lock(folder):
        status = read_status(folder)
        status.update(fields)
        write_status(folder, status)
    return status


def read_pid(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / "pid").read_text())
    except (OSError, ValueError):
        return None


# --- process liveness ---------------------------------------------------------------------------


def process_create_time(pid: int) -> float | None:
    """When the process started (seconds since the epoch, from psutil), to tell a reused pid apart."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def pid_alive(pid: int | None, create_time: float | None = None) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone) and, given ``create_time``, is the same process.
    It never reaps: a caller holding the child's ``Popen`` (``train --foreground``) must still read its
    exit status."""
    import psutil

    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - float(create_time)) < 0.5
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # not ours to inspect: it exists
        return True


def job_alive(folder: Path) -> bool:
    info = read_pid(folder)
    return bool(info) and pid_alive(info.get("pid"), info.get("create_time"))


# --- listing ------------------------------------------------------------------------------------


def get_job(job_id: str) -> JobInfo:
    folder = job_dir(job_id)
    if not folder.is_dir():
        job_id = resolve_id(job_id)
        folder = job_dir(job_id)
    return _load(folder)


def list_jobs() -> list[JobInfo]:
    """Every job, oldest first; damaged folders are skipped."""
    out = []
    for job_id in _all_ids(jobs_root()):
        try:
            out.append(_load(job_dir(job_id)))
        except (NotFoundError, InputError):
            continue
    return out


def _load(folder: Path) -> JobInfo:
    spec = read_spec(folder)
    job = spec.get("job", {})
    status = _rediscover(folder, read_status(folder))
    pid_info = read_pid(folder) or {}
    info = JobInfo(
        id=folder.name, kind=job.get("kind", "?"), state=status.get("state", "queued"), dir=folder,
        name=job.get("name"), created_at=job.get("created_at"), started_at=status.get("started_at"),
        finished_at=status.get("finished_at"), pid=pid_info.get("pid"), heartbeat=status.get("heartbeat"),
        last_event=last_event(folder), error=status.get("error"), exit_code=status.get("exit_code"),
        note=status.get("note"),
    )
    if (folder / "output" / "artifact.json").is_file():
        info.model_ref = f"job:{folder.name}"
    return info


def _rediscover(folder: Path, status: dict) -> dict:
    """Turn a queued/running job whose process is gone into failed, or cancelled when a cancel was
    requested (and record it)."""
    if status.get("state") not in ACTIVE:
        return status
    pid_info = read_pid(folder)
    if pid_info is None:  # created, never launched (or the launcher is starting it right now)
        return status
    if pid_alive(pid_info.get("pid"), pid_info.get("create_time")):
        beat = status.get("heartbeat")
        if beat is not None and time.time() - float(beat) > stale_seconds():
            shown = dict(status)
            shown["state"] = "failed"
            shown["error"] = (f"no heartbeat for {time.time() - float(beat):.0f} s; process "
                              f"{pid_info.get('pid')} still exists and may be hung (cancel it)")
            return shown
        return status
    beat = status.get("heartbeat")
    ago = f"{time.time() - float(beat):.0f} s ago" if beat else "never"
    latest = status
    try:
        with status_lock(folder):
            # Re-read: the child may have written its final state between our two reads.
            latest = read_status(folder)
            if latest.get("state") not in ACTIVE:
                return latest
            if latest.get("cancel_requested"):  # asked to stop, it died of it (before its handler was in place)
                latest.update(state="cancelled", finished_at=now_iso(), exit_code=None, error=None, note=None)
            else:
                latest.update(state="failed", finished_at=now_iso(),
                              error=f"the job's process ({pid_info.get('pid')}) ended without reporting "
                                    f"(killed or the machine restarted); last heartbeat {ago}")
            write_status(folder, latest)
    except OSError:  # a read-only workspace: show the verdict without recording it
        pass
    return latest


# --- events and log ------------------------------------------------------------------------------


def read_events(job_id: str, offset: int = 0) -> tuple[list[dict], int]:
    """Complete events after byte ``offset``, and the offset to pass next time."""
    path = _folder(job_id) / "events.jsonl"
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for line in data[: end + 1].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, offset + end + 1


def last_event(folder: Path) -> dict:
    path = Path(folder) / "events.jsonl"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 8192))
            lines = fh.read().splitlines()
    except OSError:
        return {}
    fallback: dict = {}
    for line in reversed(lines):  # prefer the last progress event over state changes
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("type") not in ("state", "queue"):
            return event
        fallback = fallback or event
    return fallback


def tail_log(job_id: str, lines: int = 50) -> list[str]:
    path = _folder(job_id) / "log.txt"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - max(lines, 1) * 400))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:] if lines > 0 else []


def _folder(job_id: str) -> Path:
    folder = job_dir(job_id)
    if folder.is_dir():
        return folder
    return job_dir(resolve_id(job_id))


def remove(job_id: str) -> None:
    """Delete a job's folder; refused while its process is alive."""
    info = get_job(job_id)
    if info.state in ACTIVE and job_alive(info.dir):
        raise JobStateError(f"job {info.id} is {info.state}", [("pid", str(info.pid))],
                       f"cancel it first: `tuneterm jobs cancel {info.id}`")
    shutil.rmtree(info.dir)
