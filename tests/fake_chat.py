"""A scripted OpenAI-compatible chat server on 127.0.0.1 for tests: real HTTP, real SSE streaming.

``FakeChat(reply)`` answers ``POST /v1/chat/completions`` (streamed or not) with
``reply(model, messages)``, one word per chunk; ``ref(model)`` is the ``http://...#MODEL``
reference the real client streams from. Every request body is kept in ``requests``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Reply = Callable[[str, list[dict]], str]


class FakeChat:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                fake.requests.append(body)
                text = fake.reply(body.get("model", ""), body.get("messages") or [])
                if not body.get("stream"):
                    data = json.dumps({"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                                       "choices": [{"index": 0, "finish_reason": "stop",
                                                    "message": {"role": "assistant", "content": text}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = text.split(" ")
                for i, w in enumerate(words):
                    piece = w if i == 0 else " " + w
                    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                end = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeChat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ref(self, model: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1#{model}"


def arena_reply(model: str, messages: list[dict]) -> str:
    """Answers for blind rounds, and a judge that likes answers naming Paris (8/10) over others (3/10)."""
    last = messages[-1]["content"] if messages else ""
    if model == "judge":
        answer = last.split("Model answer:", 1)[-1]
        return "8" if "Paris" in answer else "3"
    return {"good": "The capital of France is Paris.", "weak": "I am not sure, maybe Lyon."}.get(
        model, f"{model} says hello")


if __name__ == "__main__":  # `python tests/fake_chat.py PORT_FILE`: serve arena_reply until killed
    import sys
    import time

    with FakeChat(arena_reply) as fake:
        with open(sys.argv[1], "w") as fh:
            fh.write(str(fake.server.server_address[1]))
        while True:
            time.sleep(3600)
