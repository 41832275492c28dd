"""`tuneterm openai ...` against a fake fine-tuning server on 127.0.0.1, through the real SDK."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import VALID_KEY, FakeOpenAI

from tuneterm.core import openai_jobs
from tuneterm.core.errors import OpenAIError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _pinned_today(monkeypatch):
    monkeypatch.setenv("TUNETERM_TODAY", "2026-11-27")


@pytest.fixture
def fake(monkeypatch):
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_API_KEY", VALID_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


def _ticket(i: int, text: str = "") -> dict:
    return {"messages": [
        {"role": "system", "content": "Route the ticket to one of: payments-ops, platform-eng, identity-team, logistics."},
        {"role": "user", "content": f"Ticket {i}: I cannot log in since the password reset. {text}"},
        {"role": "assistant", "content": "identity-team"},
    ]}


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(_ticket(i)) + "\n" for i in range(12)), encoding="utf-8")
    return path


def _client(fake):
    from openai import OpenAI

    return OpenAI(base_url=fake.base_url, api_key=VALID_KEY, max_retries=0)


def _upload_and_create(fake, lines: list[str], **kwargs):
    client = _client(fake)
    f = client.files.create(file=("t.jsonl", "".join(lines).encode()), purpose="fine-tune")
    return client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f.id, **kwargs)


def test_submit_wait_events_models_happy_path(cli, fake, data, tmp_workspace):
    code, out, err = cli("openai", "submit", str(data), "--model", "gpt-4o-mini", "--suffix", "tickets", "--yes")
    assert code == 0, err
    assert fake.job_count() == 1
    job_id = next(iter(fake.state.jobs))
    assert f"created {job_id}" in out and "≈ $" in out
    body = fake.state.jobs[job_id]["job"]
    assert body["method"]["type"] == "supervised" and body["metadata"]["tuneterm_submit"]
    uploaded = fake.state.files[body["training_file"]]
    assert uploaded["purpose"] == "fine-tune" and uploaded["bytes"] == data.stat().st_size

    code, out, err = cli("openai", "wait", job_id, "--poll", "0")
    assert code == 0, err
    assert "succeeded" in out and f"ft:gpt-4o-mini-2024-07-18:personal:tickets:{job_id[-8:]}" in out
    assert "trained" in out and "estimated" in out

    code, out, _ = cli("openai", "events", job_id)
    lines = out.strip().splitlines()
    assert "Created fine-tuning job" in lines[0] and "Validating training file" in lines[1]
    assert "Files validated" in lines[2] and "Fine-tuning job started" in lines[3]
    assert "Step 1/" in lines[4]
    assert "New fine-tuned model created" in lines[-2] and "successfully completed" in lines[-1]
    assert sum("Checkpoint created" in line for line in lines) == 8  # 12 examples -> 8 epochs

    code, out, _ = cli("openai", "models")
    assert code == 0 and "ft:gpt-4o-mini-2024-07-18:personal:tickets" in out
    code, out, _ = cli("openai", "jobs", "--local", "--json")
    rows = json.loads(out)
    assert rows[0]["id"] == job_id and rows[0]["status"] == "succeeded" and rows[0]["trained_tokens"] > 0
    assert rows[0]["estimated_cost_usd"] > 0 and rows[0]["base_url"] == fake.base_url
    # the key is nowhere in the workspace (DB included)
    for path in tmp_workspace.root.rglob("*"):
        if path.is_file():
            assert VALID_KEY.encode() not in path.read_bytes(), path


def test_job_object_shapes_through_the_sdk(fake):
    job = _upload_and_create(fake, [json.dumps(_ticket(i)) + "\n" for i in range(12)], suffix="s")
    assert job.id.startswith("ftjob-") and job.status == "validating_files"
    assert job.hyperparameters.n_epochs == "auto" and job.trained_tokens is None and job.fine_tuned_model is None
    client = _client(fake)
    seen = [client.fine_tuning.jobs.retrieve(job.id) for _ in range(3)]
    assert [j.status for j in seen] == ["queued", "running", "running"]
    assert seen[1].hyperparameters.n_epochs == 8 and seen[1].hyperparameters.batch_size == 1
    while seen[-1].status != "succeeded":
        seen.append(client.fine_tuning.jobs.retrieve(job.id))
    done = seen[-1]
    assert done.trained_tokens > 0 and done.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:")
    assert done.result_files and done.result_files[0].startswith("file-")
    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert len(ckpts) == 3 and ckpts[0].id.startswith("ftckpt_")
    assert ckpts[0].fine_tuned_model_checkpoint == done.fine_tuned_model
    assert ckpts[1].fine_tuned_model_checkpoint.endswith(f":ckpt-step-{ckpts[1].step_number}")
    # paging with `after` returns every event once, oldest first
    events = openai_jobs.new_events(client, job.id, None, fake.base_url, page_size=7)
    assert len({e.id for e in events}) == len(events) == len(fake.state.jobs[job.id]["events"])
    assert [e.created_at for e in events] == sorted(e.created_at for e in events)
    assert all(e.id.startswith("ftevent-") for e in events)
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics[0].data["step"] == 1 and metrics[-1].data["total_steps"] == 96


def test_dry_run_sends_nothing_and_needs_no_key(cli, fake, data, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    code, out, err = cli("openai", "submit", str(data), "--model", "gpt-4.1-mini", "--dry-run", "--n-epochs", "2")
    assert code == 0, err
    assert fake.state.requests == []
    request = json.loads(out[out.index("{"):])
    assert request["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    assert request["model"] == "gpt-4.1-mini"


def test_submit_refuses_a_broken_dataset_before_uploading(cli, fake):
    code, _, err = cli("openai", "submit", str(REPO / "sample_data" / "broken" / "broken.jsonl"),
                       "--model", "gpt-4o-mini", "--yes")
    assert code == 3 and "nothing was uploaded" in err and "line" in err
    assert fake.state.requests == []


def test_submit_asks_for_confirmation_without_yes(cli, fake, data):
    code, _, err = cli("openai", "submit", str(data), "--model", "gpt-4o-mini")
    assert code == 2 and "--yes" in err
    assert [r for r in fake.state.requests if r[0] == "POST"] == []  # nothing uploaded or created


def test_bad_key_401_never_shows_the_key(cli, fake, monkeypatch):
    wrong = "sk-wrong-key-that-must-not-leak-9999"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    code, out, err = cli("openai", "jobs")
    assert code == 5
    assert "401" in err and "OPENAI_API_KEY" in err
    assert wrong not in err + out and "9999" not in err
    assert fake.state.auth_headers[-1] == f"Bearer {wrong}"  # the key did reach the server


def test_missing_key_is_a_clear_usage_error(cli, fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    code, _, err = cli("openai", "jobs")
    assert code == 2 and "OPENAI_API_KEY is not set" in err


def test_403_wind_down(cli, fake, data):
    fake.faults.forbid_create = True
    code, _, err = cli("openai", "submit", str(data), "--model", "gpt-4o-mini", "--yes")
    assert code == 5
    assert "unavailable for this organization (403)" in err and "2027-01-06" in err
    assert "cannot create fine-tuning jobs" in err
    assert fake.job_count() == 0


def test_429_with_retry_after(cli, fake):
    fake.faults.rate_limit = 1
    fake.faults.retry_after = 300  # above the SDK's 120 s cap: it gives up at once
    code, _, err = cli("openai", "jobs")
    assert code == 5 and "(429)" in err and "retry after: 300 s" in err


def test_5xx_after_the_job_was_stored_adopts_it_instead_of_duplicating(fake, data):
    fake.faults.create_5xx_after = 1
    client = openai_jobs.make_client(fake.base_url)
    f = openai_jobs.upload(client, data, fake.base_url)
    request = openai_jobs.build_request("gpt-4o-mini", f.id)
    said: list[str] = []
    job = openai_jobs.create_job(client, request, fake.base_url, sleep=lambda s: None, say=said.append)
    assert fake.job_count() == 1 and job.id in fake.state.jobs
    assert any("created despite the error" in s for s in said)
    creates = [r for r in fake.state.requests if r == ("POST", "/fine_tuning/jobs")]
    assert len(creates) == 1  # no SDK retry of the create


def test_5xx_before_storing_retries_once_then_succeeds(fake, data):
    fake.faults.create_5xx_before = 1
    client = openai_jobs.make_client(fake.base_url)
    f = openai_jobs.upload(client, data, fake.base_url)
    waits: list[float] = []
    job = openai_jobs.create_job(client, openai_jobs.build_request("gpt-4o-mini", f.id), fake.base_url,
                                 sleep=waits.append)
    assert fake.job_count() == 1 and job.id in fake.state.jobs and waits == [1.0]


def test_5xx_that_persists_gives_a_clear_error(fake, data):
    fake.faults.create_5xx_before = 10
    client = openai_jobs.make_client(fake.base_url)
    f = openai_jobs.upload(client, data, fake.base_url)
    with pytest.raises(OpenAIError) as err:
        openai_jobs.create_job(client, openai_jobs.build_request("gpt-4o-mini", f.id), fake.base_url,
                               sleep=lambda s: None)
    assert "server error" in err.value.title and "openai jobs" in err.value.hint
    assert fake.job_count() == 0


def test_job_failing_validation_reports_code_and_message(cli, fake):
    lines = [json.dumps(_ticket(i)) + "\n" for i in range(11)] + [json.dumps(_ticket(99, "<|fim_suffix|>")) + "\n"]
    job = _upload_and_create(fake, lines)
    code, out, err = cli("openai", "wait", job.id, "--poll", "0")
    assert code == 5
    assert "the fine-tuning job failed" in err and "invalid_training_file" in err
    assert "Example 12 message contains an invalid token: <|fim_suffix|>" in err
    assert "training_file" in err


def test_moderation_failure_after_training(cli, fake):
    fake.faults.moderation_failure = True
    job = _upload_and_create(fake, [json.dumps(_ticket(i)) + "\n" for i in range(12)])
    code, _, err = cli("openai", "events", job.id, "--follow", "--poll", "0")
    assert code == 5 and "moderation" in err.lower() and "Moderation API" in err


def test_paused_job_is_shown_and_resumes(cli, fake):
    fake.faults.pause_at_running = True
    job = _upload_and_create(fake, [json.dumps(_ticket(i)) + "\n" for i in range(12)])
    for _ in range(3):
        code, out, _ = cli("openai", "status", job.id)
    assert code == 0 and "status       paused" in out and "resume" in out
    _client(fake).fine_tuning.jobs.resume(job.id)
    code, out, _ = cli("openai", "wait", job.id, "--poll", "0")
    assert code == 0 and "succeeded" in out


def test_cancel(cli, fake):
    job = _upload_and_create(fake, [json.dumps(_ticket(i)) + "\n" for i in range(12)])
    code, out, _ = cli("openai", "cancel", job.id)
    assert code == 0 and "cancelled" in out
    code, _, err = cli("openai", "wait", job.id, "--poll", "0")
    assert code == 1 and "cancelled" in err


def test_model_past_shutdown_and_the_end_of_new_jobs(cli, fake, data, monkeypatch):
    code, _, err = cli("openai", "submit", str(data), "--model", "gpt-4.1-nano", "--yes")
    assert code == 5 and "past its shutdown date" in err and "2026-10-23" in err
    monkeypatch.setenv("TUNETERM_TODAY", "2027-01-07")
    code, _, err = cli("openai", "submit", str(data), "--model", "gpt-4o-mini", "--yes")
    assert code == 5 and "no longer accepts new fine-tuning jobs" in err
    assert fake.state.requests == []


def test_server_announced_shutdown_date_is_obeyed(cli, fake, data):
    fake.state.models["gpt-4o-mini-2024-07-18"]["shutdown_date"] = "2026-11-20"
    code, _, err = cli("openai", "submit", str(data), "--model", "gpt-4o-mini", "--yes")
    assert code == 5 and "past its shutdown date" in err and "2026-11-20" in err
    assert fake.job_count() == 0 and ("POST", "/files") not in fake.state.requests


def test_unknown_job_is_a_404_message(cli, fake):
    code, _, err = cli("openai", "status", "ftjob-nope")
    assert code == 5 and "404" in err and "ftjob-nope" in err


def test_redact_and_safe_url(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-abcdefgh12345678")
    assert "12345678" not in openai_jobs.redact("bad key sk-proj-abcdefgh12345678 and sk-ab****5678")
    assert openai_jobs.safe_url("https://user:pw@host:8080/v1") == "https://host:8080/v1"
