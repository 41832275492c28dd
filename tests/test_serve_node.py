"""OpenAI's Node SDK against `tuneterm serve` (issue 25 item 7). Needs `node` and the `openai`
npm package in tests/node (`cd tests/node && npm i --no-save openai`); skipped without them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"

pytest.importorskip("xgrammar", reason="structured output and forced tool calls need the 'structured' extra")

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(not (NODE_DIR / "node_modules" / "openai").is_dir(),
                       reason="the openai npm package is not installed in tests/node"),
]


def test_node_sdk_covers_the_api(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_serve_api import HERMES_TEMPLATE
    from tuneterm.workers.serve import make_server, serve_in_thread

    torch.manual_seed(1)
    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(adapter)
    tools_model = tmp_path / "hermes"  # the tiny model with a template that takes tools, as Qwen's does
    shutil.copytree(tiny_model_dir, tools_model)
    tokenizer = AutoTokenizer.from_pretrained(tools_model)
    tokenizer.chat_template = HERMES_TEMPLATE
    tokenizer.save_pretrained(tools_model)
    srv = make_server([str(tiny_model_dir), str(adapter), str(tools_model)], port=0)
    serve_in_thread(srv)
    try:
        proc = subprocess.run(["node", str(NODE_DIR / "serve_client.mjs"), srv.url, str(tiny_model_dir), str(adapter),
                               str(tools_model)],
                              capture_output=True, text=True, timeout=300, cwd=NODE_DIR)
    finally:
        srv.shutdown()
        srv.server_close()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["models"] == [str(tiny_model_dir), str(adapter), str(tools_model)]
    assert out["plain"] and out["streamed"] == out["plain"] and out["stream_usage"] == 6
    assert len(out["logprobs"]) == 4 and all(n == 2 and lp <= 0 for _, lp, n in out["logprobs"])
    assert json.loads(out["json_schema"]).keys() == {"ok"}
    assert out["completion_logprobs"][0] is None and all(v <= 0 for v in out["completion_logprobs"][1:])
    assert out["streamed_logprobs"] == out["logprobs"]
    assert out["responses"] == out["plain"] and out["responses_streamed"] == out["plain"]
    assert out["responses_events"][0] == "response.created" and out["responses_events"][-1] in (
        "response.completed", "response.incomplete")
    assert out["responses_refused"] == {"status": 400, "param": "previous_response_id"}
    call = out["tool_call"]  # tool_choice "required", enforced by the grammar engine
    assert call["finish"] == "tool_calls" and call["content"] is None and call["name"] == "route"
    args = json.loads(call["arguments"])
    assert set(args) == {"queue", "urgent"} and args["queue"] in ("billing", "tech") and isinstance(args["urgent"], bool)
    assert out["streamed_tool_call"] == {"names": ["route"], "finish": "tool_calls"}
    assert out["tools"] == {"status": 400, "param": "tools"}
    assert out["unknown"] == {"status": 400, "param": "frobnicate"}
    assert out["missing"]["status"] == 404
