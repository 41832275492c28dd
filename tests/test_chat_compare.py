"""`tuneterm chat` with remote references and `chat --compare`, on the tiny model and a LoRA
adapter over it, through real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("cmp-adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapter_dir):
    from tuneterm.workers.server import make_server, serve_in_thread

    srv = make_server([str(tiny_model_dir), str(adapter_dir)], port=0)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def test_compare_local_models_json(cli, tiny_model_dir, adapter_dir):
    refs = f"{tiny_model_dir},{adapter_dir}"
    code, out, err = cli("chat", "--compare", refs, "hello there", "-n", "6", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [r["model"] for r in report["results"]] == [str(tiny_model_dir), str(adapter_dir)]
    assert all(r["completion_tokens"] == 6 and r["error"] is None for r in report["results"])
    assert all(r["ttft_ms"] > 0 and r["finish_reason"] == "length" for r in report["results"])
    assert report["results"][0]["text"] != report["results"][1]["text"]
    assert report["parallel"] is False and report["params"]["temperature"] == 0.0
    code, out2, err = cli("chat", "--compare", refs, "hello there", "-n", "6", "--json", "--parallel")
    assert code == 0, err
    par = json.loads(out2)
    assert par["parallel"] is True
    assert [r["text"] for r in par["results"]] == [r["text"] for r in report["results"]]


def test_compare_text_table(cli, adapter_dir):
    code, out, _ = cli("chat", "--compare", str(adapter_dir), "hi", "-n", "4")
    assert code == 0
    assert f"── {adapter_dir} ──" in out and "ttft ms" in out and "one after another" in out


def test_chat_with_http_and_openai_refs(cli, server, tiny_model_dir, adapter_dir, monkeypatch):
    url_ref = f"{server.url}#{adapter_dir}"
    code, out, err = cli("chat", url_ref, "hello there", "-n", "5", "--json")
    assert code == 0, err
    via_http = json.loads(out)
    assert via_http["completion_tokens"] == 5 and via_http["text"]
    # openai:MODEL goes to OPENAI_BASE_URL: point it at our server
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    code, out, err = cli("chat", f"openai:{adapter_dir}", "hello there", "-n", "5", "--json")
    assert code == 0, err
    assert json.loads(out)["text"] == via_http["text"]
    # compare mixes remote and local refs
    code, out, err = cli("chat", "--compare", f"{url_ref},{adapter_dir}", "hello there", "-n", "5", "--json")
    assert code == 0, err
    texts = [r["text"] for r in json.loads(out)["results"]]
    assert texts == [via_http["text"], via_http["text"]]


def test_remote_errors_are_clear(cli, server, monkeypatch):
    code, _, err = cli("chat", "openai:gpt-4o-mini", "hi")
    assert code == 2 and "OPENAI_API_KEY is not set" in err and "Traceback" not in err
    code, _, err = cli("chat", f"{server.url}#no-such-model", "hi")
    assert code == 4 and "has no model 'no-such-model'" in err
    code, out, err = cli("chat", "--compare", "http://127.0.0.1:9/v1#x", "hi", "--json")
    assert code == 1
    assert "cannot reach the model server" in json.loads(out)["results"][0]["error"]
    code, _, err = cli("chat", "--compare", "no-such-model,other", "hi")
    assert code == 4 and "unknown model reference" in err
    assert cli("chat", "--compare", "a,a", "hi")[0] == 2
    # models and no prompt: a usage error (a lone text that is not a list of models is the prompt, for the
    # default lineup: tests/test_chat_trained_prompt.py)
    assert cli("chat", "--compare", "smollm2-135m-instruct")[0] == 2
    assert cli("chat", "--compare")[0] == 2


@pytest.fixture
def pool(tmp_path) -> Path:
    rows = [{"messages": [{"role": "system", "content": "Pick a queue."}, {"role": "user", "content": f"ticket {i}"},
                          {"role": "assistant", "content": f"queue-{i}"}]} for i in range(4)]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _direct(server, model: str, messages: list[dict], n: int) -> str:
    from openai import OpenAI

    r = OpenAI(base_url=server.url, api_key="x", max_retries=0).chat.completions.create(
        model=model, messages=messages, max_tokens=n, temperature=0)
    return r.choices[0].message.content


def test_fewshot_over_remote_and_local_refs(cli, server, tiny_model_dir, adapter_dir, pool):
    from tuneterm.core import fewshot
    from tuneterm.core.chat_client import with_fewshot

    ref = f"fewshot:2:seed=1:{pool}@{server.url}#{adapter_dir}"
    shown = with_fewshot(fewshot.parse_spec(ref), [{"role": "user", "content": "hello there"}])
    assert [m["role"] for m in shown] == ["system", "user", "assistant", "user", "assistant", "user"]
    want = _direct(server, str(adapter_dir), shown, 5)
    assert want != _direct(server, str(adapter_dir), shown[-1:], 5)  # the examples change the answer
    # chat over a remote model: the examples are put in front by the client
    code, out, err = cli("chat", ref, "hello there", "-n", "5", "--json")
    assert code == 0, err
    assert json.loads(out)["text"] == want
    # --compare: a few-shot ref over a local model is served next to it, sharing its weights
    local_ref = f"fewshot:2:seed=1:{pool}@{adapter_dir}"
    code, out, err = cli("chat", "--compare", f"{local_ref},{adapter_dir},{ref}", "hello there", "-n", "5", "--json")
    assert code == 0, err
    texts = {r["model"]: r["text"] for r in json.loads(out)["results"]}
    assert texts[local_ref] == texts[ref] == want
    assert texts[str(adapter_dir)] == _direct(server, str(adapter_dir), shown[-1:], 5)


def test_serve_answers_to_a_fewshot_model_id(server, tiny_model_dir, pool):
    from tuneterm.core import fewshot
    from tuneterm.core.chat_client import with_fewshot
    from tuneterm.workers.server import ChatServer, serve_in_thread
    from tuneterm.workers.variants import ServedModel

    base = server.variants[str(tiny_model_dir)]
    ref = f"fewshot:1:similar:{pool}@{tiny_model_dir}"
    spec = fewshot.parse_spec(ref)
    variants = {**server.variants, ref: ServedModel(ref, base.group, None, fewshot=spec, pool=fewshot.load_pool(spec.pool))}
    srv = ChatServer(("127.0.0.1", 0), variants)
    serve_in_thread(srv)
    try:
        messages = [{"role": "user", "content": "ticket 3 please"}]
        got = _direct(srv, ref, messages, 4)
        assert got == _direct(srv, str(tiny_model_dir), with_fewshot(spec, messages), 4)
        card = json.loads(__import__("urllib.request").request.urlopen(f"{srv.url}/models").read())["data"][-1]
        assert card["id"] == ref and card["tuneterm"]["fewshot"]["strategy"] == "similar"
        assert str(tiny_model_dir) in card["tuneterm"]["shared_with"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_prompt_after_the_options_is_the_prompt():
    """`chat MODEL --system S "PROMPT"`: argparse left PROMPT over ("unrecognized arguments")."""
    from tuneterm.cli import _late_positionals, build_parser

    parser = build_parser()
    argv = ["chat", "smollm2-135m-instruct", "--system", "Be brief.", "My card was charged twice"]
    args, extra = parser.parse_known_args(argv)
    _late_positionals(parser, args, extra)
    assert (args.model, args.prompt, args.system) == ("smollm2-135m-instruct", "My card was charged twice", "Be brief.")
    args, extra = parser.parse_known_args(["jobs", "ls", "stray"])
    assert extra == ["stray"]
    with pytest.raises(SystemExit):  # other commands still refuse a stray word
        _late_positionals(parser, args, extra)
