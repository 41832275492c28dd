"""`tuneterm serve`: the OpenAI-compatible server on the tiny model, through the official
openai client and curl, with a LoRA adapter sharing the base weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

PROMPT = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter over the tiny model with random (non-zero) weights, so it changes answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    model = get_peft_model(base, cfg)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    return out


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapter_dir):
    from tuneterm.workers.server import make_server, serve_in_thread

    srv = make_server([str(tiny_model_dir), str(adapter_dir)], port=0)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def _ids(server):
    return list(server.variants)


def _post(url: str, body: bytes, headers: dict | None = None, method: str = "POST"):
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_models_list_and_shared_base(client, server, tiny_model_dir, adapter_dir):
    base_id, adapter_id = _ids(server)
    listed = client.models.list()
    assert [m.id for m in listed.data] == [str(tiny_model_dir), str(adapter_dir)]
    # one copy of the base weights: both variants live in one group (one PEFT model)
    assert server.variants[base_id].group is server.variants[adapter_id].group
    assert server.variants[base_id].adapter is None and server.variants[adapter_id].adapter is not None
    card = json.loads(urllib.request.urlopen(f"{server.url}/models").read())["data"][1]
    assert card["tuneterm"]["adapter"] is True and card["tuneterm"]["shared_with"] == [base_id]
    assert card["tuneterm"]["engine"] == "torch"  # what runs it (a GGUF file says llama.cpp, its quant type and size)


def test_stream_with_openai_client_matches_non_stream(client, server):
    model = _ids(server)[0]
    stream = client.chat.completions.create(model=model, messages=PROMPT, stream=True, max_tokens=12,
                                            temperature=0, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.model == model for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 12
    assert all(c.usage is None for c in chunks[:-1])
    full = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=12, temperature=0)
    assert full.object == "chat.completion" and full.choices[0].message.role == "assistant"
    assert full.choices[0].message.content == text and text
    assert full.usage.completion_tokens == 12 and full.choices[0].finish_reason == "length"


def test_base_variant_equals_plain_model_and_adapter_differs(client, server, tiny_model_dir):
    from tuneterm.workers.engine import GenerationParams, generate_text
    from tuneterm.workers.loading import load

    base_id, adapter_id = _ids(server)
    plain = load(str(tiny_model_dir))
    direct, _ = generate_text(plain.model, plain.tokenizer, PROMPT, GenerationParams(max_new_tokens=10))

    def ask(model):
        r = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=10, temperature=0)
        return r.choices[0].message.content

    assert ask(base_id) == direct
    tuned = ask(adapter_id)
    assert tuned != direct
    assert ask(base_id) == direct  # the adapter did not stay switched on


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_streams_sse(server):
    body = json.dumps({"model": _ids(server)[1], "messages": PROMPT, "stream": True, "max_tokens": 6,
                       "temperature": 0})
    proc = subprocess.run(["curl", "-sN", "--fail-with-body", f"{server.url}/chat/completions",
                           "-H", "Content-Type: application/json", "-d", body],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events = [line[len("data: "):] for line in proc.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["choices"][0]["delta"] == {}
    assert all(set(c) >= {"id", "object", "created", "model", "choices"} for c in chunks)
    models = subprocess.run(["curl", "-s", f"{server.url}/models"], capture_output=True, text=True, timeout=30)
    assert json.loads(models.stdout)["object"] == "list"


def test_concurrent_streams_do_not_mix(client, server):
    base_id, adapter_id = _ids(server)
    jobs = [(base_id, "one two three"), (adapter_id, "hello there"), (base_id, "tell me a story"),
            (adapter_id, "what is 2+2?")]

    def solo(model, prompt):
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=10, temperature=0)
        return r.choices[0].message.content

    expected = [solo(m, p) for m, p in jobs]
    got: list = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def worker(i, model, prompt):
        start.wait()
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=10, temperature=0, stream=True)
        got[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=worker, args=(i, m, p)) for i, (m, p) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == expected


def test_stop_seed_and_sampling(client, server):
    model = _ids(server)[1]  # the adapter: the random tiny base only answers newlines
    full = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=16, temperature=0)
    text = full.choices[0].message.content
    assert len(text) > 8, text
    stop = text[4:7]
    cut = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    a, b = (client.chat.completions.create(model=model, messages=PROMPT, max_tokens=12, temperature=1.0,
                                           top_p=0.9, seed=5).choices[0].message.content for _ in range(2))
    assert a == b
    c = client.chat.completions.create(model=model, messages=PROMPT, max_completion_tokens=3, temperature=0)
    assert c.usage.completion_tokens == 3


def test_errors_have_the_openai_shape(client, server):
    import openai

    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=PROMPT)
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=_ids(server)[0], messages=PROMPT, temperature=5)
    assert err.value.body["param"] == "temperature"
    status, body = _post(f"{server.url}/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = _post(f"{server.url}/chat/completions", json.dumps(
        {"model": _ids(server)[0], "messages": [{"role": "bot", "content": "x"}]}).encode())
    assert status == 400 and body["error"]["param"] == "messages[0].role"
    status, body = _post(f"{server.url}/nothing", b"{}")
    assert status == 404 and "error" in body


def test_api_key_is_required_when_set_and_off_loopback(server):
    import openai
    from openai import OpenAI

    from tuneterm.core.errors import UsageError
    from tuneterm.workers.server import ChatServer, make_server, serve_in_thread

    locked = ChatServer(("127.0.0.1", 0), server.variants, api_key="s3cret")
    serve_in_thread(locked)
    try:
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=locked.url, api_key="wrong", max_retries=0).models.list()
        ok = OpenAI(base_url=locked.url, api_key="s3cret", max_retries=0).models.list()
        assert len(ok.data) == 2
    finally:
        locked.shutdown()
        locked.server_close()
    with pytest.raises(UsageError, match="needs an API key"):
        make_server([], host="0.0.0.0", variants={})


def test_serve_command_refuses_bad_setups(cli, tiny_model_dir):
    code, _, err = cli("serve", str(tiny_model_dir), "--host", "0.0.0.0")
    assert code == 2 and "needs an API key" in err and "Traceback" not in err
    code, _, err = cli("serve", "openai:gpt-4o-mini")
    assert code == 2 and "remote model" in err
