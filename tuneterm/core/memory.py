"""A rough memory estimate for a training run, before anything is loaded (torch-free).

The model's size comes from its safetensors headers (shapes only, no weights read) or, where
there are no weights yet, from tensor shapes the worker side builds from ``config.json`` on the
meta device (:func:`tuneterm.workers.train.fit.meta_shape`). The formula is the usual
back-of-the-envelope one, and every screen says it is an estimate:

- weights: params x bytes per param (4 fp32, 2 bf16/fp16, ~0.55 for 4-bit NF4 with constants);
- trained params (all for full; the last N blocks for freeze; r x (in + out) per adapted
  linear layer for LoRA/QLoRA): a gradient (same bytes) plus AdamW's two fp32 moments (8 bytes);
- activations: batch x max_length x hidden x layers x ~34 bytes (x ~1/8 with gradient
  checkpointing), in the compute precision.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}
NF4_BYTES = 0.55  # 4 bits + quantization constants (double-quantized)
LINEAR = re.compile(r"(^|\.)(q|k|v|o|gate|up|down|query|key|value|dense|fc1|fc2|c_attn|c_proj|c_fc)(_proj)?\.weight$")
LAYER = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


@dataclass
class ModelShape:
    n_params: int = 0
    n_layers: int = 0
    hidden: int = 0
    linear: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (out, in)
    params_by_layer: dict[int, int] = field(default_factory=dict)


def _headers(folder: Path) -> list[dict]:
    files = sorted(folder.glob("*.safetensors"))
    out = []
    for path in files:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            out.append(json.loads(fh.read(size)))
    return out


def inspect_checkpoint(folder: Path) -> ModelShape | None:
    """Shapes of every tensor in ``folder``'s safetensors files; None when there are none."""
    headers = _headers(Path(folder))
    if not headers:
        return None
    return shape_of((name, meta.get("shape", [])) for header in headers for name, meta in header.items()
                    if name != "__metadata__")


def shape_of(named_dims) -> ModelShape:
    """A :class:`ModelShape` from ``(tensor name, dims)`` pairs (checkpoint headers or a meta model)."""
    shape = ModelShape()
    for name, dims in named_dims:
        dims = list(dims)
        count = 1
        for d in dims:
            count *= int(d)
        shape.n_params += count
        layer = LAYER.search(name)
        if layer:
            idx = int(layer.group(1))
            shape.n_layers = max(shape.n_layers, idx + 1)
            shape.params_by_layer[idx] = shape.params_by_layer.get(idx, 0) + count
        if len(dims) == 2 and LINEAR.search(name):
            shape.linear[name] = (int(dims[0]), int(dims[1]))
        if name.endswith("embed_tokens.weight") or name.endswith("wte.weight"):
            shape.hidden = int(dims[1])
    if not shape.hidden and shape.linear:
        shape.hidden = min(min(v) for v in shape.linear.values())
    return shape


def model_folder(ref: str) -> Path | None:
    """The local checkpoint folder of ``ref`` without loading anything; None if unknown here."""
    from tuneterm.core import modelref
    from tuneterm.core.workspace import workspace

    parsed = modelref.parse(ref)
    ws = workspace(create=False)
    if parsed.kind in ("embedded", "gguf"):
        gguf = modelref.embedded_gguf_path() if parsed.kind == "embedded" else Path(parsed.target)
        folder = modelref.gguf_cache_dir(gguf, ws.models_dir)
        return folder if modelref.is_converted(folder) else None
    if parsed.kind == "dir":
        return Path(parsed.target)
    if parsed.kind == "job":
        art = modelref.job_artifact(parsed.target, ws.jobs_dir)
        if art.kind == "adapter" and art.base:
            return model_folder(art.base)
        return art.path
    return None


def estimate(shape: ModelShape, config: dict, device: str = "cpu") -> dict:
    """Bytes by part (GiB) for ``config`` (a resolved recipe with ``method``) on ``device`` (cpu|cuda)."""
    method = config.get("method", "lora")
    t = config.get("train", {})
    precision = str(t.get("precision", "auto"))
    if precision == "auto":  # the worker's rule: bf16/fp16 weights and compute on a GPU, fp32 on the CPU
        precision = "bf16" if device.startswith("cuda") else "fp32"
    compute = BYTES.get(precision, 4.0)
    P = shape.n_params
    if method == "full":
        trained = P
    elif method == "freeze":
        n = int(config.get("freeze", {}).get("last_n_blocks", 0))
        layers = sorted(shape.params_by_layer)[-n:] if n else []
        trained = sum(shape.params_by_layer[i] for i in layers)
    else:
        r = int(config.get("lora", {}).get("r", 16))
        targets = config.get("lora", {}).get("target_modules", "all-linear")
        chosen = [
            dims for name, dims in shape.linear.items()
            if targets == "all-linear" or any(name.endswith(f"{t}.weight") for t in targets or [])
        ]
        trained = sum(r * (out + inp) for out, inp in chosen)
    weights = P * (NF4_BYTES if method == "qlora" else compute)
    if method in ("lora", "qlora"):
        weights += trained * 4.0
    grads = trained * (compute if method in ("full", "freeze") else 4.0)
    optimizer = trained * 8.0
    tokens = int(t.get("batch_size", 8)) * int(t.get("max_length", 512))
    activations = tokens * max(shape.hidden, 1) * max(shape.n_layers, 1) * 34 * (compute / 2)
    if t.get("gradient_checkpointing"):
        activations /= 8
    weights /= max(1, _shards(config, "weights"))
    grads /= max(1, _shards(config, "grads"))
    optimizer /= max(1, _shards(config, "optimizer"))
    total = weights + grads + optimizer + activations
    return {
        "method": method, "precision": precision, "params": P, "trained_params": trained,
        "weights_gib": weights / GIB, "grads_gib": grads / GIB, "optimizer_gib": optimizer / GIB,
        "activations_gib": activations / GIB, "total_gib": total / GIB,
    }


def describe(est: dict) -> str:
    share = est["trained_params"] / est["params"] if est["params"] else 0
    return (
        f"≈ {est['total_gib']:.2f} GiB (estimate) for {est['method']}, precision {est['precision']}\n"
        f"  weights {est['weights_gib']:.2f} · grads {est['grads_gib']:.2f} · AdamW {est['optimizer_gib']:.2f} · "
        f"activations {est['activations_gib']:.2f}\n"
        f"  {est['params'] / 1e6:,.1f} M params, {est['trained_params'] / 1e6:,.2f} M trained ({share:.2%})"
    )


def _shards(config: dict, part: str) -> int:
    """Over how many GPUs a part is split: FSDP and ZeRO-3 shard everything, ZeRO-2 gradients and
    optimizer state; DDP and one GPU keep a whole copy per GPU."""
    n = int(config.get("_nproc", 1) or 1)
    strategy = (config.get("launch") or {}).get("strategy", "ddp")
    if strategy in ("fsdp", "zero3") or (strategy == "zero2" and part != "weights"):
        return n
    return 1


def advice(est: dict, gpu_gib: float, config: dict) -> str | None:
    """None when ``est`` fits a GPU of ``gpu_gib`` (with 10% headroom); else what to change, in order."""
    if est["total_gib"] <= gpu_gib * 0.9:
        return None
    t = config.get("train", {})
    tips = []
    if not t.get("gradient_checkpointing"):
        tips.append("train.gradient_checkpointing=true")
    if est["method"] == "full":
        tips.append("--method lora (or qlora)")
    elif est["method"] == "lora":
        tips.append("--method qlora")
    if int(t.get("batch_size", 8)) > 1:
        tips.append(f"a smaller train.batch_size with train.grad_accum (now {t.get('batch_size', 8)})")
    if (config.get("launch") or {}).get("strategy", "ddp") in ("ddp", "zero2"):
        tips.append("several GPUs with launch.strategy=fsdp or zero3 (--nproc N)")
    return (f"needs about {est['total_gib']:.1f} GiB per GPU, the GPU has {gpu_gib:.1f} GiB; try "
            + ", ".join(tips))
