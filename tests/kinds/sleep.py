"""Job kind ``sleep``: a torch-free stand-in for training, used by the job tests.

It counts ``steps`` steps of ``step_seconds`` each, writes an event and a checkpoint
(``checkpoints/state.json``) after every step, honours SIGTERM between steps, crashes at step
``crash_at`` when asked, and on resume continues from the checkpoint. With ``artifact = true``
it writes a tiny output and an artifact manifest. ``output/result.json`` records the
``CUDA_VISIBLE_DEVICES`` the job ran with, when one was set.
"""

from __future__ import annotations

import json
import os
import time

from tuneterm.core.fsutil import atomic_write_json


def run(ctx) -> None:
    steps = int(ctx.config.get("steps", 10))
    pause = float(ctx.config.get("step_seconds", 0.05))
    crash_at = int(ctx.config.get("crash_at", -1))
    device = ctx.config.get("device")
    if device:
        ctx.wait_for_device(device)
    ckpt = ctx.checkpoints_dir / "state.json"
    step, total = 0, 0
    if ctx.resume and ckpt.is_file():
        state = json.loads(ckpt.read_text())
        step, total = state["step"], state["total"]
        ctx.log(f"resumed from step {step}")
    while step < steps:
        if ctx.should_stop:
            ctx.log(f"stopping at step {step}; checkpoint kept")
            return
        if step == crash_at:
            raise RuntimeError(f"deliberate crash at step {step}")
        time.sleep(pause)
        step += 1
        total += step
        atomic_write_json(ckpt, {"step": step, "total": total})
        ctx.event(type="train", step=step, total_steps=steps, loss=round(1.0 / step, 6), total=total)
    result = {"steps": step, "total": total}
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        result["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    atomic_write_json(ctx.output_dir / "result.json", result)
    if ctx.config.get("artifact"):
        ctx.write_artifact("model", ctx.output_dir, note="sleep kind: not a real model")
    ctx.log(f"done: {step} steps, total {total}")
