"""Distillation: a student learns the teacher's temperature-softened token distributions.

loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels),
on the assistant tokens only (the jobs helper's chat tokenization and masks). The student is a
model reference, or is made from the teacher by keeping ``keep_layers`` of its decoder blocks
(weights copied from the teacher). Job kind ``distill``; artifact kind ``model``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments

from tuneterm.workers import loading
from tuneterm.workers.train.data import IGNORE, ChatDataset, PadToLongest, read_examples
from tuneterm.workers.train.trainer import train_or_resume


def shrink(teacher, keep_layers: list[int]):
    """A copy of ``teacher`` with only the decoder blocks ``keep_layers`` (teacher's weights)."""
    student = copy.deepcopy(teacher)
    layers = student.model.layers
    student.model.layers = torch.nn.ModuleList([layers[i] for i in keep_layers])
    for new_idx, layer in enumerate(student.model.layers):
        if hasattr(layer, "self_attn"):
            layer.self_attn.layer_idx = new_idx
    student.config.num_hidden_layers = len(keep_layers)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in keep_layers]
    return student


def distill_loss(s_logits, t_logits, labels, alpha: float, temperature: float):
    """(total, kl, ce) over positions whose next-token label is not IGNORE."""
    s, t, y = s_logits[:, :-1], t_logits[:, :-1], labels[:, 1:]
    mask = y != IGNORE
    s, t = s[mask].float(), t[mask].float()
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                  log_target=True, reduction="batchmean") * temperature ** 2
    ce = F.cross_entropy(s, y[mask])
    return alpha * kl + (1 - alpha) * ce, kl, ce


class StopOnRequest(TrainerCallback):
    """A stop request (SIGTERM, Ctrl-C) saves a checkpoint after the current step and ends."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_step_end(self, args, state, control, **kw):
        if self.ctx.should_stop:
            control.should_save = True
            control.should_training_stop = True


class DistillTrainer(Trainer):
    def __init__(self, *a, teacher=None, alpha=0.5, temperature=2.0, on_step=None, **kw):
        super().__init__(*a, **kw)
        self.teacher, self.alpha, self.temperature, self.on_step = teacher, alpha, temperature, on_step

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs["labels"]
        fwd = {k: v for k, v in inputs.items() if k != "labels"}
        with torch.no_grad():
            t_logits = self.teacher(**fwd).logits
        out = model(**fwd)
        loss, kl, ce = distill_loss(out.logits, t_logits, labels, self.alpha, self.temperature)
        if self.on_step and model.training:
            self.on_step(step=self.state.global_step + 1, kl=float(kl.detach()), ce=float(ce.detach()))
        return (loss, out) if return_outputs else loss


@torch.no_grad()
def evaluate(model, teacher, dataset, collate, temperature: float) -> dict:
    model.eval()
    kls, ces = [], []
    for i in range(0, len(dataset), 8):
        batch = collate([dataset[j] for j in range(i, min(i + 8, len(dataset)))])
        fwd = {k: v for k, v in batch.items() if k != "labels"}
        _, kl, ce = distill_loss(model(**fwd).logits, teacher(**fwd).logits, batch["labels"], 0.5, temperature)
        kls.append(float(kl))
        ces.append(float(ce))
    return {"kl": sum(kls) / len(kls), "ce": sum(ces) / len(ces),
            "ppl": float(torch.exp(torch.tensor(sum(ces) / len(ces))))}


def _speed(model, batch) -> float:
    fwd = {k: v for k, v in batch.items() if k != "labels"}
    start = time.perf_counter()
    with torch.no_grad():
        model(**fwd)
    return (time.perf_counter() - start) * 1000


def run(ctx) -> None:
    """Config: teacher, student (ref, optional), keep_layers (list), data, val_data, alpha,
    temperature, steps, lr, batch_size, max_length, seed, save_steps. Resumable: a stop request
    saves a checkpoint, and ``tuneterm jobs resume`` continues from the last one."""
    cfg = ctx.config
    torch.manual_seed(int(cfg.get("seed", 0)))
    t = loading.load(cfg["teacher"])
    teacher, tok = t.model, t.tokenizer
    for p in teacher.parameters():
        p.requires_grad_(False)
    if cfg.get("student"):
        student = loading.load(cfg["student"]).model
    else:
        n = teacher.config.num_hidden_layers
        keep = list(cfg.get("keep_layers") or range(0, n, 2))
        student = shrink(teacher, keep)
    for p in student.parameters():
        p.requires_grad_(True)
    student.train()
    max_len = int(cfg.get("max_length", 256))
    train_ds = ChatDataset(tok, read_examples(cfg["data"]), max_len)
    val_ds = ChatDataset(tok, read_examples(cfg.get("val_data") or cfg["data"]), max_len)
    collate = PadToLongest(tok.pad_token_id)
    temperature, alpha = float(cfg.get("temperature", 2.0)), float(cfg.get("alpha", 0.5))
    before = evaluate(student, teacher, val_ds, collate, temperature)
    ctx.event(type="eval", stage="before", **before)
    def on_step(**m):
        ctx.event(type="train", **m)

    from tuneterm.workers import tracking

    _, tracker_callbacks = tracking.trainer_setup(ctx, cfg)
    trackers = tracking.trainer_args(ctx, cfg)
    log_args = {"logging_strategy": "steps", "logging_steps": int(cfg.get("log", {}).get("every_steps", 5))} \
        if tracker_callbacks else {"logging_strategy": "no"}
    args = TrainingArguments(output_dir=str(ctx.checkpoints_dir), max_steps=int(cfg.get("steps", 20)),
                             per_device_train_batch_size=int(cfg.get("batch_size", 8)),
                             learning_rate=float(cfg.get("lr", 5e-4)), save_strategy="steps",
                             save_steps=int(cfg.get("save_steps", 50)), save_total_limit=2, **trackers, **log_args,
                             use_cpu=not torch.cuda.is_available(),
                             seed=int(cfg.get("seed", 0)), remove_unused_columns=False)
    trainer = DistillTrainer(model=student, args=args, train_dataset=train_ds, data_collator=collate,
                             teacher=teacher, alpha=alpha, temperature=temperature, on_step=on_step,
                             callbacks=[StopOnRequest(ctx), *tracker_callbacks])
    if train_or_resume(ctx, trainer) is None:  # stopped: `tuneterm jobs resume` continues
        return
    after = evaluate(student, teacher, val_ds, collate, temperature)
    teacher_q = evaluate(teacher, teacher, val_ds, collate, temperature)
    batch = collate([val_ds[i] for i in range(min(8, len(val_ds)))])
    report = {
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "student_params": sum(p.numel() for p in student.parameters()),
        "teacher_forward_ms": _speed(teacher, batch), "student_forward_ms": _speed(student, batch),
        "teacher_val_ppl": teacher_q["ppl"], "student_val_ppl": after["ppl"],
        "kl_before": before["kl"], "kl_after": after["kl"],
    }
    ctx.event(type="eval", stage="after", **after)
    ctx.event(type="report", **report)
    if tracker_callbacks:  # the before/after figures join the training curves
        tracking.log_to_source(f"job:{ctx.id}", ctx.job_dir.parent, {
            **{f"distill/before_{k}": v for k, v in before.items()},
            **{f"distill/after_{k}": v for k, v in after.items()},
            **{f"distill/{k}": v for k, v in report.items()}}, step=int(cfg.get("steps", 20)), log=ctx.log)
    out = Path(ctx.output_dir) / "model"
    student.save_pretrained(out)
    tok.save_pretrained(out)
    ctx.write_artifact("model", out, base=cfg["teacher"], distill=report)
    from tuneterm.core.fsutil import atomic_write_text
    from tuneterm.workers.train.output import hub_card

    atomic_write_text(Path(ctx.output_dir) / "README.md", hub_card(ctx, "\n".join(
        [f"Distilled from `{cfg['teacher']}`: alpha {alpha}, temperature {temperature}, {cfg.get('steps')} steps.", ""]
        + [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in report.items()])))
