"""Jobs: a folder plus a detached child process (torch-free). See shared/DESIGN.md,
"Jobs survive the terminal". The public functions live here."""

from tuneterm.core.jobs.logs import follow, run_attached
from tuneterm.core.jobs.launcher import cancel, launch, locks_dir, resume, wait_for
from tuneterm.core.jobs.store import (
    ACTIVE,
    FINISHED,
    STATES,
    JobInfo,
    create_job,
    get_job,
    job_dir,
    list_jobs,
    read_events,
    read_spec,
    remove,
    resolve_id,
    tail_log,
)

__all__ = [
    "ACTIVE", "FINISHED", "STATES", "JobInfo", "cancel", "create_job", "follow", "get_job", "job_dir", "launch",
    "list_jobs", "locks_dir", "read_events", "read_spec", "remove", "resolve_id", "resume", "run_attached", "tail_log",
    "wait_for",
]
