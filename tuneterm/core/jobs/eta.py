"""Time left for a job, from its progress events (pure functions, torch-free)."""

from __future__ import annotations

import time


def _num(event: dict, *names: str) -> float | None:
    for name in names:
        value = event.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def eta_seconds(events: list[dict], now: float | None = None) -> float | None:
    """Seconds left as of ``now`` (default: the last event's time), or None when unknown.

    The last event with a step and a total decides: its own ``eta_s`` (the trainer's estimate) less
    the time since it was written, else the pace between the first and the last step event.
    """
    starts = [i for i, e in enumerate(events) if e.get("type") == "state" and e.get("state") == "running"]
    run = events[starts[-1]:] if starts else events  # a resumed run's pace starts at its own start
    steps = [e for e in run if _num(e, "step") is not None and _num(e, "total_steps", "max_steps")]
    if not steps:
        return None
    last = steps[-1]
    step, total, at = _num(last, "step"), _num(last, "total_steps", "max_steps"), _num(last, "time")
    if step >= total:
        return 0.0
    since = max(0.0, now - at) if (now is not None and at is not None) else 0.0
    own = _num(last, "eta_s")
    if own is not None:
        return max(0.0, own - since)
    first = next((e for e in steps if _num(e, "step") < step and _num(e, "time") is not None), None)
    if first is None or at is None:
        return None
    pace = (at - _num(first, "time")) / (step - _num(first, "step"))
    return max(0.0, (total - step) * pace - since)


def format_duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def eta_text(events: list[dict], now: float | None = None) -> str:
    """``ETA 3m05s`` for an active job's events, or "" when unknown."""
    left = eta_seconds(events, time.time() if now is None else now)
    return f"ETA {format_duration(left)}" if left is not None else ""
