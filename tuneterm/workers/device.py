"""Where a model runs and in what precision: one rule for training and inference.

- ``device="auto"`` is CUDA when a GPU is visible, else the CPU.
- ``dtype=None``/``"auto"`` is bfloat16 on a GPU that supports it, float16 on an older GPU,
  float32 on the CPU (CPU kernels for half precision are slow and lose accuracy).
- Weights load straight onto their device (``device_map``): one GPU per training rank
  (``{"": local_rank}``), every visible GPU for inference of a model that does not fit one
  (``"auto"``), never a full copy in host memory first.
"""

from __future__ import annotations

import torch

from tuneterm.core.errors import InputError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | None) -> str:
    """``auto``/None -> ``cuda`` when a GPU is visible, else ``cpu``; anything else as given, checked."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("no CUDA device is visible", [("--device", device)],
                         "use --device cpu (or auto), or check nvidia-smi and CUDA_VISIBLE_DEVICES")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """The precision for ``device``: explicit names are kept; auto picks bf16/fp16 on CUDA, fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise InputError("unknown dtype", [("dtype", str(dtype))], "use auto, float32, bfloat16 or float16")
    return DTYPES[dtype]


def inference_device_map(device: str):
    """``device_map`` for ``from_pretrained`` at inference: all visible GPUs for ``cuda`` (accelerate
    spreads a model too big for one), the named GPU for ``cuda:N``, None (plain CPU load) otherwise."""
    if device == "cuda":
        return "auto" if torch.cuda.device_count() > 1 else {"": 0}
    if device.startswith("cuda:"):
        return {"": int(device.split(":", 1)[1])}
    return None


def training_device_map(local_rank: int):
    """Each training rank loads straight onto its own GPU (never all on cuda:0); None on the CPU."""
    return {"": local_rank} if torch.cuda.is_available() else None


def collective_device(local_rank: int = 0) -> torch.device:
    """The device for a tensor passed to a collective of the default process group.

    NCCL takes only CUDA tensors and gloo takes CPU tensors; a group created for CUDA only has no
    backend for the CPU at all ("No backend type associated with device type cpu"). So ask the
    group which devices it serves and put the tensor on one of them.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        return torch.device("cpu")
    devices = dist.distributed_c10d._get_default_group()._device_types
    return torch.device("cpu") if torch.device("cpu") in devices else torch.device("cuda", local_rank)
