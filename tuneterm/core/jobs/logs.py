"""Copy a job's log.txt to a terminal as it grows (torch-free).

One loop serves ``tuneterm jobs logs --follow`` (a detached job: until its state is final) and
every ``--foreground`` command (an attached child: until the process ends).
"""

from __future__ import annotations

import sys
import time
from typing import IO

from tuneterm.core.errors import JobError, JobStateError
from tuneterm.core.jobs.launcher import cancel, launch
from tuneterm.core.jobs.store import FINISHED, JobInfo, get_job


def copy_new(path, offset: int, stream: IO[str]) -> int:
    """Write what ``path`` holds after ``offset`` to ``stream``; return the new offset."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset
    if data:
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()
    return offset + len(data)


def follow(job_id: str, offset: int = 0, stream: IO[str] | None = None, interval: float = 0.5) -> JobInfo:
    """Print the log of a (detached) job from ``offset`` until the job's state is final."""
    stream = stream or sys.stdout
    path = get_job(job_id).dir / "log.txt"
    while True:
        job = get_job(job_id)
        offset = copy_new(path, offset, stream)
        if job.state in FINISHED:
            copy_new(path, offset, stream)
            return job
        time.sleep(interval)


def run_attached(job: JobInfo, stream: IO[str] | None = None, interval: float = 0.3) -> JobInfo:
    """Run the job's child attached to this terminal and print its log until it ends.

    Ctrl-C cancels the job (SIGTERM: it saves a checkpoint and ends ``cancelled``, so
    ``tuneterm jobs resume`` can continue it) and keeps printing until the child has stopped.
    """
    stream = stream or sys.stdout
    proc = launch(job.id, foreground=True)
    path = job.dir / "log.txt"
    offset = path.stat().st_size if path.exists() else 0
    print(f"job {job.id} (attached; Ctrl-C cancels and keeps a checkpoint)", file=sys.stderr)
    cancelling = False
    while True:
        try:
            done = proc.poll() is not None
            offset = copy_new(path, offset, stream)
            if done:
                break
            time.sleep(interval)
        except KeyboardInterrupt:  # the child, in this terminal's process group, got SIGINT too
            if not cancelling:
                cancelling = True
                try:
                    cancel(job.id)
                except (JobError, JobStateError):  # it ended on its own meanwhile
                    pass
    return get_job(job.id)
