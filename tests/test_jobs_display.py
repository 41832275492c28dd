"""What the CLI says about jobs: the time left in `jobs ls` and `jobs logs`, `jobs show` in sentences
with the artifact's files, and the quantize job's log lines. Real job processes (the ``sleep`` kind)."""

from __future__ import annotations

import time

from tuneterm.core import jobs
from tuneterm.core.jobs.describe import quantize_sentence
from tuneterm.core.jobs.eta import eta_seconds, format_duration


def _ev(step, total, t, **kw):
    return {"type": "train", "step": step, "total_steps": total, "time": t, **kw}


def test_eta_from_the_trainers_estimate_or_from_the_pace_of_this_run():
    assert eta_seconds([_ev(5, 20, 100.0, eta_s=30.0)], now=110.0) == 20.0
    assert eta_seconds([_ev(5, 20, 100.0, eta_s=30.0)], now=200.0) == 0.0
    paced = [_ev(2, 10, 10.0), _ev(4, 10, 14.0)]  # 2 s a step, 6 steps left
    assert eta_seconds(paced, now=14.0) == 12.0
    assert eta_seconds(paced, now=17.0) == 9.0
    resumed = [_ev(1, 10, 0.0), _ev(2, 10, 100.0), {"type": "state", "state": "running", "time": 500.0},
               _ev(3, 10, 501.0), _ev(4, 10, 502.0)]  # the pause before the resume does not count
    assert eta_seconds(resumed, now=502.0) == 6.0
    assert eta_seconds([_ev(10, 10, 5.0)]) == 0.0
    assert eta_seconds([_ev(3, 10, 5.0)]) is None and eta_seconds([{"type": "state"}]) is None
    assert [format_duration(s) for s in (7, 185, 7620)] == ["7s", "3m05s", "2h07m"]


def test_ls_and_logs_show_the_time_left_of_a_running_job(cli):
    job = jobs.create_job("sleep", {"steps": 200, "step_seconds": 0.05})
    jobs.launch(job.id)
    deadline = time.monotonic() + 30
    while len([e for e in jobs.read_events(job.id)[0] if e.get("type") == "train"]) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    code, out, _ = cli("jobs", "ls")
    line = next(x for x in out.splitlines() if x.startswith(job.id))
    assert "running" in line and "ETA " in line and "step " in line
    code, out, err = cli("jobs", "logs", job.id)
    assert code == 0 and f"-- job {job.id} running" in err and "ETA " in err
    jobs.cancel(job.id, wait=20)


def test_show_says_what_happened_in_sentences_with_the_artifacts_files(cli):
    job = jobs.create_job("sleep", {"steps": 2, "step_seconds": 0.01, "artifact": True}, name="smoke")
    jobs.launch(job.id)
    assert jobs.wait_for(job.id, 30).state == "succeeded"
    code, out, _ = cli("jobs", "show", job.id)
    assert code == 0
    assert f"job {job.id} (sleep: smoke)" in out
    assert "  It succeeded at " in out
    assert f"It made a model in {job.dir / 'output'}: result.json (" in out
    assert f"Use it as job:{job.id}, for example `tuneterm chat job:{job.id} \"...\"`." in out
    assert f"Its folder is {job.dir}." in out
    crashed = jobs.create_job("sleep", {"steps": 5, "step_seconds": 0.01, "crash_at": 2})
    jobs.launch(crashed.id)
    assert jobs.wait_for(crashed.id, 30).state == "failed"
    code, out, _ = cli("jobs", "show", crashed.id)
    assert "It failed at " in out and "It got to step 2/5" in out
    assert "The error: RuntimeError: deliberate crash at step 2." in out
    assert f"Continue it from its last checkpoint with `tuneterm jobs resume {crashed.id}`." in out


def test_quantize_log_lines_are_sentences():
    assert quantize_sentence({"type": "quantize", "phase": "saved", "seconds": 1.5, "size_mb": 12.3}) == \
        "saved the quantized model (12.3 MB) in 1.5 s"
    done = {"type": "gate", "phase": "done", "ppl_increase": 0.0123, "top1_agreement": 0.97, "size_ratio": 0.31,
            "failures": []}
    assert quantize_sentence(done) == ("the quality gate passed (perplexity +1.23%, top-1 agreement 97.0%, "
                                       "size ratio 0.31)")
    failed = dict(done, failures=["ppl_increase 0.0123 > 0.01"])
    assert quantize_sentence(failed).startswith("the quality gate failed: ppl_increase 0.0123 > 0.01 (")
    assert "{" not in quantize_sentence({"type": "quantize", "phase": "new_phase", "n": 3})


def test_a_quantize_jobs_progress_is_its_phase_in_words():
    """`jobs ls` PROGRESS (and `jobs show`) of a quantize job, whose events have phases, not steps."""
    from tuneterm.core.jobs.describe import progress_text

    assert progress_text({"type": "quantize", "phase": "quantize", "method": "int8-dynamic"}) == \
        "quantizing with int8-dynamic on the CPU"
    assert progress_text({"type": "gate", "phase": "generation", "prompts": 8}) == \
        "comparing greedy generations with the parent on 8 prompts"
    assert progress_text({"type": "train", "step": 3, "total_steps": 9}) == "step 3/9"


def test_a_finished_eval_jobs_progress_names_its_report():
    """A finished eval job's last event is its report: PROGRESS says so rather than staying blank."""
    from tuneterm.core.jobs.describe import progress_text

    assert progress_text({"type": "eval_report", "path": "/x/report.json", "regressions": 0}) == \
        "report written, 0 regressions"
    assert progress_text({"type": "eval_report", "path": "/x/report.json", "regressions": 1}) == \
        "report written, 1 regression"
