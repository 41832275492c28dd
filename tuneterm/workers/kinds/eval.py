"""The ``eval`` job kind: ``run(ctx)`` runs ``tuneterm eval`` inside a job.

Config keys: ``spec`` (task/suite path), ``models`` (list or comma-separated string; few-shot
variants included), ``limit``, ``batch_size``, ``baseline``, ``cwd`` (the folder relative spec
and few-shot pool paths were given from: a job runs in its own folder). The report goes to
``output/`` (report.json, samples.jsonl, report.md). Events: ``eval_plan`` (total items),
``eval_progress`` per batch and, for generation, per row finished inside a batch and every 2 s
with the batch's ``partial`` progress and the run's ``eta_s``, ``eval_task`` per (task, variant),
``eval_report`` at the end (the Evals screen follows these). SIGTERM stops between batches; a
resumed job reuses the per-item cache, so it continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from tuneterm.core.errors import InputError
from tuneterm.core.evals import report as report_mod
from tuneterm.core.evals.spec import load_suite
from tuneterm.core.evals.variants import parse_variants, split_models
from tuneterm.workers.evals.runner import EvalStopped, RunOptions, run_eval


def _from(base: Path, path: str) -> str:
    p = Path(path).expanduser()
    if p.is_absolute() or not (base / p).exists():
        return path  # absolute, or a workspace dataset name
    return str((base / p).resolve())


def _with_steps(emit, clock=time.time):
    """Adds ``step``/``total_steps`` (items done over the whole run) to ``eval_progress`` events, so
    the ETA that `jobs ls`, `jobs show` and the workbench compute for every job works for evals too.
    An event sent inside a long batch (``partial``: rows' worth of its tokens made) gets ``eta_s``
    from the run's pace since its first progress event, so the ETA moves before the batch ends."""
    state: dict = {"total": 0, "per": {}, "first": None}

    def on_event(**kw):
        if kw.get("type") == "eval_plan":
            state["total"], state["per"], state["first"] = int(kw.get("total") or 0), {}, None
        elif kw.get("type") == "eval_progress" and state["total"]:
            state["per"][(kw.get("task"), kw.get("variant"))] = int(kw.get("done") or 0)
            step = sum(state["per"].values())
            kw = {**kw, "step": step, "total_steps": state["total"]}
            progress, now = step + float(kw.get("partial") or 0.0), clock()
            if state["first"] is None:
                state["first"] = (now, progress)
            elif "partial" in kw and progress > state["first"][1]:
                pace = (now - state["first"][0]) / (progress - state["first"][1])
                kw["eta_s"] = round(max(0.0, state["total"] - progress) * pace, 1)
        emit(**kw)

    return on_event


def run(ctx) -> None:
    cfg = dict(ctx.config)
    if not cfg.get("spec") or not cfg.get("models"):
        raise InputError("an eval job needs spec and models", [("config", str(sorted(cfg)))],
                         "e.g. {spec: evals/tickets, models: [smollm2-135m-instruct, job:ID]}")
    base = Path(cfg.get("cwd") or ".")
    models = cfg["models"] if isinstance(cfg["models"], list) else split_models(str(cfg["models"]))
    tasks = load_suite(Path(_from(base, str(cfg["spec"]))))
    variants = parse_variants(models)
    for v in variants:  # the names stay as given; the pools resolve from where they were given
        if v.fewshot is not None:
            v.fewshot = replace(v.fewshot, pool=_from(base, v.fewshot.pool))
    ctx.log(f"eval: {len(tasks)} task(s) x {len(variants)} variant(s)")
    opts = RunOptions(
        out_dir=ctx.output_dir, limit=cfg.get("limit"), batch_size=int(cfg.get("batch_size") or 16),
        baseline=cfg.get("baseline"), progress=False,
        should_stop=lambda: ctx.should_stop,
        on_event=_with_steps(lambda **kw: (ctx.event(**kw), ctx.heartbeat())),
    )
    try:
        report = run_eval(tasks, variants, opts)
    except EvalStopped:
        ctx.log("eval stopped; resume continues from the per-item cache")
        return
    ctx.event(type="eval_report", path=str(ctx.output_dir / "report.json"),
              regressions=len(report_mod.regressions(report)))
    ctx.log(report_mod.render_table(report))
