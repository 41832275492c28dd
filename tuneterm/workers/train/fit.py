"""Will this run fit the GPU? The memory estimate from ``config.json`` alone, and what the worker does
about it before it loads a single weight.

The model is built on the meta device (shapes, no storage), so a 70B config is measured in a second
on a machine without its weights. The formula is :mod:`tuneterm.core.memory`'s. torch is imported
inside the functions: ``tuneterm train`` asks :func:`gpu_visible` first and imports it only on a GPU box.
"""

from __future__ import annotations

from pathlib import Path

from tuneterm.core import memory

GIB = 1024**3


def meta_shape(folder: Path) -> memory.ModelShape:
    """Tensor shapes of the model in ``folder`` from its ``config.json``, built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return memory.shape_of((name, tuple(p.shape)) for name, p in model.named_parameters())


def gpu_gib() -> float | None:
    """The smallest visible GPU's memory in GiB; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())) / GIB


def plan_memory(config: dict, folder: Path, device: str, nproc: int = 1, gpu: float | None = None) -> dict:
    """The estimate for ``config`` on ``device``; on a GPU that it does not fit, gradient checkpointing
    is switched on in ``config`` (and said so) when that makes it fit. Returns the estimate with
    ``fits`` (bool or None on the CPU), ``gradient_checkpointing_auto`` and ``advice``."""
    shape = memory.inspect_checkpoint(folder) or meta_shape(folder)
    sized = {**config, "_nproc": nproc}
    est = memory.estimate(shape, sized, device)
    est.update(fits=None, gradient_checkpointing_auto=False, advice=None, gpu_gib=gpu)
    if gpu is None:
        return est
    tip = memory.advice(est, gpu, sized)
    t = config.setdefault("train", {})
    if tip and not t.get("gradient_checkpointing"):
        t["gradient_checkpointing"] = True
        retry = memory.estimate(shape, {**config, "_nproc": nproc}, device)
        if memory.advice(retry, gpu, {**config, "_nproc": nproc}) is None:
            retry.update(fits=True, gradient_checkpointing_auto=True, advice=None, gpu_gib=gpu)
            return retry
        t["gradient_checkpointing"] = False
    est.update(fits=tip is None, advice=tip)
    return est


def describe(est: dict) -> str:
    line = memory.describe(est).replace("\n", ";")
    if est.get("gpu_gib"):
        line += f"; GPU {est['gpu_gib']:.1f} GiB"
    if est.get("gradient_checkpointing_auto"):
        line += "; gradient checkpointing switched on so that it fits"
    if est.get("advice"):
        line += f"; does not fit: {est['advice']}"
    return line


def gpu_visible() -> bool:
    """An NVIDIA GPU on this machine, asked without importing torch (the command's start-up stays light)."""
    import os

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir())


def launch_note(config: dict, model_ref: str, nproc: int = 1) -> str | None:
    """For ``tuneterm train`` before a job exists, on a GPU machine: the estimate for the visible GPUs and,
    when it does not fit, what to change. None on a CPU-only machine or when the model is not local."""
    from tuneterm.core.memory import model_folder

    folder = model_folder(model_ref)
    if folder is None or not (Path(folder) / "config.json").is_file() or gpu_gib() is None:
        return None
    est = plan_memory(dict(config, train=dict(config.get("train", {}))), Path(folder), "cuda", nproc, gpu_gib())
    return "memory: " + describe(est)
