"""Issue 15 item 4: a job trained on data with one system prompt records it in its artifact, and
`tuneterm chat`, `chat --compare` and `tuneterm serve` use it for that model unless the user gives
another, and say so. Real workers: a tiny LoRA train job and an int8 quantize job over it."""

from __future__ import annotations

import json

import pytest

from chat_jobs import build
from tuneterm.core import trained_prompt


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    return build(tiny_model_dir, tmp_path_factory.mktemp("chat-jobs") / "ws")


@pytest.fixture
def jobs_here(built, tmp_workspace):
    built.install(tmp_workspace)
    return built


def _artifact(home, job_id) -> dict:
    return json.loads((home / "jobs" / job_id / "output" / "artifact.json").read_text())


def test_the_artifact_records_the_data_system_prompt_and_a_quantize_job_keeps_it(jobs_here, tmp_path):
    b = jobs_here
    assert _artifact(b.home, b.tuned)["system_prompt"] == b.system
    quant = _artifact(b.home, b.quantized)
    assert quant["kind"] == "quantized" and quant["system_prompt"] == b.system and quant["trained_by"] == b.tuned
    for ref in (f"job:{b.tuned}", f"job:{b.quantized}", f"job:{b.tuned[-4:]}", f"fewshot:1:{b.data}@job:{b.tuned}"):
        found = trained_prompt.for_ref(ref)
        assert found is not None and found.text == b.system and found.job_id == b.tuned, ref
    assert trained_prompt.for_ref("smollm2-135m-instruct") is None
    assert trained_prompt.for_ref("job:no-such-job") is None
    # data without one system prompt records none
    rows = [json.loads(line) for line in b.data.read_text().splitlines()]
    rows[1]["messages"][0]["content"] = "something else"
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert trained_prompt.common_system_prompt(b.data) == b.system
    assert trained_prompt.common_system_prompt(mixed) is None
    assert trained_prompt.artifact_fields(mixed) == {"system_prompt": None}


def test_a_job_from_before_the_record_falls_back_to_its_frozen_config(jobs_here, tmp_workspace):
    b = jobs_here
    manifest_path = tmp_workspace.jobs_dir / b.tuned / "output" / "artifact.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.pop("system_prompt")
    manifest_path.write_text(json.dumps(manifest))
    found = trained_prompt.for_ref(f"job:{b.tuned}")
    assert found is not None and found.text == b.system


def test_chat_uses_the_trained_prompt_and_says_so(cli, jobs_here):
    b = jobs_here
    ask = ("chat", f"job:{b.tuned}", "My card was charged twice", "-n", "6", "--json")
    code, out, err = cli(*ask)
    assert code == 0, err
    announced = f"using the system prompt job {b.tuned} was trained with ({len(b.system)} chars); --system to override"
    assert announced in err
    used = json.loads(out)
    assert used["system_prompt_from"] == b.tuned
    code, out, err = cli(*ask, "--system", b.system)  # the same prompt given by hand: the same answer
    assert code == 0 and "using the system prompt" not in err
    by_hand = json.loads(out)
    assert by_hand["system_prompt_from"] is None
    assert (by_hand["text"], by_hand["prompt_tokens"]) == (used["text"], used["prompt_tokens"])
    code, out, err = cli(*ask, "--system", "")  # none at all: the model sees a shorter conversation
    assert code == 0 and "using the system prompt" not in err
    assert json.loads(out)["prompt_tokens"] < used["prompt_tokens"]


def test_compare_gives_each_column_its_own_trained_prompt(cli, jobs_here, tiny_model_dir):
    b = jobs_here
    refs = [str(tiny_model_dir), f"job:{b.tuned}", f"job:{b.quantized}"]
    code, out, err = cli("chat", "--compare", ",".join(refs), "My card was charged twice", "-n", "6", "--json")
    assert code == 0, err
    rows = json.loads(out)["results"]
    assert [r["system_prompt_from"] for r in rows] == [None, b.tuned, b.tuned]
    assert err.count("using the system prompt") == 2 and f"job:{b.quantized}: using the system prompt" in err
    _, single, _ = cli("chat", f"job:{b.tuned}", "My card was charged twice", "-n", "6", "--json")
    single = json.loads(single)  # the same conversation as a chat of its own
    assert (rows[1]["text"], rows[1]["prompt_tokens"]) == (single["text"], single["prompt_tokens"])
    assert rows[2]["prompt_tokens"] == single["prompt_tokens"]  # the quantized column: the same prompt
    # no models given: the base, the newest tuned job and its quantized artifact
    code, out, err = cli("chat", "--compare", "My card was charged twice", "-n", "3", "--json")
    assert code == 0, err
    assert [r["model"] for r in json.loads(out)["results"]] == refs
    code, out2, err = cli("chat", "My card was charged twice", "--compare", "-n", "3", "--json")
    assert code == 0 and [r["model"] for r in json.loads(out2)["results"]] == refs


def test_compare_with_a_system_prompt_uses_it_for_every_column(cli, jobs_here, tiny_model_dir):
    b = jobs_here
    code, out, err = cli("chat", "--compare", f"{tiny_model_dir},job:{b.tuned}", "hi", "-n", "3", "--json",
                         "--system", "Be brief.")
    assert code == 0, err
    assert "using the system prompt" not in err
    assert [r["system_prompt_from"] for r in json.loads(out)["results"]] == [None, None]


def test_serve_applies_the_trained_prompt_when_a_request_has_none(jobs_here, tiny_model_dir, capsys):
    from openai import OpenAI

    from tuneterm.commands.serve import _describe
    from tuneterm.workers.server import make_server, serve_in_thread

    b = jobs_here
    job_ref = f"job:{b.tuned}"
    server = make_server([str(tiny_model_dir), job_ref], port=0)
    serve_in_thread(server)
    try:
        assert server.variants[job_ref].trained.text == b.system
        assert server.variants[str(tiny_model_dir)].trained is None
        _describe(server.variants, None, server.admission)
        banner = capsys.readouterr().out
        assert f"using the system prompt job {b.tuned} was trained with ({len(b.system)} chars)" in banner
        client = OpenAI(base_url=server.url, api_key="x", max_retries=0)

        def answer(messages):
            r = client.chat.completions.create(model=job_ref, messages=messages, max_tokens=6, temperature=0)
            return r.choices[0].message.content, r.usage.prompt_tokens

        user = {"role": "user", "content": "My card was charged twice"}
        plain = answer([user])
        assert plain == answer([{"role": "system", "content": b.system}, user])  # what the model saw, exactly
        assert plain[1] > answer([{"role": "system", "content": "Be brief."}, user])[1]  # a request's own wins
    finally:
        server.shutdown()
        server.server_close()


def test_streaming_never_emits_half_a_character(embedded_model_dir):
    """The fix lives in engine.text_pieces (every local path: generate, the batcher, llama.cpp);
    tests/test_serve_load.py cuts an emoji at every byte. Here: the CLI's own decode of a stream."""
    import queue
    import threading
    import time

    from transformers import AutoTokenizer

    from tuneterm.core.generation import GenerationParams, GenerationStats
    from tuneterm.workers.engine import text_pieces

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    text = "ok é 😀 漢字 🙂"
    ids = tokenizer.encode(text, add_special_tokens=False)
    for cut in range(1, len(ids) + 1):
        tokens: queue.Queue = queue.Queue()
        for tok in ids[:cut]:
            tokens.put(tok)
        tokens.put(None)
        pieces = list(text_pieces(tokens, tokenizer, GenerationParams(max_new_tokens=cut), GenerationStats(),
                                  threading.Event(), None, time.perf_counter(), set()))
        joined = "".join(pieces)
        assert "\ufffd" not in joined and text.startswith(joined), (cut, pieces)
        for p in pieces:
            p.encode("utf-8")  # every piece is whole characters
