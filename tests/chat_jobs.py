"""Finished jobs for the chat tests, made by the real workers in this process: a tiny LoRA train job on
ticket-routing data (one system prompt), and an int8 quantize job over it. Built once per module in a
workspace of their own, then copied into each test's workspace (job folders are self-contained)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICKETS = REPO / "sample_data" / "tickets" / "train.jsonl"


@dataclass
class BuiltJobs:
    home: Path
    data: Path
    system: str  # the system prompt every training row starts with
    tuned: str  # job id of the LoRA job
    quantized: str  # job id of the quantize job over it

    def install(self, workspace) -> None:
        """Copy both job folders into ``workspace`` (the test's own)."""
        for job_id in (self.tuned, self.quantized):
            shutil.copytree(self.home / "jobs" / job_id, workspace.jobs_dir / job_id)


def succeed(job_dir: Path) -> None:
    """Mark a job that ran in-process as the child would have at its end."""
    from tuneterm.core.jobs.store import update_status

    update_status(job_dir, state="succeeded", exit_code=0)


def build(tiny_model_dir: Path, home: Path) -> BuiltJobs:
    from tuneterm.core import jobs, recipes
    from tuneterm.core.quantize_config import resolve
    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import quantize, train

    old = os.environ.get("TUNETERM_HOME")
    os.environ["TUNETERM_HOME"] = str(home)
    try:
        data = home / "train.jsonl"
        home.mkdir(parents=True, exist_ok=True)
        data.write_text("\n".join(TICKETS.read_text().splitlines()[:16]) + "\n")
        system = json.loads(TICKETS.read_text().splitlines()[0])["messages"][0]["content"]
        config = recipes.resolve("lora", overrides=["train.max_steps=2", "train.batch_size=4", "lora.r=4",
                                                    "log.every_steps=1", "checkpoint.every_steps=100"])
        config.update(model=str(tiny_model_dir), data=str(data))
        tuned = jobs.create_job("train", config, name="tiny lora")
        train.run(JobContext(tuned.dir))
        succeed(tuned.dir)
        qconfig = resolve(f"job:{tuned.id}", "int8-dynamic", overrides=["gate.enabled=false"])
        quant = jobs.create_job("quantize", qconfig)
        quantize.run(JobContext(quant.dir))
        succeed(quant.dir)
        return BuiltJobs(home, data, system, str(tuned.id), str(quant.id))
    finally:
        if old is None:
            os.environ.pop("TUNETERM_HOME", None)
        else:
            os.environ["TUNETERM_HOME"] = old
