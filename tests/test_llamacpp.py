"""GGUF files through the llama.cpp engine (a worker process of its own): chat, streams, stop strings,
log-likelihoods, serve through the real openai client, a killed worker, job:ID of a GGUF quantize job,
and the de-quantizing fallback when llama-cpp-python is missing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import threading

import pytest

from tuneterm.core.errors import RuntimeFailure
from tuneterm.core.generation import GenerationParams, GenerationStats

needs_llamacpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                    reason="llama-cpp-python is not installed (pip install 'tuneterm[gguf]')")
QUESTION = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    from tuneterm.core import modelref

    target = tmp_path_factory.mktemp("gguf") / "smollm2-q4_1.gguf"
    shutil.copyfile(modelref.embedded_gguf_path(), target)
    return target


@pytest.fixture(scope="module")
def engine(gguf_file):
    from tuneterm.workers.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(gguf_file, n_ctx=1024)
    yield eng
    eng.close()


@needs_llamacpp
def test_a_gguf_file_chats_greedily_as_llama_cpp_does(engine, gguf_file):
    from llama_cpp import Llama

    stats = GenerationStats()
    pieces = list(engine.stream(QUESTION, GenerationParams(max_new_tokens=24), stats))
    assert len(pieces) > 1  # streamed, not one block
    text = "".join(pieces)
    assert stats.prompt_tokens > 10 and 1 <= stats.completion_tokens <= 24 and stats.ttft_s is not None
    assert stats.finish_reason in ("stop", "length")
    # the file's own chat template and end-of-generation tokens: llama-cpp-python's chat completion agrees
    llm = Llama(model_path=str(gguf_file), n_ctx=1024, verbose=False)
    ref = llm.create_chat_completion(QUESTION, temperature=0, max_tokens=24)["choices"][0]["message"]["content"]
    assert text == ref
    assert engine.eos and all(isinstance(t, int) for t in engine.eos)
    assert engine.label() == "llama.cpp, Q4_1, 94 MiB"


@needs_llamacpp
def test_stop_strings_end_the_answer_and_are_not_part_of_it(engine):
    stats = GenerationStats()
    text = "".join(engine.stream([{"role": "user", "content": "Count from 1 to 10, one number per line."}],
                                 GenerationParams(max_new_tokens=60, stop=["4"]), stats))
    assert "4" not in text and "3" in text
    assert stats.finish_reason == "stop"
    # the worker stopped too: the next request answers at once, from a clean state
    again = "".join(engine.stream(QUESTION, GenerationParams(max_new_tokens=4)))
    assert again


@needs_llamacpp
def test_cancel_stops_the_worker_mid_answer(engine):
    cancel = threading.Event()
    stats = GenerationStats()
    got = []
    for piece in engine.stream([{"role": "user", "content": "Write a long story about a dragon."}],
                               GenerationParams(max_new_tokens=200), stats, cancel):
        got.append(piece)
        if len(got) == 3:
            cancel.set()
    assert stats.finish_reason == "cancelled" and stats.completion_tokens < 200


@needs_llamacpp
def test_log_likelihoods_rank_a_multiple_choice_item(engine):
    ctx = engine.tokenize("Question: What is the capital of France?\nAnswer:")
    choices = [" Paris", " London", " Berlin"]
    results = engine.loglikelihood([(ctx, engine.tokenize(c)) for c in choices])
    assert [r["tokens"] for r in results] == [len(engine.tokenize(c)) for c in choices]
    best = max(range(3), key=lambda i: results[i]["logprob"])
    assert choices[best] == " Paris" and all(r["logprob"] < 0 for r in results)


@needs_llamacpp
def test_a_killed_worker_is_a_clear_error_and_the_next_request_starts_a_new_one(engine):
    engine.proc.send_signal(signal.SIGKILL)
    engine.proc.wait()
    with pytest.raises(RuntimeFailure) as err:
        # the generator restarts a dead worker first; kill it again once the answer has begun
        for i, _ in enumerate(engine.stream(QUESTION, GenerationParams(max_new_tokens=40))):
            if i == 0:
                os.kill(engine.proc.pid, signal.SIGKILL)
    assert "llama.cpp worker process stopped" in err.value.render()
    assert "".join(engine.stream(QUESTION, GenerationParams(max_new_tokens=4)))  # a fresh worker


@needs_llamacpp
def test_a_gguf_reference_is_served_beside_others_through_the_openai_client(gguf_file):
    from openai import OpenAI

    from tuneterm.workers.server import make_server, serve_in_thread

    server = make_server([str(gguf_file)], port=0)
    serve_in_thread(server)
    try:
        variant = server.variants[str(gguf_file)]
        assert variant.label().startswith("llama.cpp, Q4_1")
        client = OpenAI(base_url=server.url, api_key="x")
        stream = client.chat.completions.create(model=str(gguf_file), messages=QUESTION, max_tokens=12,
                                                temperature=0, stream=True)
        text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
        direct = "".join(variant.stream(QUESTION, GenerationParams(max_new_tokens=12)))
        assert text == direct and text
        import json
        import urllib.request

        card = json.loads(urllib.request.urlopen(f"{server.url}/models", timeout=30).read())["data"][0]
        assert card["tuneterm"]["engine"].startswith("llama.cpp, Q4_1")
    finally:
        server.shutdown()
        server.server_close()
    # `tuneterm serve` closes every group at shutdown: the llama.cpp worker process ends with it
    from tuneterm.commands.serve import _close_decode_loops

    proc = variant.group.model.proc
    assert proc is not None and proc.poll() is None
    _close_decode_loops(server)
    assert variant.group.model.proc is None and proc.poll() is not None


@needs_llamacpp
def test_job_ref_of_a_gguf_quantize_job_runs_in_llama_cpp(tiny_model_dir):
    from tests.test_quant_cpu import run_job
    from tuneterm.workers.variants import load_variants

    info = run_job(tiny_model_dir, "gguf", "quant.outtype=q8_0")
    ref = f"job:{info.id}"
    variants = load_variants([ref])
    engine = variants[ref].group.model
    try:
        assert getattr(engine, "is_llamacpp", False) and variants[ref].label().startswith("llama.cpp, Q8_0")
        stats = GenerationStats()
        "".join(variants[ref].stream(QUESTION, GenerationParams(max_new_tokens=5), stats))
        assert 1 <= stats.completion_tokens <= 5
    finally:
        engine.close()


def test_without_llama_cpp_a_gguf_job_falls_back_to_torch_and_says_so(tiny_model_dir, monkeypatch, capsys):
    from tests.test_quant_cpu import run_job
    from tuneterm.workers.variants import load_variants

    monkeypatch.setenv("TUNETERM_NO_LLAMACPP", "1")
    info = run_job(tiny_model_dir, "gguf", "quant.outtype=q8_0")
    ref = f"job:{info.id}"
    variant = load_variants([ref])[ref]
    assert not getattr(variant.group.model, "is_llamacpp", False)
    assert variant.label().startswith("gguf via torch, fp32, Q8_0")
    err = capsys.readouterr().err
    assert "llama-cpp-python is not installed" in err and "tuneterm[gguf]" in err
    assert "".join(variant.stream(QUESTION, GenerationParams(max_new_tokens=3))) is not None


@needs_llamacpp
def test_doctor_reports_the_llama_cpp_build():
    from tuneterm.workers.llamacpp import status

    st = status()
    assert st["usable"] and st["version"] == "0.3.36" and "AVX2 = 1" in st["system_info"]


def test_doctor_says_how_to_install_llama_cpp_when_missing(monkeypatch):
    from tuneterm.workers.llamacpp import status

    monkeypatch.setenv("TUNETERM_NO_LLAMACPP", "1")
    st = status()
    assert not st["usable"] and "tuneterm[gguf]" in st["note"] and "CMAKE_ARGS" in st["note"]


@needs_llamacpp
def test_eval_scores_a_gguf_file_through_llama_cpp_like_the_torch_path(cli, gguf_file, embedded_model_dir, tmp_path):
    """Multiple-choice items (log-likelihoods from llama.cpp's logits) score as the torch path scores
    the same model: close log-likelihoods, and the same answer wherever torch's choice is not a near
    tie (one item's top two choices are 0.07 nats apart, within Q4_1 kernels' noise); generate tasks run too."""
    import json

    from tuneterm.core.resources import evals_dir

    spec = evals_dir() / "general_mc"
    runs = {}
    for name, ref in (("gguf", str(gguf_file)), ("torch", str(embedded_model_dir))):
        code, out, err = cli("eval", str(spec), "--models", ref, "--limit", "4", "--no-cache", "--out", str(tmp_path / name))
        assert code == 0, err
        samples = [json.loads(line) for line in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
        runs[name] = {s["id"]: s["logprobs"] for s in samples}
        assert len(runs[name]) == 4
    for item, ref in runs["torch"].items():
        ours = runs["gguf"][item]
        assert max(abs(a - b) for a, b in zip(ours, ref)) < 1.0
        top, second = sorted(ref, reverse=True)[:2]
        if top - second > 0.3:
            assert ours.index(max(ours)) == ref.index(top), item
    code, out, err = cli("eval", str(evals_dir() / "tickets"), "--models", str(gguf_file), "--limit", "2",
                         "--no-cache", "--out", str(tmp_path / "gen"))
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "gen" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["output"].strip() for r in rows)


@needs_llamacpp
def test_a_served_gguf_file_gives_log_probabilities_as_llama_cpp_does(gguf_file):
    """Issue 25 item 2 for GGUF files: logprobs/top_logprobs from the logits llama.cpp picked each token
    from, streamed and not, equal to llama-cpp-python's own; what llama.cpp cannot do here is a 400
    naming the field, not a 500."""
    import openai
    from llama_cpp import Llama
    from openai import OpenAI

    from tuneterm.commands.serve import _close_decode_loops
    from tuneterm.workers.server import make_server, serve_in_thread

    server = make_server([str(gguf_file)], port=0)
    serve_in_thread(server)
    try:
        client = OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=120)
        ref = str(gguf_file)
        r = client.chat.completions.create(model=ref, messages=QUESTION, max_tokens=8, temperature=0, logprobs=True,
                                           top_logprobs=3)
        content = r.choices[0].logprobs.content
        assert len(content) == r.usage.completion_tokens == 8
        assert "".join(t.token for t in content) == r.choices[0].message.content
        assert all(bytes(t.bytes).decode(errors="replace") == t.token for t in content)
        assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token for t in content)  # greedy
        chunks = list(client.chat.completions.create(model=ref, messages=QUESTION, max_tokens=8, temperature=0,
                                                     logprobs=True, top_logprobs=3, stream=True))
        streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
        assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=ref, messages=QUESTION, max_tokens=2, tools=[tool])
        assert err.value.body["param"] == "tools" and "llama.cpp" in err.value.body["message"]
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model=ref, prompt="The cat", max_tokens=1)
        assert err.value.body["param"] == "model" and "llama.cpp" in err.value.body["message"]
    finally:
        server.shutdown()
        server.server_close()
        _close_decode_loops(server)
    llm = Llama(model_path=ref, n_ctx=1024, logits_all=True, verbose=False)
    theirs = llm.create_chat_completion(QUESTION, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)
    theirs = theirs["choices"][0]["logprobs"]["content"]
    assert [t.token for t in content] == [t["token"] for t in theirs]
    assert [t.logprob for t in content] == pytest.approx([float(t["logprob"]) for t in theirs], abs=1e-4)
    for ours, their in zip(content, theirs):
        assert [a.logprob for a in ours.top_logprobs] == pytest.approx(
            [float(a["logprob"]) for a in their["top_logprobs"]], abs=1e-4)


def test_a_served_gguf_file_answers_in_the_json_schema_asked_for(gguf_file):
    """response_format on a GGUF file: llama.cpp's own grammar (from the schema) constrains decoding,
    streamed and not, json_object too; a schema llama.cpp cannot take is a 400 naming response_format."""
    import json

    import jsonschema
    import openai
    from openai import OpenAI

    from tuneterm.commands.serve import _close_decode_loops
    from tuneterm.workers.server import make_server, serve_in_thread

    schema = {"type": "object", "properties": {"queue": {"enum": ["billing", "tech"]}, "urgent": {"type": "boolean"}},
              "required": ["queue", "urgent"], "additionalProperties": False}
    route = [{"role": "user", "content": "Route this ticket: my card was charged twice"}]
    server = make_server([str(gguf_file)], port=0)
    serve_in_thread(server)
    try:
        client = OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=120)
        ref = str(gguf_file)
        fmt = {"type": "json_schema", "json_schema": {"name": "route", "strict": True, "schema": schema}}
        r = client.chat.completions.create(model=ref, messages=route, max_tokens=40, temperature=0,
                                           response_format=fmt)
        answer = r.choices[0].message.content
        jsonschema.validate(json.loads(answer), schema)
        assert r.choices[0].finish_reason == "stop"
        chunks = client.chat.completions.create(model=ref, messages=route, max_tokens=40, temperature=0,
                                                response_format=fmt, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
        free = client.chat.completions.create(model=ref, messages=route, max_tokens=40, temperature=0)
        assert free.choices[0].message.content != answer  # unconstrained, the model writes prose
        loose = client.chat.completions.create(model=ref, messages=route, max_tokens=40, temperature=0,
                                               response_format={"type": "json_object"})
        text = loose.choices[0].message.content  # the 135M model fills an object until max_tokens
        assert text.startswith("{") and text != free.choices[0].message.content
        if loose.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
        else:  # cut by max_tokens: still an object's beginning, key after key
            assert loose.choices[0].finish_reason == "length" and text.lstrip("{ ").startswith('"')
        broken = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/definitions/missing"}}}
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=ref, messages=route, max_tokens=4, response_format=broken)
        assert err.value.body["param"] == "response_format"
        r = client.chat.completions.create(model=ref, messages=route, max_tokens=40, temperature=0,
                                           response_format=fmt)  # the worker still serves
        assert r.choices[0].message.content == answer
    finally:
        server.shutdown()
        server.server_close()
        _close_decode_loops(server)


def test_chat_json_schema_on_a_gguf_file_runs_in_llama_cpp(gguf_file, tmp_path, cli, monkeypatch):
    """`tuneterm chat FILE.gguf --json-schema F` stays in llama.cpp (its grammar) rather than loading the
    file through transformers; a schema llama.cpp cannot take exits 3 naming the option and the problem."""
    import json

    import jsonschema

    schema = {"type": "object", "properties": {"queue": {"enum": ["billing", "tech"]}}, "required": ["queue"],
              "additionalProperties": False}
    from tuneterm.workers import loading

    def no_torch(*args, **kwargs):
        raise AssertionError("the GGUF file was loaded through transformers")

    monkeypatch.setattr(loading, "load", no_torch)
    path = tmp_path / "route.schema.json"
    path.write_text(json.dumps(schema))
    code, out, err = cli("chat", str(gguf_file), "Route: my card was charged twice", "--json-schema", str(path),
                         "--json", "-n", "30")
    assert code == 0, err
    result = json.loads(out)
    jsonschema.validate(json.loads(result["text"]), schema)
    path.write_text(json.dumps({"$ref": "#/definitions/missing"}))
    code, _, err = cli("chat", str(gguf_file), "hi", "--json-schema", str(path))
    assert code == 3 and "--json-schema" in err and "definitions" in err
