"""Job kinds: what ``python -m tuneterm.workers.run JOB_DIR`` can run, each a module with ``run(ctx)``.

The table is explicit: a module is a job kind because it is listed here, not because it sits in a
folder. ``TUNETERM_EXTRA_KINDS="name=package.module,..."`` adds kinds from outside the package
(the test suite's torch-free ``sleep`` kind uses it).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

KINDS = {
    "train": "tuneterm.workers.kinds.train",            # full, freeze, lora, qlora, dpo
    "sequential": "tuneterm.workers.kinds.sequential",  # a pipeline of train stages
    "distill": "tuneterm.workers.kinds.distill",        # a student learns a teacher's distributions
    "feature": "tuneterm.workers.kinds.feature",        # a classifier on frozen hidden states
    "cls_head": "tuneterm.workers.kinds.cls_head",      # a sequence-classification head (LoRA or full)
    "quantize": "tuneterm.workers.kinds.quantize",      # quantize + quality gate
    "eval": "tuneterm.workers.kinds.eval",              # tuneterm eval as a job
}


def extra_kinds() -> dict[str, str]:
    out = {}
    for item in os.environ.get("TUNETERM_EXTRA_KINDS", "").split(","):
        name, _, module = item.strip().partition("=")
        if name and module:
            out[name.strip()] = module.strip()
    return out


def kind_module(kind: str) -> ModuleType:
    """The module that runs job kind ``kind``; ValueError for a kind nobody registered."""
    table = {**KINDS, **extra_kinds()}
    if kind not in table:
        raise ValueError(f"unknown job kind {kind!r} (known: {', '.join(sorted(table))})")
    return importlib.import_module(table[kind])
