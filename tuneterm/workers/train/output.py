"""A finished train job's ``output/``: the artifact, the frozen config, final metrics, a model card,
and ``artifact.json`` so that ``job:ID`` works wherever a model reference does."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from tuneterm.core.fsutil import atomic_write_json, atomic_write_text


def _base_ref(config: dict) -> str:
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
    base = _base_ref(config)
    adapter = method in ("lora", "qlora") if adapter is None else adapter
    weights = out / ("adapter" if adapter else "model")
    save_weights(trainer, weights)
    if not ctx.is_main:
        return
    tokenizer.save_pretrained(weights)
    if adapter and config.get("lora", {}).get("merge"):
        _merge(weights, base_path, out / "model", tokenizer)
        ctx.write_artifact("model", "model", base=base, method=method, adapter="adapter")
    else:
        ctx.write_artifact(weights.name, weights.name, base=base, method=method)
    atomic_write_text(out / "config.toml", tomli_w.dumps(config))
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "README.md", card if card is not None else model_card(ctx.id, config, metrics))
    ctx.log(f"output written to {out}")


def _merge(adapter: Path, base_path: Path, target: Path, tokenizer) -> None:
    """Fold the adapter into a full-precision copy of the base (works for qlora too)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)


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
