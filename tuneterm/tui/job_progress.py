"""What the Jobs screen reads out of a job's events: loss curves, tokens/s, ETA.

Pure functions over the dicts in ``events.jsonl``; tolerant of field names (``tokens_per_s``
or ``tok_s``, ``max_steps`` or ``total_steps``) and of events that are not steps at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneterm.core.jobs.eta import eta_seconds, format_duration


def _num(event: dict, *names: str) -> float | None:
    for name in names:
        value = event.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


@dataclass
class Progress:
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None

    def line(self) -> str:
        parts = []
        if self.step is not None:
            parts.append(f"step {self.step}" + (f"/{self.total}" if self.total else ""))
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.4f}")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.0f} tok/s")
        if self.eta_s is not None:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return " · ".join(parts) or "no progress events yet"


def loss_series(events: list[dict]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(train points, eval points) as (step, value); an event may carry either or both."""
    train: list[tuple[float, float]] = []
    evals: list[tuple[float, float]] = []
    for i, event in enumerate(events):
        step = _num(event, "step", "global_step")
        x = step if step is not None else float(i)
        loss = _num(event, "loss", "train_loss")
        if loss is not None and event.get("event", event.get("type")) not in ("eval",):
            train.append((x, loss))
        eval_loss = _num(event, "eval_loss", "val_loss")
        if eval_loss is None and event.get("event", event.get("type")) == "eval":
            eval_loss = _num(event, "loss")
        if eval_loss is not None:
            evals.append((x, eval_loss))
    return train, evals


def progress(events: list[dict], active: bool = True, now: float | None = None) -> Progress:
    """The state of a job as of its last events; no ETA once it is not ``active``.

    The ETA (tuneterm.core.jobs.eta, as `tuneterm jobs ls` shows it) counts down to ``now``
    (default: the time of the last event)."""
    out = Progress()
    steps = [e for e in events if _num(e, "step", "global_step") is not None]
    train, evals = loss_series(events)
    if train:
        out.loss = train[-1][1]
    if evals:
        out.eval_loss = evals[-1][1]
    if not steps:
        return out
    out.step = int(_num(steps[-1], "step", "global_step") or 0)
    timed = [e for e in steps if _num(e, "tokens_per_s", "tok_s", "tokens_per_sec", "loss") is not None]
    last = timed[-1] if timed else steps[-1]
    total = None
    for e in reversed(events):
        total = _num(e, "max_steps", "total_steps", "steps_total")
        if total is not None:
            break
    out.total = int(total) if total else None
    out.tokens_per_s = _num(last, "tokens_per_s", "tok_s", "tokens_per_sec", "train_tokens_per_second")
    out.eta_s = eta_seconds(events, now) if active else None
    return out
