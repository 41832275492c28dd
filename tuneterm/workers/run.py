"""The job child: ``python -m tuneterm.workers.run JOB_DIR [--resume]``.

Reads ``spec.toml``, waits for its device slots (``tuneterm.core.jobs.slots``; state stays ``queued``
meanwhile, with a note naming what it waits for),
then calls the kind's ``run(ctx)`` (``tuneterm.workers.kinds``). Ends the status as ``succeeded``,
``cancelled`` (after SIGTERM) or ``failed`` (with the error summary; the traceback goes to
log.txt, which is this process's stderr).
"""

from __future__ import annotations

import os
import sys
import time
import traceback

from tuneterm.core import quiet, tracking

quiet.install()  # before the job kind imports torch & co.; TUNETERM_DEBUG=1 keeps their messages

from tuneterm.core.jobs import disk, slots, store  # noqa: E402
from tuneterm.workers.jobctx import JobCancelled, JobContext  # noqa: E402
from tuneterm.workers.kinds import kind_module  # noqa: E402


def _summary(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    render = getattr(exc, "render", None)
    if callable(render):  # a TunetermError: title plus facts on one line
        first = " | ".join(line.strip() for line in render().splitlines()[:4]).removeprefix("error: ")
    return f"{type(exc).__name__}: {first}"[:500]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m tuneterm.workers.run JOB_DIR [--resume]", file=sys.stderr)
        return 2
    ctx = JobContext(argv[0], resume="--resume" in argv[1:])
    ctx.install_signal_handlers()  # then a SIGTERM the launcher held back since the start arrives
    ctx.start_heartbeat()
    status = store.read_status(ctx.job_dir)
    if status.get("cancel_requested") or status.get("state") == "cancelled":  # cancelled while starting
        ctx.request_stop()
    ctx.update_status(note=None, pid=os.getpid())
    try:
        if tracking.requested(ctx.config):  # before any library imports a tracker (TRL imports trackio,
            from tuneterm.workers.tracking import use_offline_stores  # which reads TRACKIO_DIR once, on import)

            use_offline_stores(ctx.job_dir, tracking.requested(ctx.config))
        ctx.take_slots(slots.request_for(ctx.kind, ctx.job.get("devices"), int(ctx.job.get("nproc", 1) or 1)))
        if ctx.should_stop:
            raise JobCancelled("cancelled before it started")
        ctx.update_status(state="running", started_at=status.get("started_at") or store.now_iso(),
                          heartbeat=time.time(), note=None)
        ctx.event(type="state", state="running", resume=ctx.resume)
        ctx.log(f"job {ctx.id} ({ctx.kind}) {'resumed' if ctx.resume else 'started'}"
                + (f", rank {ctx.rank}/{ctx.world_size}" if ctx.world_size > 1 else ""))
        kind_module(ctx.kind).run(ctx)
        state = "cancelled" if ctx.should_stop else "succeeded"
        ctx.log(f"job {ctx.id} {state}")
        ctx.set_state(state, finished_at=store.now_iso(), exit_code=0, error=None)
        return 0
    except JobCancelled as exc:
        ctx.log(str(exc))
        ctx.set_state("cancelled", finished_at=store.now_iso(), exit_code=0, error=None)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every crash ends as a recorded failure
        full = disk.disk_full(exc)
        if full is not None:  # one sentence, the half-written checkpoint gone, the last good one kept
            removed = disk.prune_incomplete_checkpoints(ctx.checkpoints_dir)
            error = disk.full_disk_sentence(ctx.id, ctx.job_dir, ctx.kind, ctx.config, full)
            try:
                for folder in removed:
                    ctx.log(f"removed the incomplete checkpoint {folder.name}")
                ctx.log(error)
            except OSError:  # the log cannot grow either; the status below says it
                pass
        else:
            traceback.print_exc()
            sys.stderr.flush()
            error = _summary(exc)
        ctx.set_state("failed", finished_at=store.now_iso(), exit_code=1, error=error)
        return 1
    finally:
        ctx.stop_heartbeat()
        ctx.release_devices()


if __name__ == "__main__":
    raise SystemExit(main())
