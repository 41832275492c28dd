"""Where an eval spec's metric modules live, checked before any model loads (torch-free).

A metric is a path (relative to the spec), a folder ``metrics/NAME`` beside the spec or up to three
folders above it, or a built-in under ``tuneterm/data/evals/metrics``. Loading and scoring are in
tuneterm.workers.evals.scoring.
"""

from __future__ import annotations

import difflib
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
    known = known_metrics(spec)
    close = difflib.get_close_matches(ref.module, known, n=1, cutoff=0.6)
    raise NotFoundError(
        f"no metric module {ref.module!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
        [("spec", spec.source), ("field", f"metrics ({ref.name})"), ("looked in", ", ".join(str(c) for c in candidates[:3]))],
        f"known metrics: {', '.join(known)}; or give a folder NAME/ holding NAME.py (an evaluate.Metric)",
    )


def known_metrics(spec: TaskSpec) -> list[str]:
    """The metric names a spec can use by name: the built-ins and ``metrics/NAME`` folders near it."""
    names = set()
    for folder in [BUILTIN_METRICS] + [p / "metrics" for p in [spec.base_dir, *spec.base_dir.parents][:4]]:
        if folder.is_dir():
            names.update(p.name for p in folder.iterdir() if p.is_dir() and (p / f"{p.name}.py").is_file())
    return sorted(names)


def check_metrics(spec: TaskSpec, errors: list | None = None) -> None:
    """Resolve every metric of a spec (before any model loads). With ``errors``, each failure is
    appended to it instead of raised, so one run reports them all."""
    for m in spec.metrics:
        if m.module == "judge":
            continue
        try:
            metric_path(m, spec)
        except NotFoundError as exc:
            if errors is None:
                raise
            errors.append(exc)
