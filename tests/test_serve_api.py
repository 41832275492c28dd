"""`tuneterm serve` speaks what its clients send (issue 25): /v1/completions as lm-evaluation-harness's
`local-completions` uses it (echo, logprobs, max_tokens 0, token-id prompts), through the real
`openai` client over HTTP, with log-probabilities checked against the model run directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("api-adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapter_dir):
    from tuneterm.workers.serve import make_server, serve_in_thread

    srv = make_server([str(tiny_model_dir), str(adapter_dir)], port=0)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def _direct_logprobs(model_dir: Path, adapter: Path | None, ids: list[int]) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    return [float(lp[i - 1, ids[i]]) for i in range(1, len(ids))]


def test_completions_echo_logprobs_match_the_model(client, server, tiny_model_dir, adapter_dir):
    tokenizer = server.variants[str(tiny_model_dir)].group.tokenizer
    text = "The cat sat on the mat"
    ids = tokenizer(text)["input_ids"]
    for ref, adapter in ((str(tiny_model_dir), None), (str(adapter_dir), adapter_dir)):
        r = client.completions.create(model=ref, prompt=text, max_tokens=0, echo=True, logprobs=2, temperature=0)
        choice = r.choices[0]
        assert r.object == "text_completion" and choice.text == tokenizer.decode(ids)
        lp = choice.logprobs
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert len(lp.tokens) == len(ids) and all(len(t) <= 2 for t in lp.top_logprobs[1:])
        expected = _direct_logprobs(tiny_model_dir, adapter, ids)
        assert lp.token_logprobs[1:] == pytest.approx(expected, abs=1e-4)
        for got, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
            assert max(top.values()) >= got - 1e-6
        assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 0


def test_completions_token_id_prompts_as_lm_eval_sends_them(client, server, tiny_model_dir):
    """lm-eval's local-completions: tokenized prompts, max_tokens 1, echo, logprobs 1, several per request."""
    tokenizer = server.variants[str(tiny_model_dir)].group.tokenizer
    batch = [tokenizer("Question: 2+2? Answer: 4")["input_ids"], tokenizer("Question: 2+2? Answer: 5")["input_ids"]]
    r = client.completions.create(model=str(tiny_model_dir), prompt=batch, max_tokens=1, echo=True, logprobs=1,
                                  temperature=0, seed=1234)
    assert [c.index for c in r.choices] == [0, 1]
    for choice, ids in zip(r.choices, batch):
        lp = choice.logprobs
        assert len(lp.token_logprobs) >= len(ids)  # the prompt, then the generated token
        assert lp.token_logprobs[1:len(ids)] == pytest.approx(_direct_logprobs(tiny_model_dir, None, ids), abs=1e-4)


def test_completions_generate_and_stream_the_same_text(client, server, adapter_dir):
    ref = str(adapter_dir)
    full = client.completions.create(model=ref, prompt="Once upon a time", max_tokens=8, temperature=0)
    assert full.usage.completion_tokens == 8 and full.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model=ref, prompt="Once upon a time", max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text and chunks[-1].usage.completion_tokens == 8
    echoed = client.completions.create(model=ref, prompt="Once upon a time", max_tokens=8, temperature=0, echo=True)
    assert echoed.choices[0].text == "Once upon a time" + full.choices[0].text


def test_completions_refuse_what_they_do_not_apply(client, server, tiny_model_dir):
    import openai

    for kwargs, param in (({"suffix": "x"}, "suffix"), ({"best_of": 3}, "best_of"),
                          ({"extra_body": {"frobnicate": 1}}, "frobnicate"), ({"logprobs": 50}, "logprobs"),
                          ({"max_tokens": -1}, "max_tokens"), ({"prompt": [[10**9]]}, "prompt")):
        kwargs = {"prompt": "hi", "max_tokens": 1, **kwargs}
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model=str(tiny_model_dir), **kwargs)
        assert err.value.body["param"] == param, (kwargs, err.value.body)


def test_chat_logprobs_come_from_the_logits_that_picked_each_token(client, server, tiny_model_dir, adapter_dir):
    """Issue 25 item 2: logprobs/top_logprobs in OpenAI's shape, streamed and not, base and adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneterm.workers.engine import encode_chat

    messages = [{"role": "user", "content": "hello there"}]
    tokenizer = server.variants[str(tiny_model_dir)].group.tokenizer
    for ref, adapter in ((str(tiny_model_dir), None), (str(adapter_dir), adapter_dir)):
        r = client.chat.completions.create(model=ref, messages=messages, max_tokens=6, temperature=0, logprobs=True,
                                           top_logprobs=3)
        content = r.choices[0].logprobs.content
        assert len(content) == r.usage.completion_tokens == 6
        assert "".join(t.token for t in content) == r.choices[0].message.content
        assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == t.logprob for t in content)  # greedy
        assert all(bytes(t.bytes).decode(errors="replace") == t.token for t in content)
        # the same numbers from the model run directly on the prompt and the answer's tokens
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
        model.eval()
        prompt = encode_chat(tokenizer, messages)[0].tolist()
        answer = [tokenizer.convert_tokens_to_ids(tokenizer.convert_ids_to_tokens(
            tokenizer.convert_tokens_to_ids(_byte_token(tokenizer, t.bytes)))) for t in content]
        ids = prompt + answer
        with torch.inference_mode():
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        direct = [float(lp[len(prompt) - 1 + i, tok]) for i, tok in enumerate(answer)]
        assert [t.logprob for t in content] == pytest.approx(direct, abs=1e-4)
        chunks = list(client.chat.completions.create(model=ref, messages=messages, max_tokens=6, temperature=0,
                                                     logprobs=True, top_logprobs=3, stream=True))
        streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
        assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]


def _byte_token(tokenizer, raw: list[int]) -> str:
    """The vocabulary entry whose bytes are ``raw`` (byte-level BPE spelling)."""
    from tuneterm.workers.serve.chat import byte_table

    table = byte_table()
    return "".join(table[b] for b in raw)


def test_responses_api_text_instructions_and_stream(client, server, adapter_dir):
    """Issue 25 item 6: /v1/responses through the openai client, streamed and not; others refused."""
    import openai

    ref = str(adapter_dir)
    r = client.responses.create(model=ref, input="hello there", instructions="Be brief.", max_output_tokens=6,
                                temperature=0)
    assert r.object == "response" and r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 6 and r.output_text
    same = client.chat.completions.create(model=ref, max_tokens=6, temperature=0, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
    assert r.output_text == same.choices[0].message.content
    events = list(client.responses.create(model=ref, input=[{"role": "user", "content": "hello there"}],
                                          instructions="Be brief.", max_output_tokens=6, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == r.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for kwargs, param in (({"previous_response_id": "resp_1"}, "previous_response_id"),
                          ({"text": {"format": {"type": "json_object"}}}, "text"),
                          ({"reasoning": {"effort": "low"}}, "reasoning")):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model=ref, input="hi", **kwargs)
        assert err.value.body["param"] == param


SCHEMA = {"type": "object", "properties": {"queue": {"enum": ["billing", "tech", "other"]}, "urgent": {"type": "boolean"}},
          "required": ["queue", "urgent"], "additionalProperties": False}


def test_json_schema_and_json_object_constrain_decoding(client, server, tiny_model_dir, adapter_dir):
    """Issue 25 item 4: every answer parses and validates, for the random tiny model that never
    writes JSON by itself; streamed and not; a schema that cannot compile is a 400."""
    import openai

    pytest.importorskip("xgrammar", reason="structured output needs the 'structured' extra")
    messages = [{"role": "user", "content": "Route: my card was charged twice"}]
    fmt = {"type": "json_schema", "json_schema": {"name": "route", "schema": SCHEMA, "strict": True}}
    for ref in (str(tiny_model_dir), str(adapter_dir)):
        plain = client.chat.completions.create(model=ref, messages=messages, max_tokens=40, temperature=0)
        with pytest.raises(ValueError):
            json.loads(plain.choices[0].message.content)
        for seed in (1, 2, 3):
            r = client.chat.completions.create(model=ref, messages=messages, max_tokens=40, temperature=1.0, seed=seed,
                                               response_format=fmt)
            answer = json.loads(r.choices[0].message.content)
            assert set(answer) == {"queue", "urgent"} and answer["queue"] in SCHEMA["properties"]["queue"]["enum"]
            assert isinstance(answer["urgent"], bool) and r.choices[0].finish_reason == "stop"
        chunks = list(client.chat.completions.create(model=ref, messages=messages, max_tokens=40, temperature=0,
                                                     response_format=fmt, stream=True))
        json.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    r = client.chat.completions.create(model=str(adapter_dir), messages=messages, max_tokens=60, temperature=0,
                                       response_format={"type": "json_object"})
    if r.choices[0].finish_reason == "stop":  # an object closed within max_tokens parses
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].message.content.startswith("{")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=str(adapter_dir), messages=messages, max_tokens=4, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}})
    assert err.value.body["param"] == "response_format" and "nonsense" in err.value.body["message"]


HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nYou may call these functions:\n{% for t in tools %}{{ t | tojson }}\n"
    "{% endfor %}Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"],
    "additionalProperties": False}}},
         {"type": "function", "function": {"name": "route", "parameters": {
             "type": "object", "properties": {"queue": {"enum": ["billing", "tech"]}}, "required": ["queue"],
             "additionalProperties": False}}}]


@pytest.fixture(scope="module")
def hermes_server(tiny_model_dir, tmp_path_factory):
    """The tiny model with a Hermes-style template that takes tools (as Qwen's does)."""
    from transformers import AutoTokenizer

    from tuneterm.workers.serve import make_server, serve_in_thread

    folder = tmp_path_factory.mktemp("hermes")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = HERMES_TEMPLATE
    tokenizer.save_pretrained(folder)
    srv = make_server([str(folder)], port=0)
    serve_in_thread(srv)
    yield srv, str(folder)
    srv.shutdown()
    srv.server_close()


def test_tools_required_and_named_come_back_as_tool_calls(hermes_server):
    """Issue 25 item 5: tool_choice required / a named function, enforced with the grammar engine,
    parsed into message.tool_calls (and a streamed delta) with finish_reason tool_calls."""
    from openai import OpenAI

    pytest.importorskip("xgrammar", reason="forced tool choice needs the 'structured' extra")
    srv, model = hermes_server
    client = OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "what is 2 plus 3?"}]
    r = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, tool_choice="required",
                                       max_tokens=60, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name in ("add", "route")
    args = json.loads(call.function.arguments)
    if call.function.name == "add":
        assert set(args) == {"a", "b"} and all(isinstance(v, int) for v in args.values())
    else:
        assert args["queue"] in ("billing", "tech")
    named = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, max_tokens=60, temperature=0,
                                           tool_choice={"type": "function", "function": {"name": "route"}})
    assert named.choices[0].message.tool_calls[0].function.name == "route"
    assert json.loads(named.choices[0].message.tool_calls[0].function.arguments)["queue"] in ("billing", "tech")
    chunks = list(client.chat.completions.create(model=model, messages=messages, tools=TOOLS, max_tokens=60,
                                                 temperature=0, stream=True,
                                                 tool_choice={"type": "function", "function": {"name": "route"}}))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas and deltas[0][0].function.name == "route"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the call goes back into the conversation through the template, with the tool's answer
    follow = client.chat.completions.create(model=model, max_tokens=3, temperature=0, tools=TOOLS, messages=[
        *messages, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "5"}])
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_tools_refused_without_template_support_or_tools(client, server, tiny_model_dir):
    import openai

    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as err:  # SmolLM2's template takes no tools
        client.chat.completions.create(model=str(tiny_model_dir), messages=messages, tools=TOOLS, max_tokens=2)
    assert err.value.body["param"] == "tools" and "template" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=str(tiny_model_dir), messages=messages, tool_choice="required",
                                       max_tokens=2)
    assert err.value.body["param"] == "tool_choice"


def test_tool_call_parsers_per_family():
    from tuneterm.workers.serve.tools import ToolPlan, parse_calls

    for family, text in (("hermes", 'Sure.<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'),
                         ("mistral", '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}]'),
                         ("llama3", '<|python_tag|>{"name": "add", "parameters": {"a": 1, "b": 2}}')):
        content, calls = parse_calls(ToolPlan(family, TOOLS, None), text)
        assert [c["function"]["name"] for c in calls] == ["add"], family
        assert json.loads(calls[0]["function"]["arguments"]) == {"a": 1, "b": 2}
        assert content == ("Sure." if family == "hermes" else None)
    content, calls = parse_calls(ToolPlan("hermes", TOOLS, None), '<tool_call>{"name": "nope"}</tool_call>')
    assert calls == [] and content.startswith("<tool_call>")  # an unknown function stays text


def test_the_docs_field_table_lists_every_field_in_its_column():
    """Issue 25 item 1: docs/serve.md's table names every field each endpoint knows, in the column of
    how it is treated (applied / no-op / refused unless neutral), so the table cannot drift from the code."""
    import re

    from tuneterm.workers.serve.completions import COMPLETION_FIELDS
    from tuneterm.workers.serve.responses import RESPONSE_FIELDS
    from tuneterm.workers.serve.schemas import CHAT_FIELDS

    text = (Path(__file__).resolve().parents[1] / "docs" / "serve.md").read_text()
    column = {"applied": 1, "no-op": 2, "default-only": 3, "refused": 3}
    for endpoint, fields in (("chat.completions", CHAT_FIELDS), ("completions", COMPLETION_FIELDS),
                             ("responses", RESPONSE_FIELDS)):
        rows = [line for line in text.splitlines() if line.startswith(f"| {endpoint} |")]
        assert len(rows) == 1, endpoint
        cells = [set(re.findall(r"[a-z_]+", re.sub(r"\([^)]*\)", "", cell)))  # names, not their notes
                 for cell in rows[0].strip().strip("|").split("|")]
        for name, how in fields.items():
            assert name in cells[column[how]], (endpoint, name, how)
            others = [i for i in (1, 2, 3) if i != column[how] and name in cells[i]]
            assert not others, (endpoint, name, how, others)


@pytest.mark.parametrize("arch,family", [("qwen2", "hermes"), ("llama", "llama3")])
def test_tool_calls_through_the_real_qwen_and_llama_templates(tiny_arch, arch, family):
    """Issue 25 item 5 with the families' own chat templates (Qwen2.5's and Llama 3.1's, as TRL ships
    them): the parser is chosen by the template, a forced call comes back as tool_calls, and the call
    and the tool's answer go back through the template for the next turn."""
    from openai import OpenAI

    from tuneterm.workers.serve import make_server, serve_in_thread
    from tuneterm.workers.serve.tools import family_of

    pytest.importorskip("xgrammar", reason="forced tool choice needs the 'structured' extra")
    folder = tiny_arch(arch)
    srv = make_server([str(folder)], port=0)
    serve_in_thread(srv)
    try:
        assert family_of(srv.variants[str(folder)].group.tokenizer) == family
        client = OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "Route: my card was charged twice"}]
        tools = [TOOLS[1]]
        r = client.chat.completions.create(model=str(folder), messages=messages, tools=tools, tool_choice="required",
                                           max_tokens=80, temperature=0)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        call = choice.message.tool_calls[0]
        assert call.function.name == "route" and json.loads(call.function.arguments)["queue"] in ("billing", "tech")
        follow = client.chat.completions.create(model=str(folder), max_tokens=3, temperature=0, tools=tools, messages=[
            *messages, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "routed"}])
        assert follow.usage.prompt_tokens > r.usage.prompt_tokens  # the call and its answer reached the template
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_lean_decode_loop_refuses_by_name_what_it_cannot_do():
    """A quantized artifact on the lean decode loop (one sequence, no batcher) has no log-probabilities,
    grammar constraint, tool calling or raw-prompt scoring: each is a 400 naming the field."""
    from types import SimpleNamespace

    from tuneterm.workers.serve.schemas import ApiError, refuse_engine

    lean = SimpleNamespace(model_id="q", group=SimpleNamespace(model=object(), lean_loop=True))
    for param in ("logprobs", "response_format", "tools", "model"):
        with pytest.raises(ApiError) as err:
            refuse_engine(lean, param, "this")
        assert err.value.status == 400 and err.value.param == param and "lean decode loop" in err.value.message
    plain = SimpleNamespace(model_id="p", group=SimpleNamespace(model=object(), lean_loop=False))
    for param in ("logprobs", "response_format", "tools", "model"):
        refuse_engine(plain, param, "this")  # torch with its batcher does them all
