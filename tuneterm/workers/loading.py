"""Turn a model reference into a loaded (model, tokenizer) pair.

GGUF files, the embedded model's included, are de-quantized by transformers once and cached
as a safetensors checkpoint under ``<workspace>/models/<stem>-<sha256[:16]>/``; later loads
read the cache (about 0.1 s instead of about 20 s). Cache writes happen under a file lock, into a
temporary folder renamed into place, so processes started together share one conversion.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneterm.core import modelref
from tuneterm.core.errors import InputError, ModelLoadError, TunetermError
from tuneterm.core.fsutil import atomic_write_json, building_dir, lock_path
from tuneterm.core.workspace import workspace

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


@dataclass
class LoadedModel:
    ref: str
    model: Any
    tokenizer: Any
    path: Path | None = None  # the folder the weights came from
    load_seconds: float = 0.0
    info: dict = field(default_factory=dict)


def ensure_converted(gguf: Path, models_dir: Path | None = None) -> Path:
    """The cached safetensors checkpoint for ``gguf``, converting it first if needed.

    The conversion is written to a temporary folder and renamed into place under a file lock
    (``fsutil.building_dir``): jobs started together wait for the first one's conversion and
    never read a half-written folder.
    """
    models_dir = models_dir or workspace().models_dir
    target = modelref.gguf_cache_dir(gguf, models_dir)
    try:
        with building_dir(target, modelref.is_converted) as tmp:
            if tmp is not None:
                _convert(gguf, tmp, target.name.rsplit("-", 1)[-1])
    except TunetermError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            "could not convert the GGUF file to a checkpoint",
            [("file", str(gguf)), ("problem", f"{type(exc).__name__}: {exc}")],
            "check that the file is a complete GGUF of a model transformers supports (llama, mistral, qwen2, ...)",
        ) from exc
    return target


def _convert(gguf: Path, folder: Path, sha: str) -> None:
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model de-quantized from GGUF refuses save_pretrained until the quantizer is cleared.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    atomic_write_json(folder / "COMPLETE", {
        "source": str(gguf), "sha256": sha, "seconds": round(time.perf_counter() - started, 2),
    })


def local_path(ref: str | modelref.ModelRef) -> tuple[Path, dict]:
    """The local folder holding ``ref``'s weights, plus facts (base for adapters, quant...)."""
    parsed = modelref.parse(ref) if isinstance(ref, str) else ref
    ws = workspace()
    if parsed.kind == "embedded":
        return ensure_converted(modelref.embedded_gguf_path(), ws.models_dir), {}
    if parsed.kind == "gguf":
        return ensure_converted(Path(parsed.target), ws.models_dir), {}
    if parsed.kind == "dir":
        folder = Path(parsed.target)
        adapter_cfg = folder / "adapter_config.json"
        if adapter_cfg.is_file():
            cfg = json.loads(adapter_cfg.read_text())
            base = cfg.get("base_model_name_or_path")
            if base and not Path(base).expanduser().exists() and base.count("/") == 1 and base[0] not in "/.~":
                base = f"hf:{base}" + (f"@{cfg['revision']}" if cfg.get("revision") else "")  # a Hub base
            return folder, {"adapter": True, "base": base}
        return folder, {}
    if parsed.kind == "hf":
        return _hf_snapshot(parsed), {}
    if parsed.kind == "job":
        art = modelref.job_artifact(parsed.target, ws.jobs_dir)
        facts = {"artifact": art.kind, "base": art.base, "quant": art.quant, **art.extra}
        if art.kind == "adapter":
            facts["adapter"] = True
        return art.path, facts
    raise InputError(
        f"{parsed.raw} is served remotely, not loaded locally",
        [("reference", parsed.raw)],
        "chat with it through `tuneterm chat`, which talks to OpenAI-compatible servers",
    )


def _hf_snapshot(parsed: modelref.ModelRef) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(parsed.target, revision=parsed.revision, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except Exception as exc:  # a damaged cache entry
        raise modelref.hf_missing_error(parsed.target, str(exc)) from exc
    if modelref.offline():
        raise modelref.hf_missing_error(parsed.target, "offline mode is on (HF_HUB_OFFLINE or TUNETERM_OFFLINE)")
    try:  # one download at a time per model: a second process waits, then finds it in the cache
        from filelock import FileLock

        lock = lock_path(workspace().models_dir / ("hf-" + parsed.target.replace("/", "--")))
        with FileLock(str(lock)):
            return Path(snapshot_download(parsed.target, revision=parsed.revision))
    except Exception as exc:
        raise modelref.hf_missing_error(parsed.target, f"download failed: {type(exc).__name__}") from exc


def load_tokenizer(ref: str) -> Any:
    path, facts = local_path(ref)
    if facts.get("adapter") and not (path / "tokenizer_config.json").is_file():
        path, _ = local_path(facts["base"])
    return AutoTokenizer.from_pretrained(path)


def load(ref: str, dtype: str | torch.dtype | None = None, device: str | None = None) -> LoadedModel:
    """Load ``ref`` for inference (eval mode) on ``device`` (auto: CUDA when visible) in ``dtype`` (auto:
    bf16/fp16 on a GPU, fp32 on the CPU), straight onto the GPU(s) without a host copy first."""
    from tuneterm.workers.device import inference_device_map, resolve_device, resolve_dtype

    started = time.perf_counter()
    path, facts = local_path(ref)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    placed = {"device_map": inference_device_map(device)} if device.startswith("cuda") else {}
    try:
        if facts.get("adapter"):
            from peft import PeftModel

            base_path, _ = local_path(facts["base"])
            base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype, **placed)
            model = PeftModel.from_pretrained(base, path)
            tok_dir = path if (path / "tokenizer_config.json").is_file() else base_path
        elif facts.get("quant"):
            from tuneterm.workers.quantize import load as quant_loading

            model = quant_loading.load_quantized(path, facts["quant"])
            tok_dir = path
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **placed)
            tok_dir = path
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    except TunetermError:
        raise
    except Exception as exc:  # safetensors, json, torch... all mean "this folder does not load"
        raise ModelLoadError(
            f"could not load {ref}",
            [("folder", str(path)), ("problem", f"{type(exc).__name__}: {str(exc)[:300]}")],
            f"if this is a cached conversion, delete {path} and run again to rebuild it",
        ) from exc
    if not placed and device != "cpu" and not facts.get("quant"):
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(ref, model, tokenizer, path, time.perf_counter() - started, facts)
