"""A finished train job's ``output/``: the artifact, the frozen config, final metrics, a model card,
and ``artifact.json`` so that ``job:ID`` works wherever a model reference does."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from tuneterm.core.fsutil import atomic_write_json, atomic_write_text, building_dir
from tuneterm.workers.adapters import merge_adapter


def _base_ref(config: dict) -> str:
    """The base as a reference that resolves from anywhere (relative folders made absolute)."""
    ref = config["model"]
    path = Path(ref).expanduser()
    if not ref.startswith(("hf:", "job:")) and path.exists():
        return str(path.resolve())
    return ref


def write(ctx, model, tokenizer, config: dict, base_path: Path, metrics: dict) -> None:
    out = ctx.output_dir
    method = config["method"]
    base = _base_ref(config)
    if method in ("lora", "qlora"):
        adapter = out / "adapter"
        _save(adapter, model, tokenizer)
        _portable_base(adapter, base)
        if config.get("lora", {}).get("merge"):
            merge_adapter(adapter, base_path, out / "model", tokenizer)
            ctx.write_artifact("model", "model", base=base, method=method, adapter="adapter")
        else:
            ctx.write_artifact("adapter", "adapter", base=base, method=method)
    else:
        _save(out / "model", model, tokenizer)
        ctx.write_artifact("model", "model", base=base, method=method)
    atomic_write_text(out / "config.toml", tomli_w.dumps(config))
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "README.md", model_card(ctx.id, config, metrics))
    ctx.log(f"output written to {out}")


def _save(target: Path, *parts) -> None:
    """``save_pretrained`` of each part into a temporary folder renamed to ``target``: a full disk
    or a crash leaves no half-written artifact behind."""
    with building_dir(target, lambda _: False) as tmp:
        for part in parts:
            part.save_pretrained(tmp)


def _portable_base(adapter: Path, base: str) -> None:
    """A Hub base is named by its repo id in adapter_config.json (PEFT writes the cache snapshot's path,
    which breaks when the cache moves); tuneterm and PEFT both resolve ``ORG/NAME`` from the cache."""
    import json

    if not base.startswith("hf:"):
        return
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base[3:].split("@")[0]
    if "@" in base:
        cfg["revision"] = base.split("@", 1)[1]
    atomic_write_text(cfg_path, json.dumps(cfg, indent=2))


def model_card(job_id: str, config: dict, metrics: dict) -> str:
    t = config.get("train", {})
    lines = [
        f"# {config['method']} fine-tune of {config['model']} (tuneterm job {job_id})",
        "",
        f"- data: `{config['data']}`" + (f", validation `{config['eval_data']}`" if config.get("eval_data") else ""),
        f"- method: {config['method']}, epochs {t.get('epochs')}, batch {t.get('batch_size')} x accumulation "
        f"{t.get('grad_accum')}, lr {t.get('lr')}, max length {t.get('max_length')}, loss on {t.get('loss')} tokens",
    ]
    if config["method"] in ("lora", "qlora"):
        lo = config.get("lora", {})
        lines.append(f"- LoRA: r {lo.get('r')}, alpha {lo.get('alpha')}, dropout {lo.get('dropout')}, "
                     f"targets {lo.get('target_modules')}")
    if config["method"] == "freeze":
        fr = config.get("freeze", {})
        lines.append(f"- trained: last {fr.get('last_n_blocks')} blocks, modules {fr.get('modules')}")
    for key in ("final_loss", "eval_loss", "train_seconds", "tokens", "trainable_params"):
        if metrics.get(key) is not None:
            lines.append(f"- {key}: {metrics[key]}")
    lines += ["", f"Use it: `tuneterm chat job:{job_id} \"...\"`. Full config: `config.toml`; "
              "figures: `metrics.json`.", ""]
    return "\n".join(lines)


__all__ = ["write", "model_card"]
