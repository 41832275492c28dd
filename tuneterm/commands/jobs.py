"""``tuneterm jobs ls|show|logs|cancel|resume|rm``: watch and steer background jobs (torch-free)."""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 40


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="list, watch, cancel, resume and remove background jobs",
                       description="Jobs run as detached processes; these commands never import torch.")
    jsub = p.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND")

    ls = jsub.add_parser("ls", help="list jobs (oldest first)")
    ls.add_argument("--json", action="store_true", help="one JSON array")
    ls.set_defaults(func=cmd_ls)

    show = jsub.add_parser("show", help="one job's state, last event and log tail")
    show.add_argument("id", metavar="ID", help="job id, a unique prefix, its last 4 digits, or 'last'")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    logs = jsub.add_parser("logs", help="print a job's log")
    logs.add_argument("id", metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--lines", "-n", type=int, default=0, help="only the last N lines (0 = all)")
    logs.set_defaults(func=cmd_logs)

    cancel = jsub.add_parser("cancel", help="SIGTERM the job: it saves a checkpoint and ends cancelled")
    cancel.add_argument("id", metavar="ID")
    cancel.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait for it to stop")
    cancel.set_defaults(func=cmd_cancel)

    resume = jsub.add_parser("resume", help="continue a failed or cancelled job from its last checkpoint")
    resume.add_argument("id", metavar="ID")
    resume.set_defaults(func=cmd_resume)

    rm = jsub.add_parser("rm", help="delete a job's folder (refused while it runs)")
    rm.add_argument("id", metavar="ID")
    rm.set_defaults(func=cmd_rm)


def _progress(job) -> str:
    """The PROGRESS column: step, loss and, while the job runs, the time left."""
    from tuneterm.core import jobs
    from tuneterm.core.jobs.describe import progress_text
    from tuneterm.core.jobs.eta import eta_text

    text = progress_text(job.last_event).replace(", ", "  ")
    if job.state == "running":
        eta = eta_text(jobs.read_events(job.id)[0])
        text = f"{text}  {eta}" if text and eta else text or eta
    return text


def cmd_ls(args) -> int:
    from tuneterm.core import jobs

    items = jobs.list_jobs()
    if args.json:
        print(json.dumps([j.to_dict() for j in items], indent=2, default=str))
        return 0
    if not items:
        print("no jobs yet; start one with `tuneterm train ...`")
        return 0
    rows = [("ID", "KIND", "STATE", "NAME", "PROGRESS")]
    for j in items:
        state = j.state + (f" ({j.note})" if j.note and j.state == "queued" else "")
        rows.append((j.id, j.kind, state, j.name or "", _progress(j)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def cmd_show(args) -> int:
    from tuneterm.core import jobs
    from tuneterm.core.jobs.describe import show_sentences

    j = jobs.get_job(args.id)
    if args.json:
        d = j.to_dict()
        d["spec"] = jobs.read_spec(j.dir)
        print(json.dumps(d, indent=2, default=str))
        return 0
    print(f"job {j.id} ({j.kind}{': ' + j.name if j.name else ''}), created {j.created_at}")
    for sentence in show_sentences(j, jobs.read_events(j.id)[0]):
        print("  " + sentence)
    tail = jobs.tail_log(j.id, 10)
    if tail:
        print("  The last lines of its log:")
        for line in tail:
            print("    " + line)
    return 0


def cmd_logs(args) -> int:
    from tuneterm.core import jobs
    from tuneterm.core.jobs.logs import copy_new

    j = jobs.get_job(args.id)
    path = j.dir / "log.txt"
    if args.lines > 0:
        for line in jobs.tail_log(j.id, args.lines):
            print(line)
        offset = path.stat().st_size if path.exists() else 0
    else:
        offset = 0
    if not args.follow:
        copy_new(path, offset, sys.stdout)
        if j.state in jobs.ACTIVE:
            print(f"-- job {j.id} {j.state}" + (f": {j.note}" if j.note else "")
                  + (f" ({_progress(j)})" if _progress(j) else ""), file=sys.stderr)
        return 0
    j = jobs.follow(j.id, offset)
    print(f"-- job {j.id} {j.state}" + (f": {j.error}" if j.error else ""), file=sys.stderr)
    return 0 if j.state == "succeeded" else 1


def cmd_cancel(args) -> int:
    from tuneterm.core import jobs

    j = jobs.cancel(args.id, wait=args.wait)
    if j.state in jobs.ACTIVE:
        print(f"job {j.id}: stop requested (it saves a checkpoint, then ends cancelled)")
    else:
        print(f"job {j.id}: {j.state}")
    return 0


def cmd_resume(args) -> int:
    from tuneterm.core import jobs

    folder = jobs.get_job(args.id).dir / "checkpoints"
    had_checkpoint = folder.is_dir() and any(folder.iterdir())
    j = jobs.resume(args.id)
    if had_checkpoint:
        print(f"job {j.id} resumed from its last checkpoint")
    else:
        print(f"job {j.id} has no checkpoint: it starts over from the beginning")
    print(f"  follow it: tuneterm jobs logs {j.id} --follow")
    return 0


def cmd_rm(args) -> int:
    from tuneterm.core import jobs

    j = jobs.get_job(args.id)
    jobs.remove(j.id)
    print(f"removed job {j.id}")
    return 0
