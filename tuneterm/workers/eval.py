"""The ``eval`` job kind: ``run(ctx)`` runs ``tuneterm eval`` inside a job.

Config keys: ``spec`` (task/suite path), ``models`` (list or comma-separated string),
``limit``, ``batch_size``, ``baseline``. The report goes to ``output/`` (report.json,
samples.jsonl, report.md). SIGTERM stops between batches; a resumed job reuses the per-item
cache, so it continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from tuneterm.core.errors import InputError
from tuneterm.core.evals import report as report_mod
from tuneterm.core.evals.spec import load_suite
from tuneterm.core.evals.variants import parse_variants, split_models
from tuneterm.workers.evals.runner import EvalStopped, RunOptions, run_eval


def run(ctx) -> None:
    cfg = dict(ctx.config)
    if not cfg.get("spec") or not cfg.get("models"):
        raise InputError("an eval job needs spec and models", [("config", str(sorted(cfg)))],
                         "e.g. {spec: evals/tickets, models: [smollm2-135m-instruct, job:ID]}")
    models = cfg["models"] if isinstance(cfg["models"], list) else split_models(str(cfg["models"]))
    tasks = load_suite(Path(cfg["spec"]))
    variants = parse_variants(models)
    ctx.log(f"eval: {len(tasks)} task(s) x {len(variants)} variant(s)")
    opts = RunOptions(
        out_dir=ctx.output_dir, limit=cfg.get("limit"), batch_size=int(cfg.get("batch_size") or 16),
        baseline=cfg.get("baseline"), progress=False,
        should_stop=lambda: ctx.should_stop,
        on_event=lambda **kw: (ctx.event(**kw), ctx.heartbeat()),
    )
    try:
        report = run_eval(tasks, variants, opts)
    except EvalStopped:
        ctx.log("eval stopped; resume continues from the per-item cache")
        return
    ctx.event(type="eval_report", path=str(ctx.output_dir / "report.json"),
              regressions=len(report_mod.regressions(report)))
    ctx.log(report_mod.render_table(report))
