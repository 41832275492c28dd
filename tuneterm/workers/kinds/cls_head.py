"""Job kind ``cls_head``: a sequence-classification head over the labels of chat data
(``tuneterm.workers.cls_head``), LoRA on the backbone or every weight.

Reads top to bottom: setup (device, tokenizer, texts and labels, model) -> train (transformers.Trainer
through the train kind's TunetermTrainer, events, checkpoints and resume) -> score the validation
split -> output (``output/head/``, ``artifact.json`` of kind ``classifier``, config, metrics, card).
"""

from __future__ import annotations

import os
import shutil

import tomli_w
from transformers import AutoTokenizer

from tuneterm.core.datasets.labels import read_labelled
from tuneterm.core.errors import DatasetError
from tuneterm.core.fsutil import atomic_write_json, atomic_write_text
from tuneterm.workers import cls_head
from tuneterm.workers.train import methods
from tuneterm.workers.train.output import base_ref, hub_card, save_weights
from tuneterm.workers.train.trainer import JobEventsCallback, TunetermTrainer, build_args, train_or_resume


def run(ctx):
    """Train as ``ctx.config`` says; returns the Trainer (tests inspect its model)."""
    config = ctx.config
    t = config.get("train", {})
    base_path = methods.start(ctx, "a classification head")
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_length = int(t.get("max_length", 256))
    texts, labels = read_labelled(config["data"])
    names = sorted(set(labels))
    if len(names) < 2:
        raise DatasetError("a classification head needs at least two labels", [("file", config["data"])])
    index = {name: i for i, name in enumerate(names)}
    train_ds = cls_head.TextDataset(tokenizer, texts, [index[x] for x in labels], max_length)
    val_texts, val_labels, eval_ds = [], [], None
    if config.get("eval_data"):
        val_texts, val_labels = read_labelled(config["eval_data"])
        known = [i for i, x in enumerate(val_labels) if x in index]  # the loss needs a known label
        if known:
            eval_ds = cls_head.TextDataset(tokenizer, [val_texts[i] for i in known],
                                           [index[val_labels[i]] for i in known], max_length)
    ctx.log(f"data: {len(train_ds)} texts, {len(names)} labels ({train_ds.truncated} cut at max_length {max_length})"
            + (f", {len(val_texts)} validation texts" if val_texts else ""))

    model = cls_head.prepare(config, base_path, names, tokenizer.pad_token_id, local_rank=ctx.local_rank)
    if t.get("gradient_checkpointing") and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    trainable, total = methods.count_parameters(model)
    tune = config.get("head", {}).get("tune", "lora")
    ctx.log(f"model: {config['model']} with a {len(names)}-label head via {tune}: "
            f"{trainable:,} of {total:,} parameters trainable")
    ctx.event(type="setup", method="cls_head", tune=tune, labels=len(names), trainable_params=trainable,
              total_params=total, train_examples=len(train_ds), eval_examples=len(eval_ds) if eval_ds else 0,
              train_tokens=train_ds.n_tokens)

    # --- train ---------------------------------------------------------------------------------
    from transformers import EarlyStoppingCallback, PrinterCallback

    from tuneterm.workers import tracking

    _, tracker_callbacks = tracking.trainer_setup(ctx, config)
    args = build_args(config, ctx.checkpoints_dir, eval_ds is not None, len(train_ds),
                      trackers=tracking.trainer_args(ctx, config))
    ref: list = []
    callbacks = [JobEventsCallback(ctx, ref, config), *tracker_callbacks]
    patience = int(config.get("eval", {}).get("early_stopping_patience", 0))
    if eval_ds is not None and patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = TunetermTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=cls_head.PadTexts(tokenizer.pad_token_id), processing_class=tokenizer, callbacks=callbacks,
        batching=t.get("batching", "length_grouped"), selective_logits=False,
    )
    ref.append(trainer)
    trainer.remove_callback(PrinterCallback)
    ran = train_or_resume(ctx, trainer)
    if ran is None:
        return trainer
    result, seconds = ran

    # --- score and output ------------------------------------------------------------------------
    metrics = dict(result.metrics)
    metrics.update(global_step=result.global_step, train_seconds=round(seconds, 2), final_loss=_last_loss(trainer),
                   tokens=trainer.tokens_seen, trainable_params=trainable, total_params=total, labels=names,
                   n_train=len(train_ds), chance=max(labels.count(x) for x in names) / len(labels))
    if val_texts:
        picked = cls_head.predict_with(trainer.model, tokenizer, val_texts, max_length, int(t.get("batch_size", 16)))
        metrics.update(val_accuracy=sum(names[k] == y for k, y in zip(picked, val_labels)) / len(val_labels),
                       n_val=len(val_labels))
        ctx.log(f"val_accuracy={metrics['val_accuracy']:.3f} on {len(val_labels)} texts")
    write_output(ctx, trainer, tokenizer, config, names, metrics)
    ctx.event(type="done", **{k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    return trainer


def write_output(ctx, trainer, tokenizer, config: dict, names: list[str], metrics: dict) -> None:
    """``output/head/`` (adapter or model, tokenizer, head.json), artifact.json, config, metrics, card."""
    out = ctx.output_dir
    target = out / cls_head.HEAD_DIR
    partial = out / f".{cls_head.HEAD_DIR}.partial"
    save_weights(trainer, partial)
    if not ctx.is_main:
        return
    tokenizer.save_pretrained(partial)
    tune = config.get("head", {}).get("tune", "lora")
    base = base_ref(config)
    atomic_write_json(partial / cls_head.HEAD_FILE, {"labels": names, "tune": tune, "base": base,
                                                     "max_length": int(config["train"]["max_length"])})
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    accuracy = {k: v for k, v in metrics.items() if k.endswith("accuracy")}
    ctx.write_artifact("classifier", cls_head.HEAD_DIR, base=base, method="cls_head", head="cls_head", tune=tune,
                       labels=names, metrics=accuracy)
    atomic_write_text(out / "config.toml", tomli_w.dumps(config))
    atomic_write_json(out / "metrics.json", metrics)
    figures = ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()) or "no validation split"
    atomic_write_text(out / "README.md", hub_card(ctx, "\n".join([
        f"# classification head on {config['model']} (tuneterm job {ctx.id})", "",
        f"- data: `{config['data']}`" + (f", validation `{config['eval_data']}`" if config.get("eval_data") else ""),
        f"- {len(names)} labels: {', '.join(names[:20])}" + (" ..." if len(names) > 20 else ""),
        f"- tuned: {tune}; epochs {config['train'].get('epochs')}, lr {config['train'].get('lr')}, "
        f"max length {config['train'].get('max_length')}",
        f"- {figures}", "",
        f"Use it: `tuneterm chat job:{ctx.id} \"...\"` answers with a label; "
        f"`tuneterm eval --models job:{ctx.id} ...` scores it on generate tasks.", ""])))
    ctx.log(f"output written to {out}")


def _last_loss(trainer) -> float | None:
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return None
