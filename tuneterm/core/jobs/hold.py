"""``python -m tuneterm.core.jobs.hold JOB_DIR CMD...``: the slots of a multi-process job (torch-free).

A job with ``nproc > 1`` runs under torchrun, which starts one child per rank. The ranks must not
queue one by one, so this process takes the job's slots for all of them (the status stays
``queued`` with the wait's note meanwhile), then runs CMD with ``CUDA_VISIBLE_DEVICES`` set to the
GPUs taken, holds the slots until CMD ends and exits with its code. SIGTERM while waiting ends
the job ``cancelled``; once CMD runs, the ranks handle it (``launcher.cancel`` signals them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tuneterm.core.jobs import slots, store
from tuneterm.core.jobs.launcher import unblock_term


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m tuneterm.core.jobs.hold JOB_DIR CMD...", file=sys.stderr)
        return 2
    folder, cmd = Path(argv[0]), argv[1:]
    job = store.read_spec(folder).get("job", {})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    unblock_term()  # the launcher started this process with SIGTERM blocked
    if store.read_status(folder).get("cancel_requested"):  # cancelled while starting
        stop.set()
    last_beat = [0.0]

    def stopping() -> bool:
        if time.monotonic() - last_beat[0] > 5:  # a waiting job is alive, not hung
            last_beat[0] = time.monotonic()
            store.update_status(folder, heartbeat=time.time())
        return stop.is_set()

    def waiting(note: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {note}", flush=True)
        store.update_status(folder, state="queued", note=note, heartbeat=time.time())

    request = slots.request_for(job.get("kind", ""), job.get("devices"), int(job.get("nproc", 1) or 1))
    try:
        held = slots.acquire(job.get("id", folder.name), request, on_wait=waiting, should_stop=stopping)
    except slots.Cancelled as exc:
        print(str(exc), flush=True)
        store.update_status(folder, state="cancelled", finished_at=store.now_iso(), exit_code=0, error=None,
                            note=None, heartbeat=time.time())
        return 0
    env = dict(os.environ, **{slots.HELD_ENV: "1"})
    if held.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, held.gpus))
    store.update_status(folder, note=None)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # from here on the ranks handle it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call(cmd, env=env)
    finally:
        held.release()


if __name__ == "__main__":
    raise SystemExit(main())
