"""Job kind ``quantize``: quantize ``config["model"]``, gate it against its parent, and publish
``job:ID`` when the gate passes (the work is ``tuneterm.workers.quantize.pipeline``)."""

from __future__ import annotations

from typing import Any

from tuneterm.core.jobs.describe import artifact_ready_sentence, quantize_sentence
from tuneterm.workers.jobctx import finite
from tuneterm.workers.quantize import quantize


def run(ctx: Any) -> None:
    """The job: quantize ``ctx.config["model"]``, gate it, and publish ``job:ID`` when it passes."""
    from tuneterm.core.quantize_config import from_spec

    config = from_spec(ctx.config)

    def emit(**fields) -> None:
        ctx.event(**fields)
        if fields.get("phase"):
            ctx.log(quantize_sentence(fields))
        ctx.heartbeat()

    ctx.log(f"quantizing {config['model']} with {config['method']}")
    from tuneterm.workers.quantize.gate import GateFailed

    try:
        result = quantize(config["model"], config["method"], config, ctx.output_dir, emit, lambda: ctx.should_stop)
    except GateFailed:  # a failed gate is a result too: the training run gets its figures
        report = ctx.output_dir / "quality.json"
        if report.is_file():
            import json

            _log_gate(ctx, config, {"quality": json.loads(report.read_text()), "passed": False})
        raise
    if result.get("stopped") or ctx.should_stop:
        ctx.log("stopped before the artifact was finished")
        return
    quality = result.get("quality") or {}
    from tuneterm.core.trained_prompt import inherited_fields

    ctx.write_artifact(
        result["artifact_kind"], result["path"], base=config["model"], quant=finite(result["quant"]),
        method=config["method"], gate_passed=result["passed"],
        quality={k: finite(quality.get(k)) for k in ("ppl_increase", "mean_kl", "top1_agreement", "exact_match",
                                                       "size_ratio", "speedup")} if quality else None,
        **inherited_fields(config["model"]),  # the system prompt the source job was trained with
    )
    if quality:
        _log_gate(ctx, config, result)
    from tuneterm.core.fsutil import atomic_write_text
    from tuneterm.workers.train.output import hub_card

    atomic_write_text(ctx.output_dir / "README.md", hub_card(ctx, f"Quantized with {config['method']}.\n"))
    ctx.log(artifact_ready_sentence(ctx.id, ctx.output_dir, ctx.output_dir / result["path"]))


def _log_gate(ctx: Any, config: dict, result: dict) -> None:
    """The gate's figures and report into the training run of the model it came from (when it had one)."""
    from tuneterm.workers.tracking import log_to_source

    quality = result.get("quality") or {}
    log_to_source(str(config.get("model", "")), ctx.job_dir.parent,
                  {**{f"quant/{k}": v for k, v in quality.items()}, "quant/gate_passed": int(bool(result["passed"]))},
                  text=("quantize_gate", _gate_text(ctx.id, config["method"], result)), log=ctx.log)


def _gate_text(job_id: str, method: str, result: dict) -> str:
    quality = result.get("quality") or {}
    lines = [f"quantize job {job_id} ({method}): gate {'passed' if result.get('passed') else 'failed'}", ""]
    lines += [f"- {k}: {v}" for k, v in quality.items() if isinstance(v, (int, float, str))]
    return "\n".join(lines)
