"""The Evals screen: pick a spec and variants, launch a real eval job on the tiny model (detached,
through tuneterm.core.jobs), follow it, read the report (variants with 95% intervals, the paired
comparison, the items where the variants disagree); reopen a finished job's report; a typo fails
before any job exists. Asserts state, not pixels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from textual.widgets import DataTable, Select

from tui_recording import until
from tuneterm.core import jobs
from tuneterm.tui.app import TunetermApp
from tuneterm.tui.widgets.eval_report import EvalReport
from tuneterm.tui.widgets.eval_variants import VariantsInput

REPO = Path(__file__).resolve().parents[1]


async def _until(pilot, predicate, tries=400, step=0.1):
    return await until(pilot, predicate, tries, step)


def _eval_folder(root: Path) -> None:
    """./evals/route.yaml (4 chat items) and ./pool.jsonl, as a project folder would hold them."""
    (root / "evals").mkdir()
    rows = [{"id": f"r{i}", "messages": [{"role": "system", "content": "Route the ticket: logistics or payments-ops."},
                                          {"role": "user", "content": f"Ticket {i}: my parcel {'never came' * (i % 2)}"},
                                          {"role": "assistant", "content": "logistics" if i % 2 else "payments-ops"}]}
            for i in range(4)]
    (root / "evals" / "route.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = [{"messages": [{"role": "user", "content": f"Pool ticket {i}"},
                          {"role": "assistant", "content": "logistics"}]} for i in range(3)]
    (root / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (root / "evals" / "route.yaml").write_text(
        "name: route\nversion: 1\ntype: generate\ndata: {path: route.jsonl}\n"
        "generation: {max_new_tokens: 4}\nextract: [strip]\nmetrics: [exact_match]\n")


def _expected_disagreements(out: Path) -> set[str]:
    answers: dict[str, set[str]] = {}
    for line in (out / "samples.jsonl").read_text().splitlines():
        s = json.loads(line)
        answers.setdefault(s["id"], set()).add(json.dumps(s["extracted"]))
    return {i for i, a in answers.items() if len(a) > 1}


async def test_launch_follow_and_read_the_report(tiny_model_dir, tmp_path, monkeypatch):
    _eval_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job's torch: one thread on a busy 2-core machine
    ref = str(tiny_model_dir)
    few = f"fewshot:2:pool.jsonl@{ref}"
    app = TunetermApp(start="evals")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        keys = {b.key for b in screen.BINDINGS if b.show}
        assert {"ctrl+l", "ctrl+o", "ctrl+f", "ctrl+b"} <= keys  # every action is in the footer
        select = screen.query_one("#evals-spec", Select)
        assert await _until(pilot, lambda: select.value == "evals/route.yaml")  # the specs under ./evals
        models = screen.query_one("#evals-models", VariantsInput)
        assert await _until(pilot, lambda: models.value == "smollm2-135m-instruct")  # the default model
        models.value = f"{ref},{few}"
        await pilot.press("ctrl+l")
        assert await _until(pilot, lambda: screen.launched, tries=200)
        job_id = screen.launched[0]
        spec = jobs.read_spec(jobs.get_job(job_id).dir)
        config = spec.get("config", spec)
        assert config.get("models") == [ref, few] and config.get("cwd") == str(tmp_path)
        # follow it: the selected job's progress, then its report
        assert await _until(pilot, lambda: screen.selected == job_id)
        view = screen.query_one(EvalReport)
        assert await _until(pilot, lambda: view.report is not None, tries=2400), (
            str(screen.query_one("#evals-status").render()) + "\n" + "\n".join(jobs.tail_log(job_id, 30)))
        status = str(screen.query_one("#evals-status").render())
        assert "succeeded" in status and "done: 8/8 items" in status  # 4 items x 2 variants, followed
        variants = screen.query_one("#eval-variants", DataTable)
        assert variants.row_count == 2  # one task x two variants
        cells = [str(c) for c in variants.get_row_at(1)]
        assert cells[0].startswith("fewshot:2:pool.jsonl@")
        assert "[" in cells[1] and "]" in cells[1]  # the 95% interval
        assert "vs" in cells[2] and "p=" in cells[2]  # the paired comparison with its base
        out = jobs.get_job(job_id).dir / "output"
        report = json.loads((out / "report.json").read_text())
        assert report["tasks"]["route"]["comparisons"][0]["baseline"] == ref
        # the items: only where the variants disagree, then all, then back
        expected = _expected_disagreements(out)
        assert {r.item for r in view.shown_items} == expected
        assert screen.query_one("#eval-items", DataTable).row_count == len(expected)
        await pilot.press("ctrl+f")
        assert len(view.shown_items) == 4 and not view.only_disagree
        await pilot.press("ctrl+f")
        assert {r.item for r in view.shown_items} == expected
    # reopening the workbench: the finished job's report opens again
    app = TunetermApp(start="evals")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: screen.selected == job_id and screen.states.get(job_id) == "succeeded")
        view = screen.query_one(EvalReport)
        assert await _until(pilot, lambda: view.report is not None)
        view.clear("cleared")
        screen.report_job = None
        await pilot.press("ctrl+o")
        assert await _until(pilot, lambda: view.report is not None and screen.report_job == job_id)
        assert screen.query_one("#eval-variants", DataTable).row_count == 2


async def test_a_bad_variant_fails_before_any_job(tmp_path, monkeypatch, tiny_model_dir):
    _eval_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    app = TunetermApp(start="evals")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        assert await _until(pilot, lambda: screen.query_one("#evals-spec", Select).value == "evals/route.yaml")
        screen.query_one("#evals-models", VariantsInput).value = f"{tiny_model_dir}+2shot"
        await pilot.press("ctrl+l")
        assert await _until(pilot, lambda: any(n.severity == "error" for n in app._notifications))
        note = next(n for n in app._notifications if n.severity == "error")
        assert note.title == "REF+Nshot is now written as a few-shot reference"
        screen.query_one("#evals-models", VariantsInput).value = f"fewshot:2:missing.jsonl@{tiny_model_dir}"
        await pilot.press("ctrl+l")
        assert await _until(pilot, lambda: sum(n.severity == "error" for n in app._notifications) >= 2)
        assert jobs.list_jobs() == []
        await pilot.press("ctrl+o")  # nothing selected: a warning, not a crash
        assert await _until(pilot, lambda: any(n.severity == "warning" and "no eval job" in n.message
                                               for n in app._notifications))


async def test_variants_complete_the_entry_being_typed(tmp_path):
    from tuneterm.tui.widgets.eval_variants import VariantsSuggester

    sugg = VariantsSuggester((".gguf",))
    sugg.names = ["smollm2-135m-instruct", "job:abc123"]
    assert await sugg.get_suggestion("smollm2-135m-instruct, jo") == "smollm2-135m-instruct, job:abc123"
    assert (await sugg.get_suggestion("smollm2-135m-instruct,few")).startswith(
        "smollm2-135m-instruct,fewshot:4:sample_data/fewshot/pool.jsonl@smollm2-135m-instruct")
    (tmp_path / "model-dir").mkdir()
    assert await sugg.get_suggestion(f"job:abc123,{tmp_path}/mod") == f"job:abc123,{tmp_path}/model-dir/"


def test_the_evals_screen_and_its_launch_checks_import_no_torch():
    code = ("import sys\nimport tuneterm.tui.screens.evals, tuneterm.tui.widgets.eval_report\n"
            "from tuneterm.core.evals import views\n"
            "config, cmd = views.check_and_config('evals/tickets', ['smollm2-135m-instruct', "
            "'fewshot:2:sample_data/fewshot/pool.jsonl@smollm2-135m-instruct'], limit=3)\n"
            "assert config['limit'] == 3 and len(config['models']) == 2, config\n"
            "print('HEAVY', [m for m in ('torch', 'transformers', 'evaluate', 'peft') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
