"""Remote variants: an OpenAI-compatible server on 127.0.0.1 answers generate tasks; choice
tasks are reported as skipped; the report compares the remote variant like any other."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuneterm.core.evals.spec import load_task
from tuneterm.core.evals.variants import parse_variants


class _Handler(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append(body)
        text = body["messages"][-1]["content"]
        answer = "payments-ops\nthanks" if "invoice" in text else "logistics"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for delta, finish in (({"role": "assistant", "content": answer}, None), ({}, "stop")):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1#fake"
    srv.shutdown()


def test_remote_variant_generate_and_cache(tmp_path, server):
    from tuneterm.workers.evals.runner import RunOptions, run_eval

    rows = [{"id": f"t{i}", "messages": [{"role": "user", "content": f"ticket {i} about an invoice" if i % 2 else f"ticket {i}"},
                                         {"role": "assistant", "content": "payments-ops" if i % 2 else "identity-team"}]}
            for i in range(6)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text("name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\n"
                                     "generation: {max_new_tokens: 8, stop: [\"\\n\"]}\nmetrics: [exact_match]\n")
    (tmp_path / "c.yaml").write_text("name: c\nversion: 1\ntype: choice\ndata: {path: d.jsonl}\nchoices: [a, b]\n"
                                     "target: '0'\n")
    tasks = [load_task(tmp_path / "t.yaml"), load_task(tmp_path / "c.yaml")]
    report = run_eval(tasks, parse_variants([server]), RunOptions(progress=False, out_dir=tmp_path / "out"))
    res = report["tasks"]["t"]["variants"][server]
    assert res["n"] == 6 and res["metrics"]["exact_match"]["value"] == 0.5  # stop string cut "\nthanks"
    assert "log-probabilities" in report["tasks"]["c"]["variants"][server]["skipped"]
    assert _Handler.seen[0]["temperature"] == 0 and _Handler.seen[0]["max_tokens"] == 8
    calls = len(_Handler.seen)
    again = run_eval(tasks[:1], parse_variants([server]), RunOptions(progress=False))
    assert len(_Handler.seen) == calls  # all six answers came from the cache
    assert again["tasks"]["t"]["variants"][server]["speed"]["cached"] == 6
