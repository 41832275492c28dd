"""Disk space for jobs (torch-free): what a training job will write, a refusal with the figures when
the disk cannot hold it, and the one sentence a job fails with when the disk fills anyway.

The estimate counts parameters from the files (safetensors headers, GGUF tensor tables), then:
full and freeze keep ``checkpoint.keep`` checkpoints of weights plus Adam state (12 bytes a
parameter) and write the model (4 bytes a parameter); lora and qlora do the same for the adapter,
whose size follows from the rank and the model's shapes (config.json); a merged model adds the full
weights; converting the embedded model's GGUF for the first time adds its float32 checkpoint.
"""

from __future__ import annotations

import errno
import json
import shutil
import struct
from pathlib import Path

from tuneterm.core.errors import RuntimeFailure

HEADROOM = 64 * 2**20  # logs, events, tokenizer files, the status


def human(n: float) -> str:
    """Bytes for people: ``512 B``, ``3 KB``, ``12.3 MB``, ``1.6 GB`` (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# --- parameters from files --------------------------------------------------------------------


def _safetensors_params(path: Path) -> int:
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for dim in info.get("shape", []):
            n *= int(dim)
        total += n
    return total


def _gguf_facts(path: Path) -> tuple[int, dict]:
    """Parameter count and the shapes a config.json would give (hidden size, layers, MLP width)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    shapes = {"embedding_length": "hidden_size", "block_count": "num_hidden_layers",
              "feed_forward_length": "intermediate_size"}
    config = {}
    for key, field in reader.fields.items():
        name = shapes.get(key.rsplit(".", 1)[-1])
        if name and field.data:
            config[name] = int(field.parts[field.data[0]][0])
    return sum(int(t.n_elements) for t in reader.tensors), config


def model_facts(ref: str) -> tuple[int | None, dict, Path | None]:
    """(parameter count or None, config.json or {}, the GGUF that still needs converting or None)."""
    from tuneterm.core import modelref
    from tuneterm.core.workspace import workspace

    try:
        parsed = modelref.parse(ref)
    except Exception:  # noqa: BLE001 - an estimate never blocks a job the command already checked
        return None, {}, None
    folder, gguf = None, None
    if parsed.kind in ("embedded", "gguf"):
        gguf = modelref.embedded_gguf_path() if parsed.kind == "embedded" else Path(parsed.target)
        cached = modelref.gguf_cache_dir(gguf, workspace().models_dir)
        if modelref.is_converted(cached):
            folder, gguf = cached, None
    elif parsed.kind == "dir":
        folder = Path(parsed.target)
    elif parsed.kind == "job":
        try:
            art = modelref.job_artifact(parsed.target, workspace().jobs_dir)
        except Exception:  # noqa: BLE001
            return None, {}, None
        folder = art.path if art.kind != "adapter" else None
    config: dict = {}
    if folder is not None:
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        files = sorted(folder.glob("*.safetensors"))
        try:
            return (sum(_safetensors_params(f) for f in files) or None), config, None
        except (OSError, ValueError, struct.error):
            return None, config, None
    if gguf is not None:
        try:
            params, config = _gguf_facts(gguf)
            return params, config, gguf
        except Exception:  # noqa: BLE001
            return None, config, gguf
    return None, config, None


def _adapter_params(params: int, config: dict, lora: dict) -> int:
    r = int(lora.get("r", 16))
    hidden = int(config.get("hidden_size") or 0)
    layers = int(config.get("num_hidden_layers") or 0)
    inter = int(config.get("intermediate_size") or 0)
    if hidden and layers:  # all-linear: q, k, v, o (~4 x (h + h)) and gate, up, down (3 x (h + i))
        return r * layers * (8 * hidden + 3 * (hidden + inter))
    return max(params // 50, 1)  # no shapes: a generous 2 %


# --- the estimate --------------------------------------------------------------------------------


def estimate(kind: str, config: dict) -> list[tuple[str, int]]:
    """What a job of ``kind`` with ``config`` writes, as (what, bytes); [] when unknown."""
    if kind == "quantize":
        return _quantize_estimate(str(config.get("model") or ""))
    if kind not in ("train", "distill", "sequential"):
        return []
    params, model_cfg, gguf = model_facts(str(config.get("model") or config.get("teacher") or ""))
    if not params:
        return []
    method = config.get("method", "full")
    keep = max(1, int((config.get("checkpoint") or {}).get("keep", 2) or 1))
    out: list[tuple[str, int]] = []
    if gguf is not None:
        out.append(("the converted base model (once, in the models folder)", params * 4))
    if method in ("lora", "qlora"):
        adapter = _adapter_params(params, model_cfg, config.get("lora") or {})
        out.append((f"{keep} checkpoint(s) of the adapter with optimizer state", keep * adapter * 12))
        out.append(("the adapter", adapter * 4))
        if (config.get("lora") or {}).get("merge"):
            out.append(("the merged model", params * 4))
    else:
        out.append((f"{keep} checkpoint(s) of the weights with optimizer state", keep * params * 12))
        out.append(("the model", params * 4))
    return out


def _quantize_estimate(ref: str) -> list[tuple[str, int]]:
    """A quantize job: the merged model when its input is an adapter, and the quantized model (at most
    16 bits a weight, with the scales)."""
    params, _, gguf = model_facts(ref)
    out: list[tuple[str, int]] = []
    if not params and ref.startswith("job:"):
        from tuneterm.core import modelref
        from tuneterm.core.workspace import workspace

        try:
            art = modelref.job_artifact(ref[4:], workspace().jobs_dir)
        except Exception:  # noqa: BLE001 - an estimate never blocks a job the command already checked
            return []
        if art.kind == "adapter" and art.base:
            params, _, gguf = model_facts(art.base)
            if params:
                out.append(("the merged model", params * 4))
    if not params:
        return []
    if gguf is not None:
        out.append(("the converted base model (once, in the models folder)", params * 4))
    return out + [("the quantized model", params * 2)]


def free_bytes(folder: Path) -> int:
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_space(kind: str, config: dict, folder: Path, force: bool = False) -> list[tuple[str, int]]:
    """Refuse (RuntimeFailure, with the figures) when ``folder``'s disk cannot hold the job's writes."""
    parts = estimate(kind, config)
    if not parts or force:
        return parts
    need = sum(b for _, b in parts) + HEADROOM
    free = free_bytes(folder)
    if need > free:
        raise RuntimeFailure(
            f"not enough disk space for this job: it needs about {human(need)}, {human(free)} is free",
            [("folder", str(folder))] + [(what, human(b)) for what, b in parts],
            "free some space (`tuneterm jobs rm ID` removes old jobs), keep fewer checkpoints "
            "(checkpoint.keep=1), or pass --force to try anyway",
        )
    return parts


# --- when the disk fills anyway -------------------------------------------------------------------


def disk_full(exc: BaseException) -> OSError | BaseException | None:
    """The exception in ``exc``'s chain that says the disk is full (errno ENOSPC or EDQUOT, or a library's
    "No space left on device" message), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def prune_incomplete_checkpoints(checkpoints: Path) -> list[Path]:
    """Delete ``checkpoint-N`` folders that a crash left half-written (no ``trainer_state.json``, which
    the trainer writes last), so that a resume starts from the last good one. Returns those removed."""
    removed = []
    for folder in sorted(Path(checkpoints).glob("checkpoint-*")):
        if folder.is_dir() and not (folder / "trainer_state.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def full_disk_sentence(job_id: str, folder: Path, kind: str, config: dict, exc: BaseException) -> str:
    """One sentence: the folder, the space needed, and how to continue."""
    where = Path(getattr(exc, "filename", None) or folder)
    where = where if where.is_dir() else where.parent
    needed = sum(b for _, b in estimate(kind, config))
    free = free_bytes(where)
    need_text = (f"about {human(needed)} is needed and {human(free)} is free" if needed
                 else f"{human(free)} is free")
    return (f"the disk is full in {where} ({need_text}): free some space there, then "
            f"`tuneterm jobs resume {job_id}` continues from the last good checkpoint")
