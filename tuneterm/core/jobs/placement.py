"""``--gpus`` and ``--force`` for every command that creates a computing job (train and its aliases,
quantize, ``eval --job``): the same options, the same checks (tuneterm.core.jobs.slots, .disk)."""

from __future__ import annotations

import argparse
from dataclasses import replace


def add_slot_options(p: argparse.ArgumentParser, *, force: bool = True) -> None:
    p.add_argument("--gpus", metavar="0,1",
                   help="the GPUs to run on (default: any free one); the job waits queued while they are busy")
    if force:
        p.add_argument("--force", action="store_true",
                       help="start even when the disk looks too small for what the job writes")


def place(job_plan, args: argparse.Namespace):
    """``job_plan`` with the devices ``--gpus`` names (checked against this machine), after the disk
    check (``--force`` skips it). Nothing is written."""
    from tuneterm.core.jobs import disk, slots, store

    devices, nproc = slots.devices_for(getattr(args, "gpus", None), job_plan.nproc, job_plan.kind)
    job_plan = replace(job_plan, devices=tuple(devices) or job_plan.devices, nproc=nproc)
    disk.check_space(job_plan.kind, job_plan.spec(), store.jobs_root(), force=bool(getattr(args, "force", False)))
    return job_plan
