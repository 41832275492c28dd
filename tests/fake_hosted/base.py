"""A small threaded HTTP server on 127.0.0.1 that each provider fake fills with its own routes.

Real HTTP and JSON; bearer-key auth; multipart uploads parsed as a real server would. Time is
compressed as in fake_openai: each GET of a job moves it one stage on. Faults: ``rate_limit`` (429 +
Retry-After), ``create_5xx_after`` (the job is stored, then 502), ``fail_next`` (the next job fails
validation), ``estimate_scale`` (the server's own estimate is off by that factor).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import random
import string
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

VALID_KEY = "fake-hosted-key-0123456789"


@dataclass
class Faults:
    rate_limit: int = 0
    retry_after: int = 3
    create_5xx_after: int = 0
    fail_next: bool = False
    estimate_scale: float = 1.0


def rid(prefix: str, n: int = 12) -> str:
    return prefix + "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


def count_tokens(content: bytes, tokenizer_model: str, provider: str) -> tuple[int, int]:
    """(examples, tokens) of an uploaded JSONL file with the model's own tokenizer, as the server bills."""
    from tuneterm.core.prices import load_prices
    from tuneterm.core.providers.tokens import counter, tokenizer_key

    table = load_prices(None, provider)
    row = table.find(tokenizer_model) or table.models[0]
    c = counter(tokenizer_key(row, provider))
    rows = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
    return len(rows), sum(c.example(r) for r in rows)


class FakeREST:
    prefix = "/v1"

    def __init__(self, faults: Faults | None = None, key: str = VALID_KEY) -> None:
        self.faults = faults or Faults()
        self.key = key
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: list[str] = []
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.chats: list[dict] = []
        self.clock = int(time.time())
        self._server: ThreadingHTTPServer | None = None

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def start(self):
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    def job_count(self) -> int:
        return len(self.jobs)

    # filled in per provider: (status, body)
    def route(self, verb: str, path: str, query: dict, body: bytes, form: dict | None) -> tuple[int, Any]:
        raise NotImplementedError


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeREST
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _form(self, body: bytes) -> dict | None:
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            return None
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        fields: dict[str, Any] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload) if part.get_filename() else payload.decode()
        return fields

    def _chat(self, request: dict) -> None:
        """Stream a fixed answer as server-sent events, as OpenAI-compatible servers do."""
        fake = self.server_fake
        fake.chats.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for piece in ("identity", "-team"):
            chunk = {"id": "chat-1", "object": "chat.completion.chunk", "created": fake.clock, "model": request["model"],
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {"id": "chat-1", "object": "chat.completion.chunk", "created": fake.clock, "model": request["model"],
                "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()
        self.close_connection = True

    def _dispatch(self, verb: str) -> None:
        fake = self.server_fake
        url = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        auth = self.headers.get("Authorization", "")
        fake.requests.append((verb, url.path))
        fake.auth_headers.append(auth)
        if auth != f"Bearer {fake.key}":
            return self._send(401, {"error": {"message": "Invalid API key provided", "type": "invalid_request_error"}})
        if fake.faults.rate_limit > 0:
            fake.faults.rate_limit -= 1
            return self._send(429, {"error": {"message": "rate limit exceeded"}},
                              {"Retry-After": str(fake.faults.retry_after)})
        path = url.path.removeprefix(fake.prefix)
        if verb == "POST" and path == "/chat/completions":  # the OpenAI-compatible inference endpoint
            return self._chat(json.loads(body))
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        with fake.lock:
            status, out = fake.route(verb, path, query, body, self._form(body))
        self._send(status, out)
