"""A JSON-schema constraint for `tuneterm eval` generate tasks (``generation.json_schema``) and for
`tuneterm chat --json-schema FILE`: local models decode through serve's grammar path (xgrammar), remote
ones get ``response_format`` json_schema. The random tiny model never writes JSON by itself, so every
answer that parses shows the constraint at work."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuneterm.core.errors import InputError
from tuneterm.core.evals.spec import load_task
from tuneterm.core.evals.variants import parse_variants

SCHEMA = {"type": "object", "properties": {"queue": {"enum": ["billing", "tech"]}, "urgent": {"type": "boolean"}},
          "required": ["queue", "urgent"], "additionalProperties": False}


def _task(tmp_path, schema_line: str, n: int = 6):
    rows = [{"q": f"ticket {i}: my card was charged twice", "a": '{"queue": "billing", "urgent": true}'} for i in range(n)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "t.yaml").write_text("name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\n"
                                     "prompt: {template: '{{q}}'}\ntarget: '{{a}}'\n"
                                     f"generation: {{max_new_tokens: 40{schema_line}}}\n"
                                     "metrics: [json_validity]\n")
    return tmp_path / "t.yaml"


def test_spec_field_is_read_and_checked(tmp_path):
    spec = load_task(_task(tmp_path, ", json_schema: schema.json"))
    assert spec.generation.json_schema == SCHEMA  # the file's content: it is part of the cache key
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError) as exc:
        load_task(_task(tmp_path, ", json_schema: bad.json"))
    assert dict(exc.value.facts)["field"] == "generation.json_schema" and "no JSON object" in exc.value.render()
    (tmp_path / "c.yaml").write_text("name: c\nversion: 1\ntype: choice\ndata: {path: d.jsonl}\nchoices: [a, b]\n"
                                     "target: '0'\ngeneration: {json_schema: schema.json}\n")
    with pytest.raises(InputError, match="only generate tasks"):
        load_task(tmp_path / "c.yaml")


def test_local_eval_answers_follow_the_schema(tmp_path, tiny_model_dir):
    pytest.importorskip("xgrammar", reason="the JSON-schema constraint needs the 'structured' extra")
    from tuneterm.workers.evals.runner import RunOptions, run_eval

    ref = str(tiny_model_dir)
    opts = dict(progress=False, use_cache=False, batch_size=4)
    plain = run_eval([load_task(_task(tmp_path, ""))], parse_variants([ref]), RunOptions(out_dir=tmp_path / "a", **opts))
    assert plain["tasks"]["t"]["variants"][ref]["metrics"]["json_validity"]["value"] == 0.0
    run_eval([load_task(_task(tmp_path, ", json_schema: schema.json, temperature: 1.0, seed: 3"))],
             parse_variants([ref]), RunOptions(out_dir=tmp_path / "b", **opts))
    samples = [json.loads(line) for line in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6
    for s in samples:  # batched rows of different lengths, sampled: every one parses and validates
        answer = json.loads(s["output"])
        assert set(answer) == {"queue", "urgent"} and answer["queue"] in ("billing", "tech")
        assert isinstance(answer["urgent"], bool)


def test_chat_json_schema_local_and_remote(tmp_path, tiny_model_dir, cli):
    pytest.importorskip("xgrammar", reason="the JSON-schema constraint needs the 'structured' extra")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    code, out, err = cli("chat", str(tiny_model_dir), "route: card charged twice", "--json-schema", str(schema),
                         "-n", "40", "--json")
    assert code == 0, err
    answer = json.loads(json.loads(out)["text"])
    assert set(answer) == {"queue", "urgent"}

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for delta, finish in (({"role": "assistant", "content": '{"queue": "tech", "urgent": false}'}, None),
                                  ({}, "stop")):
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        code, out, err = cli("chat", f"http://127.0.0.1:{srv.server_address[1]}/v1#m", "hi", "--json-schema", str(schema))
    finally:
        srv.shutdown()
    assert code == 0, err
    assert seen[0]["response_format"] == {"type": "json_schema",
                                          "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    code, out, err = cli("chat", "--compare", "a,b", "hi", "--json-schema", str(schema))
    assert code == 2 and "--compare" in err
    (tmp_path / "not.json").write_text("{nope")
    code, out, err = cli("chat", str(tiny_model_dir), "hi", "--json-schema", str(tmp_path / "not.json"))
    assert code == 3 and "not JSON" in err
    (tmp_path / "bad.json").write_text(json.dumps({"type": "nonsense"}))  # JSON, but no schema xgrammar compiles
    code, out, err = cli("chat", str(tiny_model_dir), "hi", "--json-schema", str(tmp_path / "bad.json"))
    assert code == 3 and "cannot be compiled" in err and "--json-schema" in err and "nonsense" in err
