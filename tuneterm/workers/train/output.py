"""A finished train job's ``output/``: the artifact, the frozen config, final metrics, a model card,
and ``artifact.json`` so that ``job:ID`` works wherever a model reference does."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import tomli_w

from tuneterm.core import trained_prompt
from tuneterm.core.fsutil import atomic_write_json, atomic_write_text
from tuneterm.workers.adapters import merge_adapter


def base_ref(config: dict) -> str:
    """The base as a reference that resolves from anywhere (relative folders made absolute)."""
    ref = config["model"]
    path = Path(ref).expanduser()
    if not ref.startswith(("hf:", "job:")) and path.exists():
        return str(path.resolve())
    return ref


def save_weights(trainer, target: Path) -> None:
    """The trained weights (adapter or model) into ``target``. Called on EVERY rank: under FSDP the full
    state dict is gathered and under ZeRO-3 the shards are consolidated by ``Trainer.save_model``, which
    needs all ranks; only the main process writes files."""
    trainer.save_model(str(target))
    if trainer.args.should_save:
        (Path(target) / "training_args.bin").unlink(missing_ok=True)  # a pickle nobody loads the model with


def write(ctx, trainer, tokenizer, config: dict, base_path: Path, metrics: dict, *,
          adapter: bool | None = None, card: str | None = None) -> None:
    """The job's output: adapter (PEFT format) or model, config.toml, metrics, card, artifact.json.
    Every rank calls it (see :func:`save_weights`); the main one writes the rest. ``adapter`` defaults
    to the method being lora/qlora; ``card`` to :func:`model_card`."""
    out = ctx.output_dir
    method = config["method"]
    base = base_ref(config)
    adapter = method in ("lora", "qlora") if adapter is None else adapter
    weights = out / ("adapter" if adapter else "model")
    partial = out / f".{weights.name}.partial"  # the same path on every rank; renamed into place when whole
    save_weights(trainer, partial)
    if not ctx.is_main:
        return
    tokenizer.save_pretrained(partial)
    if adapter:
        _portable_base(partial, base)
    if weights.exists():  # a half-written folder from before
        shutil.rmtree(weights)
    os.replace(partial, weights)
    prompt = trained_prompt.artifact_fields(config.get("data"))  # the data's one system prompt, if it has one
    if adapter and config.get("lora", {}).get("merge"):
        merge_adapter(weights, base_path, out / "model", tokenizer)
        ctx.write_artifact("model", "model", base=base, method=method, adapter="adapter", **prompt)
    else:
        ctx.write_artifact(weights.name, weights.name, base=base, method=method, **prompt)
    atomic_write_text(out / "config.toml", tomli_w.dumps(config))
    atomic_write_json(out / "metrics.json", metrics)
    summary = card if card is not None else model_card(ctx.id, config, metrics)
    atomic_write_text(out / "README.md", hub_card(ctx, summary))
    ctx.log(f"output written to {out}")


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


def hub_card(ctx, summary: str) -> str:
    """``summary`` (a kind's own card) inside the Hub-style card of the job (``core/modelcard.py``); a
    sequential stage's output keeps the plain summary (the pipeline's card is the job's)."""
    from tuneterm.core import modelcard

    if Path(ctx.output_dir).resolve() != (Path(ctx.job_dir) / "output").resolve():
        return summary
    kept = [line for line in summary.splitlines() if not line.startswith(("# ", "Use it:"))]
    return modelcard.render(ctx.job_dir, details="\n".join(kept).strip("\n") + "\n")


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


__all__ = ["write", "model_card", "hub_card"]
