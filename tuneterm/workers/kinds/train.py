"""Job kind ``train``: fine-tune a causal LM (full | freeze | lora | qlora | dpo) on chat JSONL.

Reads top to bottom: setup (device, tokenizer, data, model) -> train (transformers.Trainer,
resuming from the last checkpoint on ``jobs resume``) -> output (artifact, frozen config,
final metrics, model card) -> done. SIGTERM saves a checkpoint and ends ``cancelled``. The
library it uses is ``tuneterm.workers.train`` (data, methods, trainer, output, dpo).
"""


from __future__ import annotations

import inspect

from transformers import AutoTokenizer

from tuneterm.workers.train import fit, methods, output
from tuneterm.workers.train.data import ChatDataset, PackedBatch, PadToLongest, exact_prefix_sharing, read_examples
from tuneterm.workers.train.trainer import JobEventsCallback, TunetermTrainer, build_args, train_or_resume


def run(ctx):
    """Train as ``ctx.config`` says; returns the Trainer (tests inspect its model)."""
    if ctx.config["method"] == "dpo":
        from tuneterm.workers.train.dpo import run as run_dpo
        return run_dpo(ctx)
    config = ctx.config
    t = config.get("train", {})
    method = config["method"]
    base_path = methods.start(ctx)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_length = int(t.get("max_length", 512))
    loss = t.get("loss", "assistant")
    train_ds = ChatDataset(tokenizer, read_examples(config["data"]), max_length, loss)
    eval_ds = None
    if config.get("eval_data"):
        eval_ds = ChatDataset(tokenizer, read_examples(config["eval_data"]), max_length, loss)
    ctx.log(f"data: {len(train_ds)} training examples ({train_ds.n_tokens} tokens, {train_ds.dropped} dropped)"
            + (f", {len(eval_ds)} validation examples" if eval_ds else ""))

    gpu = fit.gpu_gib()
    if gpu is not None:  # on a GPU: will it fit? (may switch gradient checkpointing on, and says so)
        est = fit.plan_memory(config, base_path, "cuda", ctx.world_size, gpu)
        ctx.log("memory: " + fit.describe(est))
        ctx.event(type="memory_estimate", total_gib=round(est["total_gib"], 2), gpu_gib=round(gpu, 2),
                  fits=est["fits"], gradient_checkpointing_auto=est["gradient_checkpointing_auto"])
    model = methods.prepare(method, base_path, config, local_rank=ctx.local_rank)
    if t.get("gradient_checkpointing") and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    trainable, total = methods.count_parameters(model)
    ctx.log(f"model: {config['model']} via {method}: {trainable:,} of {total:,} parameters trainable")
    ctx.event(type="setup", method=method, trainable_params=trainable, total_params=total,
              train_examples=len(train_ds), eval_examples=len(eval_ds) if eval_ds else 0,
              train_tokens=train_ds.n_tokens)

    # --- train ---------------------------------------------------------------------------------
    from transformers import EarlyStoppingCallback, PrinterCallback

    from tuneterm.workers import tracking

    _, tracker_callbacks = tracking.trainer_setup(ctx, config)
    args = build_args(config, ctx.checkpoints_dir, eval_ds is not None, len(train_ds) // max(1, ctx.world_size),
                      trackers=tracking.trainer_args(ctx, config))
    ref: list = []
    callbacks = [JobEventsCallback(ctx, ref, config), *tracker_callbacks]
    patience = int(config.get("eval", {}).get("early_stopping_patience", 0))
    if eval_ds is not None and patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = TunetermTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=_collator(t, tokenizer, model), processing_class=tokenizer, callbacks=callbacks,
        batching=t.get("batching", "length_grouped"),
    )
    ref.append(trainer)
    trainer.remove_callback(PrinterCallback)  # our callback writes the log lines
    ran = train_or_resume(ctx, trainer)
    if ran is None:
        return trainer
    result, seconds = ran

    # --- output ---------------------------------------------------------------------------------
    metrics = dict(result.metrics)
    metrics.update(global_step=result.global_step, train_seconds=round(seconds, 2),
                   tokens=trainer.tokens_seen * max(1, ctx.world_size), final_loss=_last_loss(trainer),
                   trainable_params=trainable, total_params=total)
    if eval_ds is not None:
        last = [e for e in trainer.state.log_history if "eval_loss" in e]
        if not last or last[-1].get("step") != trainer.state.global_step or patience > 0:
            last = [trainer.evaluate()]
        metrics.update({k: v for k, v in last[-1].items() if k.startswith("eval_")})
    output.write(ctx, trainer, tokenizer, config, base_path, metrics)  # every rank: FSDP/ZeRO-3 gather
    ctx.event(type="done", **{k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    return trainer


def _collator(t: dict, tokenizer, model):
    """Padding-free packed batches unless ``train.packing=false``, the attention kernel does not
    build packed masks from position ids, or the model cannot project only chosen positions
    (``logits_to_keep``); then rows padded to the batch's longest. A shared prefix is computed once
    only where that is exact for the model (:func:`~tuneterm.workers.train.data.exact_prefix_sharing`)."""
    config = getattr(model, "config", None)
    attn = getattr(config, "_attn_implementation", None) or "sdpa"
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    slices_logits = "logits_to_keep" in inspect.signature(causal.forward).parameters
    if t.get("packing", True) and (attn in ("sdpa", "eager") or attn.startswith("flash")) and slices_logits:
        share = bool(t.get("share_prefix", True)) and exact_prefix_sharing(config, attn)
        return PackedBatch(tokenizer.pad_token_id, share_prefix=share,
                           row_tokens=max(512, int(t.get("max_length", 512))))
    return PadToLongest(tokenizer.pad_token_id)


def _last_loss(trainer) -> float | None:
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return None

