"""``transformers.Trainer`` with three additions: length-grouped epoch-seeded batches, a loss on
padding-free packed batches (see :class:`~tuneterm.workers.train.data.PackedBatch`) that projects
only the positions that carry labels onto the vocabulary, and callbacks that write job events,
stop cleanly on SIGTERM and freeze the config into every checkpoint.

Gradient accumulation, mixed precision, gradient checkpointing, evaluation, early stopping,
checkpoint/resume (optimizer, scheduler, RNG, data position) and DDP come from Trainer.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments

from tuneterm.core.jobs.eta import format_duration
from tuneterm.workers.train.data import IGNORE, LengthGroupedEpochSampler


class TunetermTrainer(Trainer):
    def __init__(self, *args, batching: str = "length_grouped", selective_logits: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.batching = batching
        self.selective_logits = selective_logits
        self.tokens_seen = 0  # non-padding tokens trained on (this process)
        self.eval_seconds = 0.0  # time spent evaluating, left out of tokens/s
        if selective_logits:
            # Our loss is normalised by the label count of the whole accumulated batch.
            self.model_accepts_loss_kwargs = True
            self.loss_is_scaled_for_ga = True

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            return super()._get_train_sampler(train_dataset)
        return LengthGroupedEpochSampler(lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                         seed=self.args.seed, grouped=self.batching != "random")

    def evaluate(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.eval_seconds += time.perf_counter() - started

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "take" in inputs:
            return self._packed_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            self.tokens_seen += int(inputs["attention_mask"].sum())
        if not self.selective_logits or self.args.world_size > 1:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        causal = model.get_base_model() if hasattr(model, "get_base_model") else model
        body = getattr(causal, causal.base_model_prefix)
        hidden = body(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                      use_cache=False).last_hidden_state
        targets = inputs["labels"][:, 1:]
        keep = targets != IGNORE
        logits = causal.get_output_embeddings()(hidden[:, :-1][keep])
        loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
        return self._normalise(model, loss, keep.sum(), return_outputs, num_items_in_batch)

    def _packed_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """Loss on a :class:`~tuneterm.workers.train.data.PackedBatch`: the model's own forward (so DDP and
        PEFT hooks run), projecting onto the vocabulary only the positions that predict a trained token."""
        if model.training:
            self.tokens_seen += int(inputs["n_tokens"])
        mask = inputs.get("attention_mask")  # None: the model builds its own from the position ids
        if mask is not None and _attn_implementation(model) != "sdpa":  # eager & co. add the mask: make it additive
            dtype = next(p for p in model.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        out = model(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"], attention_mask=mask,
                    logits_to_keep=inputs["keep"], use_cache=False)
        logits = out.logits.reshape(-1, out.logits.shape[-1])[inputs["take"]]
        loss = F.cross_entropy(logits.float(), inputs["labels"], reduction="sum")
        return self._normalise(model, loss, inputs["labels"].new_tensor(inputs["labels"].numel()),
                               return_outputs, num_items_in_batch)

    def _normalise(self, model, loss_sum, count, return_outputs, num_items_in_batch):
        """Sum -> mean over the trained tokens of the whole accumulated (and, under DDP, global) batch."""
        if not model.training:
            loss = loss_sum / count.clamp(min=1)
            return (loss, {"loss": loss}) if return_outputs else loss
        if num_items_in_batch is None:
            return loss_sum / (count.clamp(min=1) * self.current_gradient_accumulation_steps)
        loss = loss_sum / num_items_in_batch
        if self.args.world_size > 1 and self.args.average_tokens_across_devices:
            loss = loss * self.args.world_size  # the count is global and DDP averages the gradients
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if "take" not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


def _attn_implementation(model) -> str:
    config = getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)
    return getattr(config, "_attn_implementation", None) or "sdpa"


def build_args(config: dict, output_dir: Path, has_eval: bool, n_train: int,
               trackers: dict | None = None) -> TrainingArguments:
    """``trackers``: report_to, run_name and project (``tuneterm.workers.tracking.trainer_args``)."""
    t = config.get("train", {})
    ev = config.get("eval", {})
    ck = config.get("checkpoint", {})
    lg = config.get("log", {})
    precision = t.get("precision", "auto")
    cuda = torch.cuda.is_available()
    bf16 = precision == "bf16" or (precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    fp16 = precision == "fp16" or (precision == "auto" and cuda and not bf16)
    steps_per_epoch = max(1, math.ceil(n_train / (t.get("batch_size", 8) * t.get("grad_accum", 1))))
    max_steps = int(t.get("max_steps", -1))
    total = max_steps if max_steps > 0 else steps_per_epoch * int(t.get("epochs", 1))
    warmup = int(round(float(t.get("warmup_ratio", 0.0)) * total))
    eval_every = int(ev.get("every_steps", 0))
    patience = int(ev.get("early_stopping_patience", 0))
    save_every = int(ck.get("every_steps", 50))
    if has_eval and patience > 0:  # early stopping needs a checkpoint at every evaluation
        eval_every = eval_every or save_every
        save_every = eval_every
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=float(t.get("epochs", 1)),
        max_steps=max_steps,
        per_device_train_batch_size=int(t.get("batch_size", 8)),
        per_device_eval_batch_size=int(t.get("batch_size", 8)),
        gradient_accumulation_steps=int(t.get("grad_accum", 1)),
        learning_rate=float(t.get("lr", 2e-4)),
        lr_scheduler_type=t.get("lr_scheduler", "linear"),
        warmup_steps=warmup,
        weight_decay=float(t.get("weight_decay", 0.0)),
        max_grad_norm=float(t.get("max_grad_norm", 1.0)),
        seed=int(t.get("seed", 42)),
        bf16=bf16, fp16=fp16,
        use_cpu=not cuda,
        activation_checkpointing=bool(t.get("gradient_checkpointing", False)),
        activation_checkpointing_kwargs={"use_reentrant": False},
        prediction_loss_only=True,
        eval_strategy=("steps" if eval_every else "epoch") if has_eval else "no",
        eval_steps=eval_every or None,
        save_strategy="steps",
        save_steps=save_every,
        save_total_limit=int(ck.get("keep", 2)) or None,
        load_best_model_at_end=bool(has_eval and patience > 0),
        metric_for_best_model="eval_loss" if has_eval and patience > 0 else None,
        greater_is_better=False if has_eval and patience > 0 else None,
        logging_strategy="steps",
        logging_steps=int(lg.get("every_steps", 5)),
        logging_first_step=True,
        **(trackers or {"report_to": "none"}),
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_backend=("gloo" if not cuda else "nccl") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        **({"optim": "paged_adamw_32bit"} if config.get("method") == "qlora" and cuda else {}),
        **strategy_args(config),
    )


def strategy_args(config: dict) -> dict:
    """TrainingArguments fields for ``launch.strategy`` (ddp | fsdp | zero2 | zero3), from the shipped
    file in ``tuneterm/data/launch/`` or ``launch.strategy_file``; nothing for one process or DDP."""
    from tuneterm.core.resources import data_dir

    launch = config.get("launch", {}) or {}
    strategy = launch.get("strategy", "ddp")
    if strategy == "ddp" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return {}
    path = Path(launch.get("strategy_file") or data_dir() / "launch" / f"{strategy}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


class JobEventsCallback(TrainerCallback):
    """Logs become job events (step, epoch, loss, eval_loss, lr, grad_norm, tokens/s, memory, ETA);
    SIGTERM saves a checkpoint and stops; every checkpoint gets the frozen config."""

    def __init__(self, ctx, trainer_ref: list, frozen_config: dict):
        self.ctx = ctx
        self.trainer_ref = trainer_ref  # [trainer], filled after construction
        self.frozen = frozen_config
        self.t0 = time.perf_counter()
        self.last_t = self.t0
        self.last_tokens = 0
        self.last_eval_s = 0.0
        self.start_step = 0

    @property
    def trainer(self):
        return self.trainer_ref[0]

    def on_train_begin(self, args, state, control, **kw):
        self.start_step = state.global_step
        self.t0 = self.last_t = time.perf_counter()
        self.ctx.event(type="train_begin", max_steps=state.max_steps, start_step=state.global_step,
                       epochs=args.num_train_epochs)

    def _stop_requested(self) -> bool:
        stop = self.ctx.should_stop
        if self.trainer.args.world_size > 1 and torch.distributed.is_initialized():
            from tuneterm.workers.device import collective_device

            flag = torch.tensor([1.0 if stop else 0.0], device=collective_device(self.ctx.local_rank))
            torch.distributed.all_reduce(flag)  # every rank stops at the same step
            stop = bool(flag.item() > 0)
            if stop and not self.ctx.should_stop:
                self.ctx._stop.set()
        return stop

    def on_step_end(self, args, state, control, **kw):
        if self._stop_requested():
            control.should_save = True
            control.should_training_stop = True
            self.ctx.log(f"saving a checkpoint at step {state.global_step} before stopping")

    def on_log(self, args, state, control, logs=None, **kw):
        logs = dict(logs or {})
        now = time.perf_counter()
        fields: dict = {"step": state.global_step, "total_steps": state.max_steps,
                        "epoch": round(state.epoch or 0.0, 4)}
        if "eval_loss" in logs:
            fields.update(type="eval", eval_loss=logs["eval_loss"])
        elif "loss" in logs:
            tokens = self.trainer.tokens_seen * max(1, args.world_size)
            dt = max(now - self.last_t - (self.trainer.eval_seconds - self.last_eval_s), 1e-9)
            self.last_eval_s = self.trainer.eval_seconds
            done = state.global_step - self.start_step
            per_step = (now - self.t0) / done if done else None
            fields.update(
                type="train", loss=logs["loss"], lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"),
                tokens_per_s=round((tokens - self.last_tokens) / dt, 1), tokens=tokens,
                peak_mem_mb=peak_memory_mb(),
                eta_s=round(per_step * (state.max_steps - state.global_step), 1) if per_step else None,
            )
            self.last_t, self.last_tokens = now, tokens
        elif "train_runtime" in logs:
            fields.update(type="train_end", **{k: v for k, v in logs.items() if isinstance(v, (int, float))})
        else:
            return
        self.ctx.event(**fields)
        if fields.get("type") == "train":
            eta = f", ETA {format_duration(fields['eta_s'])}" if fields.get("eta_s") is not None else ""
            self.ctx.log(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                         f"lr {logs.get('learning_rate', 0):.2e} {fields['tokens_per_s']} tok/s{eta}")
        elif fields.get("type") == "eval":
            self.ctx.log(f"step {state.global_step} eval_loss {logs['eval_loss']:.4f}")

    def on_save(self, args, state, control, **kw):
        if not self.ctx.is_main:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            (folder / "tuneterm_config.json").write_text(json.dumps(self.frozen, indent=2, default=str))
        self.ctx.event(type="checkpoint", step=state.global_step, path=str(folder))


def train_or_resume(ctx, trainer) -> tuple | None:
    """``trainer.train()``, from the last checkpoint when the job is resumed. Returns
    (TrainOutput, seconds), or None when a stop request (SIGTERM, Ctrl-C) ended it early: the
    checkpoint saved on the way out is what ``tuneterm jobs resume`` continues from."""
    from transformers.trainer_utils import get_last_checkpoint

    resume_from = get_last_checkpoint(str(ctx.checkpoints_dir)) if ctx.resume else None
    if ctx.resume:
        ctx.log(f"resuming from {resume_from}" if resume_from else "no checkpoint yet: starting over")
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    if ctx.should_stop:
        ctx.log("stopped on request; the last checkpoint is kept for `tuneterm jobs resume`")
        return None
    return result, seconds
