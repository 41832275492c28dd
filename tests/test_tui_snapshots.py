"""Reviewed snapshots of the main screens at 80x24 (pytest-textual-snapshot).

Regenerate with `pytest tests/test_tui_snapshots.py --snapshot-update` and look at the SVGs
(the failure report shows old and new side by side) before committing them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneterm.core.datasets import store
from tuneterm.tui.app import TunetermApp

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


async def _until(pilot, predicate, tries=400, step=0.05):
    for _ in range(tries):
        await pilot.pause(step)
        if predicate():
            return
    raise AssertionError("the screen did not settle")


def test_datasets_preview(snap_compare):
    store.import_dataset(SAMPLES / "tickets", name="tickets")
    store.import_dataset(SAMPLES / "extraction", name="extraction")

    async def settle(pilot):
        screen = pilot.app.screen
        await _until(pilot, lambda: screen.report is not None and screen.source == "extraction")
        await pilot.pause()

    assert snap_compare(TunetermApp(), terminal_size=(80, 24), run_before=settle)


def test_train_recipe_form(snap_compare, embedded_model_dir):
    store.import_dataset(SAMPLES / "tickets", name="tickets")

    async def settle(pilot):
        screen = pilot.app.screen
        await _until(pilot, lambda: "GiB" in str(screen.query_one("#train-memory").render()))
        screen.set_focus(None)
        await pilot.pause()

    assert snap_compare(TunetermApp(start="train"), terminal_size=(80, 24), run_before=settle)


def _fixed_job(jobs_dir: Path) -> str:
    """A finished job folder with a fixed id and times, as the job store writes them."""
    job_id = "20261127-120000-ab12"
    folder = jobs_dir / job_id
    (folder / "output").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    (folder / "spec.toml").write_text(
        f'[job]\nid = "{job_id}"\nkind = "train"\ncreated_at = "2026-11-27T12:00:00+00:00"\n'
        '[config]\nmethod = "lora"\nmodel = "smollm2-135m-instruct"\n')
    (folder / "status.json").write_text(json.dumps({
        "state": "succeeded", "started_at": "2026-11-27T12:00:01+00:00",
        "finished_at": "2026-11-27T12:03:20+00:00", "heartbeat": None}))
    events = [{"type": "train", "step": s, "total_steps": 40, "loss": round(2.5 * 0.9 ** s + 0.2, 4),
               "tokens_per_s": 210.0, "time": 1000.0 + 5 * s} for s in range(1, 41)]
    events += [{"type": "eval", "step": s, "total_steps": 40, "eval_loss": round(2.4 * 0.9 ** s + 0.3, 4)}
               for s in (10, 20, 30, 40)]
    events.sort(key=lambda e: (e["step"], e["type"] == "eval"))
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (folder / "log.txt").write_text("".join(f"step {s}/40 loss {2.5 * 0.9 ** s + 0.2:.4f}\n" for s in range(30, 41)))
    (folder / "output" / "artifact.json").write_text(json.dumps({"kind": "adapter", "path": ".",
                                                                 "base": "smollm2-135m-instruct"}))
    return job_id


def test_jobs_curves_and_log(snap_compare, tmp_workspace, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "UTC")  # the table shows local times
    time.tzset()
    _fixed_job(tmp_workspace.ensure().jobs_dir)

    async def settle(pilot):
        screen = pilot.app.screen
        await _until(pilot, lambda: len(screen.events.get("20261127-120000-ab12", [])) == 44
                     and screen.query_one("#log-tail").lines_shown)
        await pilot.pause()

    assert snap_compare(TunetermApp(start="jobs"), terminal_size=(80, 24), run_before=settle)


def test_import_dialog(snap_compare):
    async def settle(pilot):
        await pilot.press("i")
        await pilot.pause()

    assert snap_compare(TunetermApp(), terminal_size=(80, 24), run_before=settle)


def test_quantize_form(snap_compare):
    async def settle(pilot):
        screen = pilot.app.screen
        await _until(pilot, lambda: screen.query_one("#qz-recipe").form is not None
                     and screen.query_one("#qz-model").value)
        screen.set_focus(None)
        await pilot.pause()

    assert snap_compare(TunetermApp(start="quantize"), terminal_size=(80, 24), run_before=settle)


# The quality report of a real int8-dynamic job on the tiny model (tests/test_tui_quantize.py makes
# one live); its samples and quantizer facts left out, its label shortened.
QUALITY = {
    "data": "built-in held-out texts", "exact_match": 1.0, "failures": [], "mean_kl": 1.7538788538771652e-06,
    "memory_ratio": 1.2427, "method": "int8-dynamic",
    "parent": {"completion_tokens": 4, "decode_tok_s": 46.39, "label": "./tiny-llama", "load_s": 9.26,
               "memory_mb": 12.88, "ppl": 48791.1311670924, "size_mb": 12.88, "ttft_ms": 11.88},
    "passed": True, "ppl_increase": -0.0003636836935354548, "prompts": 1, "quantize_s": 0.73,
    "quantized": {"completion_tokens": 4, "decode_tok_s": 49.41, "label": "int8-dynamic", "load_s": 0.598,
                  "memory_mb": 16.0, "ppl": 48773.386628297776, "size_mb": 16.01, "ttft_ms": 3.67},
    "scored_tokens": 62, "size_ratio": 1.2427, "speedup": 1.0651, "texts": 2,
    "thresholds": {"max_mean_kl": None, "max_ppl_increase": 0.05, "min_exact_match": None,
                   "min_top1_agreement": None},
    "top1_agreement": 0.9838709677419355,
}


def test_quantize_report(snap_compare, tmp_workspace):
    job_id = "20261127-130000-cd34"
    folder = tmp_workspace.ensure().jobs_dir / job_id
    (folder / "output").mkdir(parents=True)
    (folder / "spec.toml").write_text(
        f'[job]\nid = "{job_id}"\nkind = "quantize"\ncreated_at = "2026-11-27T13:00:00+00:00"\n'
        '[config]\nmethod = "int8-dynamic"\nmodel = "./tiny-llama"\n')
    (folder / "status.json").write_text(json.dumps({
        "state": "succeeded", "started_at": "2026-11-27T13:00:01+00:00",
        "finished_at": "2026-11-27T13:00:30+00:00", "heartbeat": None}))
    (folder / "events.jsonl").write_text(json.dumps({"type": "gate", "phase": "done", "passed": True}) + "\n")
    (folder / "output" / "quality.json").write_text(json.dumps(QUALITY))
    (folder / "output" / "artifact.json").write_text(json.dumps({"kind": "quantized", "path": "model",
                                                                 "base": "./tiny-llama"}))

    async def settle(pilot):
        screen = pilot.app.screen
        await _until(pilot, lambda: screen.query_one("#qz-recipe").form is not None)
        await pilot.press("ctrl+o")
        await _until(pilot, lambda: screen.query_one("#qz-report").report is not None
                     and "use it as" in str(screen.query_one("#qz-status").render()))
        await pilot.pause()

    assert snap_compare(TunetermApp(start="quantize"), terminal_size=(80, 24), run_before=settle)


def teardown_module(module):
    import time

    time.tzset()
