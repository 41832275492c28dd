"""`tuneterm hosted ... --provider P` against fake Together, Fireworks, Mistral and Azure servers.

Each fake speaks its provider's documented HTTP API on 127.0.0.1; the clients are tuneterm's REST
clients (Together, Fireworks, Mistral) and the OpenAI SDK's AzureOpenAI (Azure).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_hosted import FakeFireworks, FakeMistral, FakeTogether
from fake_hosted.base import VALID_KEY, Faults
from fake_openai import FakeOpenAI

from tuneterm.core import providers

MODELS = {"together": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "mistral": "open-mistral-7b",
          "fireworks": "accounts/fireworks/models/llama-v3p1-8b-instruct"}
FAKES = {"together": FakeTogether, "mistral": FakeMistral, "fireworks": FakeFireworks}


@pytest.fixture(autouse=True)
def _pinned_today(monkeypatch):
    monkeypatch.setenv("TUNETERM_TODAY", "2026-12-05")


def _ticket(i: int) -> dict:
    return {"messages": [
        {"role": "system", "content": "Route the ticket to one of: payments-ops, platform-eng, identity-team."},
        {"role": "user", "content": f"Ticket {i}: I cannot log in since the password reset."},
        {"role": "assistant", "content": "identity-team"},
    ]}


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(_ticket(i)) + "\n" for i in range(12)), encoding="utf-8")
    return path


def _serve(name: str, monkeypatch, faults: Faults | None = None):
    fake = FAKES[name](faults).start()
    provider = providers.get(name)
    monkeypatch.setenv(provider.key_env, VALID_KEY)
    monkeypatch.setenv(provider.url_env, fake.base_url)
    monkeypatch.setenv("FIREWORKS_ACCOUNT_ID", "fake-account")
    return fake


def _no_key_on_disk(root: Path, key: str) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("name", ["together", "mistral", "fireworks"])
def test_submit_wait_events_status_cancel(name, cli, data, monkeypatch, tmp_workspace):
    fake = _serve(name, monkeypatch)
    try:
        code, out, err = cli("hosted", "submit", str(data), "--provider", name, "--model", MODELS[name],
                             "--suffix", "tickets", "--n-epochs", "2", "--yes")
        assert code == 0, err
        assert fake.job_count() == 1
        job_id = out.split("created ", 1)[1].split()[0]
        assert all(a == f"Bearer {VALID_KEY}" for a in fake.auth_headers)

        code, out, err = cli("hosted", "wait", job_id, "--provider", name, "--poll", "0")
        assert code == 0, err
        assert "succeeded" in out and f"use it as    {name}:" in out
        code, out, _ = cli("hosted", "events", job_id, "--provider", name)
        assert code == 0 and out.strip()
        code, out, _ = cli("hosted", "status", job_id, "--provider", name, "--json")
        status = json.loads(out)
        assert status["status"] == "succeeded" and status["fine_tuned_model"] and status["trained_tokens"] > 0
        code, out, _ = cli("hosted", "models", "--provider", name)
        assert status["fine_tuned_model"] in out
        code, out, _ = cli("hosted", "jobs", "--provider", name, "--local", "--json")
        assert [r["id"] for r in json.loads(out)] == [job_id]

        cli("hosted", "submit", str(data), "--provider", name, "--model", MODELS[name], "--yes")
        second = next(j for j in (json.loads(cli("hosted", "jobs", "--provider", name, "--json")[1])) if j["id"] != job_id)
        code, out, err = cli("hosted", "cancel", second["id"], "--provider", name)
        assert code == 0, err and "cancelled" in out
        assert fake.job_count() == 2
    finally:
        fake.stop()
    _no_key_on_disk(tmp_workspace.root, VALID_KEY)


@pytest.mark.parametrize("name", ["together", "mistral", "fireworks"])
def test_a_5xx_after_create_still_makes_exactly_one_job(name, cli, data, monkeypatch):
    fake = _serve(name, monkeypatch, Faults(create_5xx_after=1))
    try:
        code, out, err = cli("hosted", "submit", str(data), "--provider", name, "--model", MODELS[name], "--yes")
        assert code == 0, err
        assert fake.job_count() == 1
    finally:
        fake.stop()


@pytest.mark.parametrize("name", ["together", "mistral"])
def test_the_providers_own_estimate_is_shown_and_a_gap_over_5_percent_reported(name, cli, data, monkeypatch):
    fake = _serve(name, monkeypatch)
    try:
        code, out, err = cli("hosted", "submit", str(data), "--provider", name, "--model", MODELS[name],
                             "--n-epochs", "2", "--yes")
        assert code == 0, err
        assert "provider estimate:" in out and "differs from ours" not in out
    finally:
        fake.stop()
    fake = _serve(name, monkeypatch, Faults(estimate_scale=1.2))
    try:
        code, out, err = cli("hosted", "submit", str(data), "--provider", name, "--model", MODELS[name],
                             "--n-epochs", "2", "--yes", "--json")
        assert code == 0, err
        gap = json.loads(out)["estimate"]["provider_estimate"]
        assert gap["differs"] and gap["token_gap"] == pytest.approx(0.2, abs=0.01)
    finally:
        fake.stop()


def test_a_failed_job_exits_with_the_reason(cli, data, monkeypatch):
    fake = _serve("mistral", monkeypatch, Faults(fail_next=True))
    try:
        code, out, _ = cli("hosted", "submit", str(data), "--provider", "mistral", "--model", "open-mistral-7b", "--yes")
        job_id = out.split("created ", 1)[1].split()[0]
        code, out, err = cli("hosted", "wait", job_id, "--provider", "mistral", "--poll", "0")
        assert code != 0 and "assistant message" in err
    finally:
        fake.stop()


def test_data_rules_run_before_anything_is_sent(cli, tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    rows = [_ticket(i) for i in range(5)]
    rows[2]["messages"] = [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"},
                           {"role": "assistant", "content": "y"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    fake = _serve("together", monkeypatch)
    try:
        code, _, err = cli("hosted", "submit", str(bad), "--provider", "together", "--model", MODELS["together"], "--yes")
        assert code == 3 and "line 3" in err and "alternating" in err
        assert fake.requests == []
    finally:
        fake.stop()
    two = tmp_path / "two.jsonl"
    two.write_text("".join(json.dumps(_ticket(i)) + "\n" for i in range(2)), encoding="utf-8")
    fake = _serve("fireworks", monkeypatch)
    try:
        code, _, err = cli("hosted", "submit", str(two), "--provider", "fireworks", "--model", MODELS["fireworks"], "--yes")
        assert code == 3 and "at least 3" in err
        assert fake.requests == []
    finally:
        fake.stop()


def test_a_missing_key_names_the_providers_variable(cli, data, monkeypatch):
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    code, _, err = cli("hosted", "jobs", "--provider", "together")
    assert code == 2 and "TOGETHER_API_KEY" in err


def test_azure_through_the_sdks_azure_client(cli, data, monkeypatch, tmp_workspace):
    with FakeOpenAI(azure=True) as fake:
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", fake.base_url)
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", fake.key)
        monkeypatch.setenv("OPENAI_API_VERSION", "2025-04-01-preview")
        code, out, err = cli("hosted", "submit", str(data), "--provider", "azure", "--model", "gpt-4.1-mini",
                             "--suffix", "tickets", "--yes")
        assert code == 0, err
        assert fake.job_count() == 1 and "until 2027-04-14" in out
        job_id = next(iter(fake.state.jobs))
        code, out, err = cli("hosted", "wait", job_id, "--provider", "azure", "--poll", "0")
        assert code == 0, err and "succeeded" in out
        assert "use it as    azure:" in out
        code, out, _ = cli("hosted", "events", job_id, "--provider", "azure")
        assert "successfully completed" in out
    _no_key_on_disk(tmp_workspace.root, fake.key)


def test_azure_refuses_once_its_deployments_retire(cli, data, monkeypatch):
    monkeypatch.setenv("TUNETERM_TODAY", "2027-10-15")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "k")
    code, _, err = cli("hosted", "submit", str(data), "--provider", "azure", "--model", "gpt-4.1-mini", "--yes")
    assert code != 0 and "2027-04-14" in err


def test_openai_group_is_the_hosted_group_for_openai(cli):
    code, out, _ = cli("openai", "jobs", "--local")
    assert code == 0 and "no OpenAI jobs recorded" in out


def test_a_fine_tuned_model_chats_through_its_provider_reference(cli, data, monkeypatch):
    from tuneterm.core import chat_client, modelref

    fake = _serve("together", monkeypatch)
    monkeypatch.setenv("TUNETERM_TOGETHER_CHAT_URL", fake.base_url)
    try:
        cli("hosted", "submit", str(data), "--provider", "together", "--model", MODELS["together"], "--yes")
        job_id = next(iter(fake.jobs))
        cli("hosted", "wait", job_id, "--provider", "together", "--poll", "0")
        model = fake.jobs[job_id]["output_name"]
        ref = f"together:{model}"
        assert modelref.parse(ref).is_remote
        text, stats = chat_client.chat_once(ref, [{"role": "user", "content": "Ticket: cannot log in"}])
        assert text == "identity-team" and fake.chats[-1]["model"] == model
        assert fake.auth_headers[-1] == f"Bearer {VALID_KEY}"
    finally:
        fake.stop()


def test_an_azure_deployment_reference_resolves_to_its_deployment(monkeypatch):
    from tuneterm.core import chat_client

    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "k-123456")
    ep = chat_client.endpoint("azure:tickets-ft")
    assert ep.base_url == "https://res.openai.azure.com/openai/deployments/tickets-ft"
    assert ep.query == {"api-version": "2025-04-01-preview"} and ep.headers == {"api-key": "k-123456"}


def test_auto_epochs_are_sent_as_the_number_that_was_priced(cli, data, monkeypatch):
    fake = _serve("together", monkeypatch)
    try:
        code, out, err = cli("hosted", "submit", str(data), "--provider", "together", "--model", MODELS["together"],
                             "--yes", "--json")
        assert code == 0, err
        est = json.loads(out)["estimate"]
        job = next(iter(fake.jobs.values()))
        assert job["n_epochs"] == est["n_epochs"] == 8  # 12 examples: OpenAI's auto rule gives 8
        code, out, _ = cli("hosted", "submit", str(data), "--provider", "together", "--model", MODELS["together"],
                           "--dry-run", "--json")
        assert code == 0 and json.loads(out)["dry_run"] and fake.job_count() == 1
    finally:
        fake.stop()


def test_azure_errors_name_azures_variables_and_never_the_key(cli, data, monkeypatch):
    with FakeOpenAI(azure=True) as fake:
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", fake.base_url)
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", "wrong-key-987654321")
        code, _, err = cli("hosted", "jobs", "--provider", "azure")
        assert code != 0 and "Azure OpenAI rejected the API key" in err and "AZURE_OPENAI_API_KEY" in err
        assert "987654321" not in err
