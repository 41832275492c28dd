"""Load a quantized artifact written by a quantize job (``job:ID`` with ``quant`` facts).

``tuneterm.workers.loading.load`` calls :func:`load_quantized` for artifacts whose manifest has
``quant`` facts; the tokenizer always comes from the artifact folder itself.

    int8-dynamic / int8-weight-only  int8.safetensors + int8.json, rebuilt with torch's int8 kernels
    bnb-int8 / bnb-nf4 / bnb-fp4     a bitsandbytes checkpoint (save_pretrained with its quantization config)
    gguf                             the .gguf file, de-quantized (gguf.quants, or transformers' GGUF loader) for chat;
                                     llama.cpp and Ollama read the file itself
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tuneterm.core.errors import ModelLoadError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def _bnb_device(quant: dict) -> str:
    wanted = quant.get("device", "auto")
    if wanted == "cuda" and not cuda_available():
        raise ModelLoadError(
            "this bitsandbytes artifact was made for CUDA and no GPU is visible",
            [("method", str(quant.get("method")))],
            "load it on a machine with a GPU, or quantize again with quant.device=cpu",
        )
    return "cuda" if wanted in ("cuda", "auto") and cuda_available() else "cpu"


def load_quantized(path: str | Path, quant: dict, device: str | None = None, fast: bool = True) -> Any:
    """The model (eval mode) of a quantized artifact folder. ``fast``: int8 and GGUF models get
    ``generate`` through tuneterm's lean decode loop (``quantize.fastgen.install``), so chat,
    serve and eval decode as fast as the benchmark measures."""
    model = _load(Path(path), quant, device)
    if fast and quant.get("method") in ("int8-dynamic", "int8-weight-only", "gguf"):
        from tuneterm.workers.quantize import fastgen

        fastgen.install(model)
    return model


def _load(path: Path, quant: dict, device: str | None) -> Any:
    method = quant.get("method", "")
    if method in ("int8-dynamic", "int8-weight-only"):
        from tuneterm.workers.quantize.int8 import load_int8

        return load_int8(path, method, _DTYPES.get(quant.get("compute_dtype", "float32"), torch.float32))
    if method.startswith("bnb-"):
        from transformers import AutoModelForCausalLM

        target = device or _bnb_device(quant)
        return AutoModelForCausalLM.from_pretrained(path, device_map=target).eval()
    if method == "gguf":
        from transformers import AutoModelForCausalLM

        from tuneterm.workers.quantize import gguf as gguf_export

        name = quant.get("file")
        if not name or not (path / name).is_file():
            raise ModelLoadError("the GGUF artifact's file is missing", [("folder", str(path)), ("file", str(name))])
        if (path / "config.json").is_file():  # written by tuneterm: read the tensors directly
            return gguf_export.load_model(path, name)
        model = AutoModelForCausalLM.from_pretrained(path, gguf_file=name, dtype=torch.float32)
        model.hf_quantizer = None  # de-quantized: a plain float model from here on
        return model.eval()
    raise ModelLoadError(
        f"unknown quantization method {method!r} in the artifact",
        [("folder", str(path))],
        "the artifact was written by a newer tuneterm, or its artifact.json was edited",
    )
