"""What the Evals screen shows, computed from files (torch-free, cheap; called from TUI workers).

- :func:`find_specs`: the tasks and suites under an ``evals/`` folder, to pick from.
- :func:`job_progress`: an eval job's progress from its events (``eval_plan``, ``eval_progress``,
  ``eval_task``, ``eval_report``; see ``tuneterm.workers.kinds.eval``).
- :func:`item_rows`: the per-item view of ``samples.jsonl``: one row per (task, item) with each
  variant's answer and score, and whether the variants disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm.core.evals.spec import is_suite_file


def default_evals_dir() -> Path:
    """``./evals`` when the current folder has one, else the one shipped inside the package."""
    here = Path.cwd() / "evals"
    if here.is_dir():
        return here
    from tuneterm.core.resources import evals_dir

    return evals_dir()


def find_specs(evals_dir: Path) -> list[str]:
    """Suite files first, then task folders and task files, as paths the eval command accepts."""
    if not evals_dir.is_dir():
        return []
    suites, tasks = [], []
    for p in sorted(evals_dir.iterdir()):
        if p.name.startswith(".") or p.name == "metrics":
            continue
        if p.is_file() and p.suffix in (".yaml", ".yml"):
            try:
                (suites if is_suite_file(p) else tasks).append(str(p))
            except Exception:  # noqa: BLE001 - a broken file is listed; loading it reports the problem
                tasks.append(str(p))
        elif p.is_dir() and any(c.suffix in (".yaml", ".yml") for c in p.iterdir()):
            tasks.append(str(p))
    return suites + tasks


@dataclass
class JobProgress:
    done: int = 0
    total: int = 0
    current: str = ""  # "task · variant" being scored
    finished: bool = False
    regressions: int = 0
    report_path: str | None = None

    def line(self, active: bool = True) -> str:
        if self.finished:
            extra = f", {self.regressions} regression(s)" if self.regressions else ""
            return f"done: {self.done}/{self.total} items{extra}"
        if not self.total:
            return "starting (loading the model)…" if active else "no progress events"
        pct = 100 * self.done / self.total
        return f"{self.done}/{self.total} items ({pct:.0f}%) · {self.current}"


def job_progress(events: list[dict]) -> JobProgress:
    out = JobProgress()
    per: dict[tuple[str, str], int] = {}
    for e in events:
        kind = e.get("type")
        if kind == "eval_plan":
            out.total = int(e.get("total") or 0)
            per.clear()
        elif kind == "eval_progress":
            per[(str(e.get("task")), str(e.get("variant")))] = int(e.get("done") or 0)
            out.current = f"{e.get('task')} · {e.get('variant')}"
        elif kind == "eval_report":
            out.finished = True
            out.regressions = int(e.get("regressions") or 0)
            out.report_path = e.get("path")
    out.done = sum(per.values())
    if out.finished and out.total:
        out.done = out.total
    return out


@dataclass
class ItemRow:
    task: str
    item: str
    target: str
    answers: dict[str, str] = field(default_factory=dict)  # variant -> extracted answer
    scores: dict[str, float | None] = field(default_factory=dict)  # variant -> first metric's score
    outputs: dict[str, str] = field(default_factory=dict)  # variant -> raw output
    prompt: str = ""

    @property
    def disagree(self) -> bool:
        """Variants gave different answers (or scored differently) on this item."""
        return len(set(self.answers.values())) > 1 or len({s for s in self.scores.values()}) > 1


def read_samples(path: Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "samples.jsonl"
    from tuneterm.core.jsonl import read_jsonl

    return read_jsonl(path, what="eval samples")


def item_rows(samples: list[dict], report: dict | None = None) -> list[ItemRow]:
    """One row per (task, item) over generate and choice tasks (perplexity items have no answer)."""
    types = {name: t.get("type") for name, t in (report or {}).get("tasks", {}).items()}
    first_metric = {name: (t.get("metrics") or [None])[0] for name, t in (report or {}).get("tasks", {}).items()}
    rows: dict[tuple[str, str], ItemRow] = {}
    for s in samples:
        task = str(s.get("task"))
        if types.get(task) == "perplexity" or (not types and s.get("output") is None):
            continue
        key = (task, str(s.get("id")))
        row = rows.get(key)
        if row is None:
            row = rows[key] = ItemRow(task, str(s.get("id")), _text(s.get("target")), prompt=_text(s.get("prompt")))
        vid = str(s.get("variant"))
        row.answers[vid] = _text(s.get("extracted"))
        row.outputs[vid] = _text(s.get("output"))
        scores = s.get("scores") or {}
        metric = first_metric.get(task) or next(iter(scores), None)
        value = scores.get(metric) if metric else None
        row.scores[vid] = round(float(value), 6) if isinstance(value, (int, float)) else None
    return list(rows.values())


def _text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# --- launching an eval job (torch-free checks, the same the command makes before a model loads) -----


def check_and_config(spec: str, models: list[str], limit: int | None = None, batch_size: int = 16,
                     cwd: Path | None = None) -> tuple[dict, str]:
    """Validate an eval (specs, data, metrics, variants, few-shot pools) and return
    (the ``eval`` job config, the equivalent command line). Raises the CLI's errors."""
    from tuneterm.core.evals.items import build_items
    from tuneterm.core.evals.spec import load_suite
    from tuneterm.core.evals.variants import parse_variants
    from tuneterm.core.fewshot import load_pool
    from tuneterm.core.evals.metrics import check_metrics

    cwd = Path(cwd or Path.cwd())
    spec_path = Path(spec).expanduser()
    spec_path = spec_path if spec_path.is_absolute() else cwd / spec_path
    tasks = load_suite(spec_path)
    from tuneterm.core.jobs.plan import freeze_ref

    parse_variants(models)  # the variants' own errors first (e.g. the old REF+Nshot form)
    variants = parse_variants([freeze_ref(m, "models") for m in models])  # job:last is the job before this one
    for t in tasks:
        check_metrics(t)
        build_items(t, limit=limit)
    for pool in sorted({v.fewshot.pool for v in variants if v.fewshot is not None}):
        load_pool(pool)
    config = {"spec": str(spec_path), "models": [v.vid for v in variants], "batch_size": batch_size,
              "cwd": str(cwd)}
    if limit:
        config["limit"] = int(limit)
    command = f"tuneterm eval {spec} --models {','.join(config['models'])}" + (f" --limit {limit}" if limit else "")
    return config, command
