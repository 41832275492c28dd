"""Train jobs with ``method = "dpo"``: preference tuning through TRL's ``DPOTrainer``.

Reads top to bottom like the plain train worker: setup (preference pairs -> TRL's conversational
prompt/chosen/rejected, rendered with the model's chat template by TRL; base model; LoRA config)
-> train (``DPOTrainer``, resuming from the last checkpoint on ``jobs resume``) -> output (adapter
or model, frozen config, metrics, model card, ``artifact.json``) -> done.

With ``dpo.tune = "lora"`` (the default) the reference model is the same base with its adapters
switched off, so only one copy of the weights is in memory; ``"full"`` trains every weight
against a second, frozen copy. Job events, SIGTERM -> checkpoint and the frozen config in every
checkpoint come from the plain worker's :class:`JobEventsCallback`; this module adds the DPO
figures (reward margin, preference accuracy) to its events.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from transformers import TrainingArguments

from tuneterm.core.datasets.pairs import read_pairs
from tuneterm.core.errors import ConfigError
from tuneterm.workers.train import methods, output
from tuneterm.workers.train.trainer import JobEventsCallback, build_args, train_or_resume

TUNE = ("lora", "full")
# TRL's log keys -> event fields (train events; eval events get an ``eval_`` prefix)
DPO_FIELDS = {"rewards/margins": "rewards_margins", "rewards/accuracies": "rewards_accuracies",
              "rewards/chosen": "rewards_chosen", "rewards/rejected": "rewards_rejected",
              "logps/chosen": "logps_chosen", "logps/rejected": "logps_rejected"}


# --- data ------------------------------------------------------------------------------------
# read_pairs (tuneterm.core.datasets.pairs) is shared with the launch plan, which checks the file first.


def _dataset(pairs: list[dict]):
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # TRL's map() bars would fill log.txt; our log says how many pairs were kept
    return Dataset.from_list(pairs)


# --- trainer ---------------------------------------------------------------------------------


def _trainer_class():
    from trl import DPOTrainer

    class TunetermDPOTrainer(DPOTrainer):
        """DPOTrainer plus the two counters :class:`JobEventsCallback` reads."""

        eval_seconds = 0.0

        @property
        def tokens_seen(self) -> int:
            # TRL sums over processes; JobEventsCallback multiplies a per-process count by the world size
            return int(self._total_train_tokens) // max(1, self.args.world_size)

        def evaluate(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                self.eval_seconds += time.perf_counter() - started

    return TunetermDPOTrainer


def dpo_args(config: dict, output_dir: Path, has_eval: bool, n_train: int, trackers: dict | None = None):
    """The plain worker's TrainingArguments, as a DPOConfig with the ``[dpo]`` settings."""
    from trl import DPOConfig

    base = build_args(config, output_dir, has_eval, n_train, trackers=trackers)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    fields.pop("gradient_checkpointing", None)  # deprecated alias; activation_checkpointing carries it
    fields.pop("gradient_checkpointing_kwargs", None)
    opts = config.get("dpo", {})
    t = config.get("train", {})
    return DPOConfig(**fields, beta=float(opts.get("beta", 0.1)), loss_type=[opts.get("loss_type", "sigmoid")],
                     label_smoothing=float(opts.get("label_smoothing", 0.0)),
                     max_length=int(t.get("max_length", 512)), disable_dropout=True)


class _DPOEvents(JobEventsCallback):
    """The plain worker's events, each train/eval event carrying the DPO figures of its log."""

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        extra = {}
        for key, name in DPO_FIELDS.items():
            if key in logs:
                extra[name] = logs[key]
            if f"eval_{key}" in logs:
                extra[f"eval_{name}"] = logs[f"eval_{key}"]
        real = self.ctx
        self.ctx = _WithFields(real, extra)
        try:
            super().on_log(args, state, control, logs=logs, **kw)
        finally:
            self.ctx = real


class _WithFields:
    def __init__(self, ctx, extra: dict):
        self._ctx, self._extra = ctx, extra

    def event(self, **fields) -> None:
        if fields.get("type") in ("train", "eval"):
            fields.update(self._extra)
        self._ctx.event(**fields)

    def log(self, msg: str) -> None:
        margin = self._extra.get("rewards_margins", self._extra.get("eval_rewards_margins"))
        accuracy = self._extra.get("rewards_accuracies", self._extra.get("eval_rewards_accuracies"))
        if margin is not None and msg.startswith("step "):
            msg += f" margin {margin:.4f}" + (f" accuracy {accuracy:.2f}" if accuracy is not None else "")
        self._ctx.log(msg)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


# --- the job ---------------------------------------------------------------------------------


def run(ctx):
    """Preference-tune as ``ctx.config`` says; returns the trainer (tests inspect its model)."""
    config = ctx.config
    opts = config.get("dpo", {})
    tune = opts.get("tune", "lora")
    if tune not in TUNE:
        raise ConfigError("dpo.tune must be lora or full", [("got", repr(tune))],
                          "lora trains adapters against the base; full trains every weight")
    base_path = methods.start(ctx, "DPO")

    # --- setup -------------------------------------------------------------------------------
    from transformers import AutoTokenizer

    train_pairs = read_pairs(config["data"])
    eval_pairs = read_pairs(config["eval_data"]) if config.get("eval_data") else None
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the model has no chat template to render preference pairs with",
                          [("model", config["model"])], "use an instruct/chat model")
    ctx.log(f"data: {len(train_pairs)} preference pairs"
            + (f", {len(eval_pairs)} for validation" if eval_pairs else ""))

    dtype = methods.weights_dtype(config)
    model = methods.load_base(base_path, dtype, local_rank=ctx.local_rank)
    ref_model = None
    peft_config = None
    if tune == "lora":
        peft_config = methods.lora_config(config)  # TRL wraps the model; the reference is the base, adapters off
    else:
        methods.apply_full(model, config)
        ref_model = methods.load_base(base_path, dtype, local_rank=ctx.local_rank)  # a frozen copy of the starting weights
        ref_model.requires_grad_(False)

    # --- train ---------------------------------------------------------------------------------
    from transformers import EarlyStoppingCallback, PrinterCallback

    from tuneterm.workers import tracking

    _, tracker_callbacks = tracking.trainer_setup(ctx, config)
    args = dpo_args(config, ctx.checkpoints_dir, eval_pairs is not None, len(train_pairs) // max(1, ctx.world_size),
                    trackers=tracking.trainer_args(ctx, config))
    ref: list = []
    callbacks = [_DPOEvents(ctx, ref, config), *tracker_callbacks]
    patience = int(config.get("eval", {}).get("early_stopping_patience", 0))
    if eval_pairs and patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = _trainer_class()(
        model=model, ref_model=ref_model, args=args, train_dataset=_dataset(train_pairs),
        eval_dataset=_dataset(eval_pairs) if eval_pairs else None, processing_class=tokenizer,
        peft_config=peft_config, callbacks=callbacks,
    )
    ref.append(trainer)
    trainer.remove_callback(PrinterCallback)  # our callback writes the log lines
    trainable, total = methods.count_parameters(trainer.model)
    n_train = len(trainer.train_dataset)
    ctx.log(f"model: {config['model']} via dpo ({tune}, beta {args.beta}): {trainable:,} of {total:,} "
            f"parameters trainable; {n_train} pairs after tokenization")
    ctx.event(type="setup", method="dpo", tune=tune, beta=args.beta, trainable_params=trainable,
              total_params=total, train_examples=n_train,
              eval_examples=len(trainer.eval_dataset) if eval_pairs else 0)
    ran = train_or_resume(ctx, trainer)
    if ran is None:
        return trainer
    result, seconds = ran

    # --- output ---------------------------------------------------------------------------------
    metrics = dict(result.metrics)
    train_logs = [e for e in trainer.state.log_history if "loss" in e and "rewards/margins" in e]
    last = train_logs[-1] if train_logs else {}
    metrics.update(global_step=result.global_step, train_seconds=round(seconds, 2),
                   tokens=trainer.tokens_seen * max(1, ctx.world_size),
                   final_loss=last.get("loss"), final_rewards_margins=last.get("rewards/margins"),
                   final_rewards_accuracies=last.get("rewards/accuracies"),
                   trainable_params=trainable, total_params=total, beta=args.beta, tune=tune)
    if eval_pairs:
        metrics.update({k.replace("/", "_"): v for k, v in trainer.evaluate().items() if k.startswith("eval_")})
    output.write(ctx, trainer, tokenizer, config, base_path, metrics, adapter=tune == "lora",
                 card=model_card(ctx.id, config, metrics, tune))  # every rank: FSDP/ZeRO-3 gather
    ctx.event(type="done", **{k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    return trainer


def model_card(job_id: str, config: dict, metrics: dict, tune: str) -> str:
    t = config.get("train", {})
    opts = config.get("dpo", {})
    lines = [
        f"# DPO preference tuning of {config['model']} (tuneterm job {job_id})",
        "",
        f"- data: `{config['data']}`" + (f", validation `{config['eval_data']}`" if config.get("eval_data") else ""),
        f"- DPO: {tune}, beta {opts.get('beta')}, loss {opts.get('loss_type')}; reference = "
        + ("the base with the adapters switched off" if tune == "lora" else "a frozen copy of the base"),
        f"- epochs {t.get('epochs')}, max steps {t.get('max_steps')}, batch {t.get('batch_size')} x accumulation "
        f"{t.get('grad_accum')}, lr {t.get('lr')}, max length {t.get('max_length')}",
    ]
    if tune == "lora":
        lo = config.get("lora", {})
        lines.append(f"- LoRA: r {lo.get('r')}, alpha {lo.get('alpha')}, dropout {lo.get('dropout')}, "
                     f"targets {lo.get('target_modules')}")
    for key in ("final_loss", "final_rewards_margins", "final_rewards_accuracies", "eval_loss",
                "eval_rewards_margins", "train_seconds", "tokens", "trainable_params"):
        if metrics.get(key) is not None:
            lines.append(f"- {key}: {metrics[key]}")
    lines += ["", f"Use it: `tuneterm chat job:{job_id} \"...\"`. Full config: `config.toml`; "
              "figures: `metrics.json`.", ""]
    return "\n".join(lines)


__all__ = ["run", "read_pairs", "dpo_args", "DPO_FIELDS"]
