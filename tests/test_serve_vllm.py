"""`tuneterm serve --engine vllm` against a stand-in `vllm` executable that speaks vLLM's HTTP API
(vLLM itself needs CUDA and cannot be installed here): launch arguments, readiness, routing of the
base and a job's adapter by name through tuneterm's own client, and shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuneterm.core import jobs

FAKE = Path(__file__).parent / "fake_vllm" / "vllm"


@pytest.fixture
def adapter_job(tiny_model_dir):
    """A finished job whose artifact is a LoRA adapter (r=8) over the tiny Llama."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    job = jobs.create_job("train", {"method": "lora", "model": str(tiny_model_dir)})
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(job.dir / "output" / "adapter")
    (job.dir / "output" / "artifact.json").write_text(json.dumps(
        {"kind": "adapter", "path": "adapter", "job": job.id, "base": str(tiny_model_dir)}))
    return job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_vllm_serve(tiny_model_dir, adapter_job, tmp_path, *extra: str, env: dict[str, str]):
    """`tuneterm serve --engine vllm` over the stand-in, started and read up to its ready banner."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuneterm.cli", "serve", "--engine", "vllm", "--vllm", str(FAKE),
                             str(tiny_model_dir), f"job:{adapter_job.id}", "--port", str(port), *extra,
                             "--vllm-log", str(tmp_path / "vllm.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("tensor parallel" in x for x in lines):
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"serve --engine vllm exited {proc.returncode}: {proc.stderr.read()}")
        lines.append(line)
    return proc, port, "".join(lines)


def test_vllm_child_serves_base_and_adapter_and_stops(tiny_model_dir, adapter_job, tmp_path, run_cli):
    argv_log = tmp_path / "argv.jsonl"
    proc, port, banner = _start_vllm_serve(tiny_model_dir, adapter_job, tmp_path, "--tensor-parallel-size", "2",
                                           env={"FAKE_VLLM_ARGV": str(argv_log)})
    try:
        url = f"http://127.0.0.1:{port}/v1"
        assert f"model: job:{adapter_job.id}" in banner and url in banner

        [args] = [json.loads(x) for x in argv_log.read_text().splitlines()]
        assert args[:2] == ["serve", str(tiny_model_dir)]
        assert args[args.index("--tensor-parallel-size") + 1] == "2"
        assert args[args.index("--max-lora-rank") + 1] == "8"
        module = args[args.index("--lora-modules") + 1]
        assert module == f"job:{adapter_job.id}={adapter_job.dir / 'output' / 'adapter'}"

        # tuneterm's client reaches each model by the name it was registered under
        for name in (str(tiny_model_dir), f"job:{adapter_job.id}"):
            done = run_cli("chat", f"{url}#{name}", "hello", timeout=60)
            assert done.returncode == 0, done.stderr
            assert f"{name} says hi" in done.stdout

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        with pytest.raises(OSError):  # the child is gone with it
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_vllm_missing_is_a_clear_error(cli, tiny_model_dir):
    code, _, err = cli("serve", "--engine", "vllm", "--vllm", "/nonexistent/vllm", str(tiny_model_dir))
    assert code != 0 and "vLLM is not installed" in err and "pip install vllm" in err


def test_vllm_refuses_two_bases(cli, tiny_model_dir, embedded_model_dir):
    code, _, err = cli("serve", "--engine", "vllm", "--vllm", str(FAKE), str(tiny_model_dir), str(embedded_model_dir))
    assert code == 2 and "one base model" in err


def test_the_trained_system_prompt_reaches_vllm_for_the_model_trained_with_it():
    from tuneterm.core.trained_prompt import TrainedPrompt
    from tuneterm.workers.vllm_front import with_trained_prompt

    prompts = {"job:x": TrainedPrompt("x", "Route the ticket.")}

    def sent(path, body):
        return json.loads(with_trained_prompt(path, json.dumps(body).encode(), prompts))

    user = [{"role": "user", "content": "hi"}]
    assert sent("/v1/chat/completions", {"model": "job:x", "messages": user})["messages"] == [
        {"role": "system", "content": "Route the ticket."}, *user]
    own = [{"role": "developer", "content": "Be brief."}, *user]
    assert sent("/v1/chat/completions", {"model": "job:x", "messages": own})["messages"] == own
    assert sent("/v1/chat/completions", {"model": "base", "messages": user})["messages"] == user
    assert sent("/v1/responses", {"model": "job:x", "input": "hi"})["instructions"] == "Route the ticket."
    assert "instructions" not in sent("/v1/responses", {"model": "job:x", "input": [{"role": "system",
                                                                                     "content": "x"}]})
    assert sent("/v1/completions", {"model": "job:x", "prompt": "hi"}) == {"model": "job:x", "prompt": "hi"}


def test_vllm_serve_adds_a_jobs_trained_prompt_streamed_or_not(tiny_model_dir, adapter_job, tmp_path):
    import httpx

    artifact = adapter_job.dir / "output" / "artifact.json"
    artifact.write_text(json.dumps({**json.loads(artifact.read_text()), "system_prompt": "Route the ticket."}))
    requests_log = tmp_path / "requests.jsonl"
    proc, port, banner = _start_vllm_serve(tiny_model_dir, adapter_job, tmp_path,
                                           env={"FAKE_VLLM_REQUESTS": str(requests_log)})
    try:
        assert f"system prompt job {adapter_job.id} was trained with" in banner
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        user = [{"role": "user", "content": "my card was charged twice"}]
        adapter = f"job:{adapter_job.id}"
        answer = httpx.post(url, json={"model": adapter, "messages": user}, timeout=30)
        assert answer.json()["choices"][0]["message"]["content"] == f"{adapter} says hi"
        with httpx.stream("POST", url, json={"model": adapter, "messages": user, "stream": True}, timeout=30) as s:
            streamed = "".join(s.iter_text())
        assert "says" in streamed and streamed.rstrip().endswith("data: [DONE]")
        httpx.post(url, json={"model": str(tiny_model_dir), "messages": user}, timeout=30)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).status_code == 200

        seen = [json.loads(x)["body"] for x in requests_log.read_text().splitlines()]
        trained = [{"role": "system", "content": "Route the ticket."}, *user]
        assert [b["messages"] for b in seen] == [trained, trained, user]  # the base model has no trained prompt
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
