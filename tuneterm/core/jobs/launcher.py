"""Starting, cancelling and resuming job processes (torch-free).

The child is ``python -m tuneterm.workers.run JOB_DIR`` started with ``start_new_session=True``,
stdin from /dev/null and stdout/stderr appended to ``log.txt``: closing the TUI or dropping SSH
changes nothing for it. With ``nproc > 1`` in the spec the child is ``torchrun`` (DDP), which
starts one ``tuneterm.workers.run`` per process, each in a session of its own; ``cancel`` signals
them directly and torchrun (SIGTERM ignored) exits after them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import tuneterm
from tuneterm.core.errors import JobError, JobStateError
from tuneterm.core.fsutil import atomic_write_json
from tuneterm.core.jobs import distributed, store
from tuneterm.core.jobs.store import JobInfo


def locks_dir() -> Path:
    """The device slot files (``jobs/.slots/cuda0.0.lock``) held by the children using the devices."""
    from tuneterm.core.jobs.slots import slots_dir

    return slots_dir()


def child_command(folder: Path, resume: bool = False) -> list[str]:
    cmd = distributed.command(store.read_spec(folder), folder, resume)
    if cmd[1:3] == ["-m", "tuneterm.workers.run"]:
        return cmd  # one process: the child takes its device slots itself
    # Several ranks: one process takes the slots for all of them, then starts torchrun/accelerate.
    return [sys.executable, "-m", "tuneterm.core.jobs.hold", str(folder), *cmd]


def _child_env() -> dict:
    env = dict(os.environ)
    # The child imports the same tuneterm as this process, wherever it was installed from
    # (a wheel, an editable checkout, or a source tree on sys.path).
    src = os.path.dirname(os.path.dirname(os.path.abspath(tuneterm.__file__)))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads that sleep instead of spinning: on a box shared with other work, spinning
    # torch threads slowed a CPU training step 3-6x in our measurements; the cost when alone is small.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def launch(job_id: str, resume: bool = False, *, foreground: bool = False) -> JobInfo | subprocess.Popen:
    """Start the job's child process. Detached unless ``foreground`` (then the Popen is returned)."""
    info = store.get_job(job_id)
    folder = info.dir
    if store.job_alive(folder) and info.state in store.FINISHED:
        _wait_exit(folder, 30.0)  # it has written its final state and is shutting down
    if store.job_alive(folder):
        raise JobStateError(f"job {info.id} already has a live process", [("pid", str(info.pid))])
    cmd = child_command(folder, resume)
    (folder / "pid").unlink(missing_ok=True)  # an old pid must not make the new start look dead
    store.update_status(folder, state="queued", error=None, exit_code=None, finished_at=None,
                        note="starting", heartbeat=time.time(), resumed=bool(resume), cancel_requested=None)
    log = open(folder / "log.txt", "ab")
    try:
        log.write(f"[{store.now_iso()}] {'resuming' if resume else 'starting'}: {' '.join(cmd)}\n".encode())
        log.flush()
        with _term_blocked():  # the child starts with SIGTERM held back until its handler is in place
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(folder),
                env=_child_env(), start_new_session=not foreground, close_fds=True,
            )
    except OSError as exc:
        store.update_status(folder, state="failed", error=f"could not start the child: {exc}",
                            finished_at=store.now_iso())
        raise JobError("could not start the job process", [("command", " ".join(cmd)), ("problem", str(exc))]) from exc
    finally:
        log.close()
    pgid = proc.pid if not foreground else os.getpgid(proc.pid)
    atomic_write_json(folder / "pid", {"pid": proc.pid, "pgid": pgid,
                                       "create_time": store.process_create_time(proc.pid),
                                       "started": store.now_iso(), "command": cmd})
    if foreground:
        return proc
    return store.get_job(info.id)


@contextmanager
def _term_blocked():
    """Block SIGTERM in this thread while the child is spawned: the signal mask is inherited across
    fork and exec, so a cancel in the child's first moments (interpreter start, imports) stays pending
    until the child has installed its handler and unblocks it (``unblock_term``), instead of killing
    it before it can record ``cancelled``."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def unblock_term() -> None:
    """In the child, once its SIGTERM handler is installed: let the signal (a pending one too) through."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _wait_exit(folder: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while store.job_alive(folder) and time.monotonic() < deadline:
        time.sleep(0.1)


def cancel(job_id: str, wait: float = 0.0) -> JobInfo:
    """SIGTERM to the job's process group and to its descendants' groups (torchrun starts each rank in a
    session of its own): the child (every rank) saves a checkpoint and ends ``cancelled``."""
    info = store.get_job(job_id)
    if info.state in store.FINISHED:
        raise JobStateError(f"job {info.id} is already {info.state}", hint="nothing to cancel")
    pid_info = store.read_pid(info.dir)
    if not pid_info or not store.pid_alive(pid_info.get("pid"), pid_info.get("create_time")):
        # never started, or its child is still being spawned: a child that starts now sees this and stops
        store.update_status(info.dir, state="cancelled", finished_at=store.now_iso(), note=None,
                            cancel_requested=store.now_iso())
        return store.get_job(info.id)
    store.update_status(info.dir, cancel_requested=store.now_iso())
    pgid = pid_info.get("pgid") or pid_info["pid"]
    try:
        if pgid == os.getpgrp():  # a foreground child shares our group: signal it alone
            os.kill(pid_info["pid"], signal.SIGTERM)
        else:
            os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for group in _descendant_groups(pid_info["pid"], pgid):  # torchrun's ranks run in their own sessions
        try:
            os.killpg(group, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        if not store.pid_alive(pid_info["pid"], pid_info.get("create_time")):
            break
        time.sleep(0.1)
    return store.get_job(info.id)


def _descendant_groups(pid: int, own_group: int) -> list[int]:
    """Process groups, other than ``own_group``, of ``pid``'s descendants (psutil)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    groups: list[int] = []
    for child in children:
        try:
            group = os.getpgid(child.pid)
        except OSError:
            continue
        if group != own_group and group not in groups:
            groups.append(group)
    return groups


def resume(job_id: str) -> JobInfo:
    """Start a failed or cancelled job again from its last checkpoint."""
    info = store.get_job(job_id)
    if info.state in store.ACTIVE:
        raise JobStateError(f"job {info.id} is {info.state}", hint="only failed or cancelled jobs resume")
    if info.state == "succeeded":
        raise JobStateError(f"job {info.id} already succeeded", hint="start a new job to train further")
    return launch(info.id, resume=True)


def wait_for(job_id: str, timeout: float = 60.0, states: tuple = store.FINISHED) -> JobInfo:
    """Poll until the job reaches one of ``states`` (used by tests and --wait)."""
    deadline = time.monotonic() + timeout
    while True:
        info = store.get_job(job_id)
        if info.state in states or time.monotonic() > deadline:
            return info
        time.sleep(0.1)
