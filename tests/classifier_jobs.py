"""Label data and classifier jobs for the tests of the feature classifier and the classification head.

``write_examples`` writes an easy two-label chat set (the label is the last assistant turn, the text six
words drawn from the label's own words); ``build`` trains a ``cls_head`` job and a ``feature`` job on the
tiny model with the real workers, in a workspace of their own, once per module; ``BuiltClassifiers.install``
copies them into a test's workspace (job folders are self-contained)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

WORDS = {
    "payments-ops": ["refund", "invoice", "charge", "card", "billing"],
    "logistics": ["parcel", "delivery", "courier", "shipment", "warehouse"],
}
LABELS = [f"queue-{i:02d}-{w}" for i, w in enumerate(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"] * 8)]
# a long label-listing system prompt (~600+ tokens), as real routing data carries
SYSTEM = ("Route the ticket to exactly one queue; answer with the queue name only. Queues: "
          + ", ".join(LABELS) + ". " + "Be careful with the routing rules. " * 40)
TEXTS = ["refund invoice charge card billing refund", "parcel courier delivery shipment warehouse parcel"]


def examples(n: int, seed: int, system: str | None = None) -> list[dict]:
    """``n`` chat examples, the two labels in turn; each starts with ``system`` when given."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(WORDS)[i % 2]
        text = " ".join(rng.choice(WORDS[label]) for _ in range(6))
        head = [{"role": "system", "content": system}] if system else []
        rows.append({"messages": [*head, {"role": "user", "content": text}, {"role": "assistant", "content": label}]})
    return rows


def write_examples(path: Path, n: int, seed: int, system: str | None = None) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in examples(n, seed, system)))
    return path


@dataclass
class BuiltClassifiers:
    home: Path
    head: str  # job id of the cls_head job (LoRA on the backbone, a head over the two labels)
    feature: str  # job id of the feature job (last layer, mean pooling)

    @property
    def refs(self) -> list[str]:
        return [f"job:{self.head}", f"job:{self.feature}"]

    def install(self, workspace) -> None:
        for job_id in (self.head, self.feature):
            shutil.copytree(self.home / "jobs" / job_id, workspace.jobs_dir / job_id)


@contextlib.contextmanager
def at_home(home: Path):
    """``TUNETERM_HOME`` set to ``home`` for the block (module fixtures run outside a test's workspace)."""
    old = os.environ.get("TUNETERM_HOME")
    os.environ["TUNETERM_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("TUNETERM_HOME", None)
        else:
            os.environ["TUNETERM_HOME"] = old


def build(tiny_model_dir: Path, home: Path) -> BuiltClassifiers:
    from tuneterm.core import jobs
    from tuneterm.core.jobs.plan import plan_train
    from tuneterm.core.jobs.store import update_status
    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import cls_head, feature

    with at_home(home):
        data = home / "easy"
        data.mkdir(parents=True, exist_ok=True)
        write_examples(data / "train.jsonl", 24, 1)
        write_examples(data / "val.jsonl", 10, 2)
        plan = plan_train("cls_head", model=str(tiny_model_dir), data=str(data / "train.jsonl"),
                          overrides=["train.epochs=4", "train.lr=3e-3", "train.batch_size=8",
                                     "checkpoint.every_steps=1000", "log.every_steps=1"])
        head = plan.create()
        cls_head.run(JobContext(head.dir))
        update_status(head.dir, state="succeeded", exit_code=0)
        feat = jobs.create_job("feature", {"model": str(tiny_model_dir), "dataset": str(data / "train.jsonl")})
        feature.run(JobContext(feat.dir))
        update_status(feat.dir, state="succeeded", exit_code=0)
        return BuiltClassifiers(home, str(head.id), str(feat.id))
