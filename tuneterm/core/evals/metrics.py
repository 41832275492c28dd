"""Where an eval spec's metric modules live, checked before any model loads (torch-free).

A metric is a path (relative to the spec), a folder ``metrics/NAME`` beside the spec or up to three
folders above it, or a built-in under ``tuneterm/data/evals/metrics``. Loading and scoring are in
tuneterm.workers.evals.scoring.
"""

from __future__ import annotations

from pathlib import Path

from tuneterm.core.errors import NotFoundError
from tuneterm.core.evals.spec import MetricRef, TaskSpec
from tuneterm.core.resources import metrics_dir

BUILTIN_METRICS = metrics_dir()


def metric_path(ref: MetricRef, spec: TaskSpec) -> Path:
    """Where a metric's module lives: a path (relative to the spec) or a name under evals/metrics/."""
    candidates = []
    raw = Path(ref.module)
    if raw.is_absolute():
        candidates.append(raw)
    else:
        candidates.append(spec.base_dir / raw)
        for parent in [spec.base_dir, *spec.base_dir.parents][:4]:
            candidates.append(parent / "metrics" / ref.module)
        candidates.append(BUILTIN_METRICS / ref.module)
    for c in candidates:
        if c.is_dir() and (c / f"{c.name}.py").is_file():
            return c.resolve()
        if c.is_file() and c.suffix == ".py":
            return c.resolve()
    raise NotFoundError(
        f"no metric module {ref.module!r}",
        [("spec", spec.source), ("field", f"metrics ({ref.name})"), ("looked in", ", ".join(str(c) for c in candidates[:3]))],
        f"built-in metrics: {', '.join(sorted(p.name for p in BUILTIN_METRICS.iterdir() if p.is_dir()))}; "
        "or give a folder NAME/ holding NAME.py (an evaluate.Metric)",
    )


def check_metrics(spec: TaskSpec) -> None:
    """Resolve every metric of a spec (before any model loads)."""
    for m in spec.metrics:
        if m.module != "judge":
            metric_path(m, spec)
