"""The latest eval results of each model reference, for Chat's column headers. Torch-free.

Reports are read from the workspace: every succeeded eval job's ``output/report.json`` and every
``tuneterm eval`` run's ``<workspace>/evals/<run>/report.json``. For each reference the newest report
that evaluated it gives, per task, each metric's value with its 95% interval; the paired difference
against the first column comes from the newest report that holds both, as the runner computed it
(McNemar exact for right/wrong scores, a paired bootstrap otherwise), with its p-value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm.core.evals.report import SCHEMA, fmt_delta, fmt_metric


@dataclass
class Score:
    task: str
    metric: str
    value: dict  # the report's {"value", "ci95", "higher_is_better", ...}
    n: int
    delta: dict | None = None  # the report's comparison against the first column, when there is one
    delta_vs: str | None = None  # set when ``delta`` is against another variant (the report's own baseline)

    def to_dict(self) -> dict:
        d = self.delta or {}
        return {"task": self.task, "metric": self.metric, "n": self.n, "value": self.value.get("value"),
                "ci95": self.value.get("ci95"), "delta": d.get("delta"), "delta_ci95": d.get("ci95"),
                "p_value": d.get("p_value"), "significant": d.get("significant"), "delta_vs": self.delta_vs}

    def lines(self) -> list[str]:
        """``VALUE [CI] METRIC · TASK`` and, against the first column, ``Δ DELTA p=P (+fixed/-broken)``:
        numbers first, so that a narrow column cuts the names, not the figures."""
        out = [f"{fmt_metric(self.value)} {self.metric} · {self.task}"]
        if self.delta is not None:
            out.append(f"Δ {fmt_delta(self.delta)}" + (f" vs {self.delta_vs}" if self.delta_vs else ""))
        return out


@dataclass
class ColumnScores:
    ref: str
    scores: list[Score] = field(default_factory=list)
    source: str | None = None  # "job ID" or the report's folder
    created_at: str | None = None


@dataclass(frozen=True)
class _Report:
    created_at: str
    source: str
    data: dict


def canonical(ref: str) -> str:
    """``ref`` as a job stores it (job ids in full, paths absolute), so that reports written with
    ``job:last`` or a suffix match the column's reference."""
    from tuneterm.core import modelref

    try:
        if modelref.parse(ref).kind == "embedded":
            return modelref.EMBEDDED_NAME
        from tuneterm.core.jobs.plan import freeze_ref

        return freeze_ref(ref, artifact=False)
    except Exception:  # noqa: BLE001 - a reference that no longer resolves matches only itself
        return ref.strip()


def find_reports(jobs_dir: Path | None = None, evals_dir: Path | None = None) -> list[_Report]:
    """Every readable eval report in the workspace, newest first."""
    if jobs_dir is None or evals_dir is None:
        from tuneterm.core.workspace import workspace

        ws = workspace()
        jobs_dir = ws.jobs_dir if jobs_dir is None else jobs_dir
        evals_dir = ws.evals_dir if evals_dir is None else evals_dir
    found: list[_Report] = []
    candidates: list[tuple[Path, str]] = []
    if jobs_dir.is_dir():
        for folder in jobs_dir.iterdir():
            path = folder / "output" / "report.json"
            if path.is_file() and _succeeded(folder):
                candidates.append((path, f"job {folder.name}"))
    if evals_dir.is_dir():
        candidates += [(p, str(p.parent)) for p in evals_dir.glob("*/report.json")]
    for path, source in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA and isinstance(data.get("tasks"), dict):
            found.append(_Report(str(data.get("created_at") or ""), source, data))
    found.sort(key=lambda r: (r.created_at, r.source), reverse=True)
    return found


def _succeeded(folder: Path) -> bool:
    try:
        return json.loads((folder / "status.json").read_text()).get("state") == "succeeded"
    except (OSError, ValueError):
        return False


def latest_scores(refs: list[str], reports: list[_Report] | None = None) -> list[ColumnScores]:
    """Per reference (in order), its newest results, with the paired difference against ``refs[0]``."""
    reports = find_reports() if reports is None else reports
    keys = [canonical(r) for r in refs]
    ids_by_report = [_variant_ids(rep.data) for rep in reports]  # canonical ref -> the report's variant id
    out = []
    for i, (ref, key) in enumerate(zip(refs, keys)):
        col = ColumnScores(ref)
        at = next((j for j, ids in enumerate(ids_by_report) if key in ids), None)
        if at is not None:
            rep, vid = reports[at], ids_by_report[at][key]
            col.source, col.created_at = rep.source, rep.created_at
            col.scores = _scores(rep.data, vid)
            if i > 0:
                _add_deltas(col, key, keys[0], reports, ids_by_report)
                _add_own_baseline_deltas(col, rep, vid, refs, keys)
        out.append(col)
    return out


def _variant_ids(report: dict) -> dict[str, str]:
    out = {}
    for v in report.get("variants") or []:
        vid = str(v.get("id") or "")
        if vid:
            out.setdefault(canonical(vid), vid)
    return out


def _scores(report: dict, vid: str) -> list[Score]:
    out = []
    for name, task in report["tasks"].items():
        res = (task.get("variants") or {}).get(vid)
        if not res or res.get("skipped"):
            continue
        for metric in task.get("metrics") or []:
            value = (res.get("metrics") or {}).get(metric)
            if value is not None:
                out.append(Score(name, metric, value, int(res.get("n") or 0)))
    return out


def _add_deltas(col: ColumnScores, key: str, first: str, reports: list[_Report], ids: list[dict]) -> None:
    """The paired difference against the first column, from the newest report holding both."""
    at = next((j for j, found in enumerate(ids) if key in found and first in found), None)
    if at is None:
        return
    vid, base = ids[at][key], ids[at][first]
    comps = {}
    for name, task in reports[at].data["tasks"].items():
        for c in task.get("comparisons") or []:
            if c.get("variant") == vid and c.get("baseline") == base:
                comps[(name, c.get("metric"))] = c
    for s in col.scores:
        s.delta = comps.get((s.task, s.metric))


def _add_own_baseline_deltas(col: ColumnScores, rep: _Report, vid: str, refs: list[str], keys: list[str]) -> None:
    """Where no report compares this column with the first one (``tuneterm eval`` without ``--baseline``
    compares a quantized model with its source), the paired difference its own report does have, against
    the baseline named: "column N" when that model is on screen, else its reference."""
    missing = [s for s in col.scores if s.delta is None]
    if not missing:
        return
    ref_of = {str(v.get("id") or ""): str(v.get("ref") or v.get("id") or "") for v in rep.data.get("variants") or []}
    comps = {}
    for name, task in rep.data["tasks"].items():
        for c in task.get("comparisons") or []:
            if c.get("variant") == vid and c.get("baseline"):
                comps.setdefault((name, c.get("metric")), c)
    for s in missing:
        c = comps.get((s.task, s.metric))
        if c is None:
            continue
        base = canonical(ref_of.get(c["baseline"], c["baseline"]))
        s.delta = c
        s.delta_vs = f"column {keys.index(base) + 1}" if base in keys else ref_of.get(c["baseline"], c["baseline"])
