"""The ``quantize`` job kind: ``run(ctx)`` for ``python -m tuneterm.workers.run JOB_DIR``.

Light at import (the command validates configs through ``.config`` before any model loads);
the work is in ``.pipeline``, the int8 kernels in ``.int8``, SmoothQuant in ``.smooth``, the
per-layer sensitivity search in ``.sensitivity``, the lean decode loop in ``.fastdecode`` and its
``model.generate`` front in ``.fastgen``, GGUF in ``tuneterm.workers.gguf_export``, the
measurements in ``tuneterm.workers.quant_gate``, loading in ``tuneterm.workers.quant_loading``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable


def _finite(value: Any) -> Any:
    """Events are strict JSON: infinities and NaN (a ruined model's perplexity) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def quantize(parent_ref: str, method: str, config: dict, out_dir: Path,
             emit: Callable[..., None] | None = None, should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Quantize and gate (see ``pipeline.quantize``); ``config`` as resolved by ``config.resolve``."""
    from tuneterm.workers.quantize.pipeline import quantize as work

    return work(parent_ref, method, config, Path(out_dir), emit, should_stop)


def run(ctx: Any) -> None:
    """The job: quantize ``ctx.config["model"]``, gate it, and publish ``job:ID`` when it passes."""
    from tuneterm.workers.quantize.config import from_spec

    config = from_spec(ctx.config)

    def emit(**fields) -> None:
        fields = _finite(fields)
        ctx.event(**fields)
        phase = fields.get("phase")
        if phase:
            extras = {k: v for k, v in fields.items() if k not in ("type", "phase", "parent", "quantized", "samples")}
            ctx.log(f"{fields.get('type', 'quantize')}: {phase} {extras if extras else ''}".rstrip())
        ctx.heartbeat()

    ctx.log(f"quantizing {config['model']} with {config['method']}")
    result = quantize(config["model"], config["method"], config, ctx.output_dir, emit, lambda: ctx.should_stop)
    if result.get("stopped") or ctx.should_stop:
        ctx.log("stopped before the artifact was finished")
        return
    quality = result.get("quality") or {}
    ctx.write_artifact(
        result["artifact_kind"], result["path"], base=config["model"], quant=_finite(result["quant"]),
        method=config["method"], gate_passed=result["passed"],
        quality={k: _finite(quality.get(k)) for k in ("ppl_increase", "mean_kl", "top1_agreement", "exact_match",
                                                       "size_ratio", "speedup")} if quality else None,
    )
    ctx.log(f"artifact ready: job:{ctx.id}")
