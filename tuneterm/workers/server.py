"""An OpenAI-compatible HTTP server for local models (``tuneterm serve``).

    GET  /v1/models                 the model ids (the references as given)
    GET  /v1/models/{id}
    POST /v1/chat/completions       streaming (server-sent events) or not

Built on the standard library's ``ThreadingHTTPServer``: one thread per connection, HTTP/1.1
keep-alive, streams sent with chunked transfer encoding. Generation goes through
:mod:`tuneterm.workers.variants`: requests to the variants of one base model (the base, its
LoRA adapters, few-shot references over them) are decoded together in one batch
(:mod:`tuneterm.workers.batcher`), each with its own stream, settings and end. Errors use OpenAI's JSON shape
``{"error": {"message", "type", "param", "code"}}`` with the matching status code.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from tuneterm.core.errors import TunetermError, UsageError
from tuneterm.core.generation import GenerationParams, GenerationStats
from tuneterm.workers.variants import ServedModel, load_variants

DEFAULT_MAX_TOKENS = 512
MAX_BODY = 16 * 1024 * 1024
ROLES = ("system", "developer", "user", "assistant", "tool")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass
class ChatRequest:
    variant: ServedModel
    messages: list[dict]
    params: GenerationParams
    stream: bool
    include_usage: bool


def parse_request(body: dict, variants: dict[str, ServedModel]) -> ChatRequest:
    """Validate a chat.completions body; raises :class:`ApiError` naming the bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    if model not in variants:
        raise ApiError(404, f"The model '{model}' does not exist; this server has: {', '.join(variants)}",
                       param="model", code="model_not_found")
    messages = _messages(body.get("messages"))
    n = body.get("n", 1)
    if n not in (1, None):
        raise ApiError(400, "only n=1 is supported", param="n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "stop must be a string or a list of at most 4 strings", param="stop")
    temperature = body.get("temperature", 1.0)
    top_p = body.get("top_p", 1.0)
    seed = body.get("seed")
    for name, value, kinds in (("max_tokens", max_tokens, int), ("temperature", temperature, (int, float)),
                               ("top_p", top_p, (int, float)), ("seed", seed, (int, type(None)))):
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ApiError(400, f"{name} has the wrong type: {value!r}", param=name)
    if not 0 <= temperature <= 2:
        raise ApiError(400, f"temperature must be between 0 and 2, got {temperature}", param="temperature")
    if not 0 < top_p <= 1:
        raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p")
    if max_tokens < 1:
        raise ApiError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    params = GenerationParams(max_new_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
                              seed=seed, stop=stop)
    stream = bool(body.get("stream", False))
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    return ChatRequest(variants[model], messages, params, stream, bool(opts.get("include_usage")))


def _messages(raw: Any) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty array", param="messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}", param=f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string or text parts", param=f"messages[{i}].content")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": content})
    return out


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], variants: dict[str, ServedModel], api_key: str | None = None,
                 quiet: bool = True) -> None:
        self.variants = variants
        self.api_key = api_key
        self.quiet = quiet
        self.created = int(time.time())
        super().__init__(address, ChatHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tuneterm-serve"
    disable_nagle_algorithm = True
    server: ChatServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if not self.server.quiet:
            super().log_message(format, *args)

    # --- routing ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path in ("/health", "/v1/health"):
                return self._json(200, {"status": "ok"})
            self._check_auth()
            if path == "/v1/models" and method == "GET":
                return self._json(200, {"object": "list", "data": [self._model_card(v) for v in self.server.variants.values()]})
            if path.startswith("/v1/models/") and method == "GET":
                model_id = unquote(path[len("/v1/models/"):])
                if model_id not in self.server.variants:
                    raise ApiError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
                return self._json(200, self._model_card(self.server.variants[model_id]))
            if path == "/v1/chat/completions":
                if method != "POST":
                    raise ApiError(405, f"{method} is not allowed on {path}; use POST")
                return self._chat()
            raise ApiError(404, f"unknown endpoint {method} {path}", code="unknown_url")
        except ApiError as err:
            self._drain_body()
            self._json(err.status, err.body())
        except TunetermError as err:
            self._json(400 if err.exit_code in (2, 3) else 500,
                       ApiError(0, err.render(), "server_error" if err.exit_code not in (2, 3) else "invalid_request_error").body())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _check_auth(self) -> None:
        key = self.server.api_key
        if not key:
            return
        given = self.headers.get("Authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ApiError(401, "Incorrect API key provided", code="invalid_api_key")

    def _model_card(self, v: ServedModel) -> dict:
        return {
            "id": v.model_id, "object": "model", "created": self.server.created, "owned_by": "tuneterm",
            "tuneterm": {"adapter": v.adapter is not None, "base": v.group.key,
                         "fewshot": {"k": v.fewshot.k, "pool": v.fewshot.pool, "strategy": v.fewshot.strategy}
                         if v.fewshot is not None else None,
                         "memory_bytes": v.group.memory_bytes(), "shared_with": [
                             o.model_id for o in self.server.variants.values() if o.group is v.group and o is not v]},
        }

    # --- I/O -------------------------------------------------------------------------------

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "a Content-Length header is required")
        try:
            n = int(length)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if n > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"request body too large ({n} bytes)")
        raw = self.rfile.read(n)
        self._body_read = True
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None

    def _drain_body(self) -> None:
        if getattr(self, "_body_read", False):
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        if 0 < n <= MAX_BODY:
            self.rfile.read(n)
        elif n:
            self.close_connection = True

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _event(self, obj: dict | str) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        self._chunk(f"data: {payload}\n\n".encode())

    # --- chat ------------------------------------------------------------------------------

    def _chat(self) -> None:
        req = parse_request(self._read_json(), self.server.variants)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        stats = GenerationStats()
        cancel = threading.Event()
        pieces = req.variant.stream(req.messages, req.params, stats, cancel)
        if not req.stream:
            text = "".join(pieces)
            return self._json(200, {
                "id": completion_id, "object": "chat.completion", "created": created, "model": req.variant.model_id,
                "system_fingerprint": "tuneterm",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "logprobs": None, "finish_reason": _finish(stats)}],
                "usage": _usage(stats), "tuneterm": stats.to_dict(),
            })
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(delta: dict, finish: str | None = None, usage: Any = None, choices: bool = True) -> dict:
            obj = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                   "model": req.variant.model_id, "system_fingerprint": "tuneterm",
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else []}
            if req.include_usage:
                obj["usage"] = usage
            return obj

        try:
            self._event(chunk({"role": "assistant", "content": ""}))
            try:
                for piece in pieces:
                    self._event(chunk({"content": piece}))
            except TunetermError as err:  # generation failed after the headers went out
                self._event({"error": ApiError(500, err.render(), "server_error").body()["error"]})
                self._chunk(b"")
                return
            self._event(chunk({}, _finish(stats)))
            if req.include_usage:
                self._event(chunk({}, usage={**_usage(stats), "tuneterm": stats.to_dict()}, choices=False))
            self._event("[DONE]")
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            cancel.set()  # the client left: stop generating at the next step
            self.close_connection = True
        finally:
            pieces.close()


def _finish(stats: GenerationStats) -> str:
    return "length" if stats.finish_reason == "length" else "stop"


def _usage(stats: GenerationStats) -> dict:
    prompt = stats.prompt_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": stats.completion_tokens,
            "total_tokens": prompt + stats.completion_tokens}


def make_server(refs: list[str], host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                dtype: str | None = None, device: str | None = None, quiet: bool = True,
                variants: dict[str, ServedModel] | None = None) -> ChatServer:
    """Load the models and bind (not yet serving). Refuses a non-loopback host without a key."""
    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"serving on {host} needs an API key",
            [("host", host)],
            "pass --api-key KEY (clients send it as 'Authorization: Bearer KEY'), or bind to 127.0.0.1",
        )
    if variants is None:
        variants = load_variants(refs, dtype=dtype, device=device)
    try:
        return ChatServer((host, port), variants, api_key=api_key, quiet=quiet)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}", [("problem", exc.strerror or str(exc))],
                         "pick another --port (0 picks a free one)") from exc


def serve_in_thread(server: ChatServer) -> threading.Thread:
    """Serve ``server`` from a daemon thread (tests, benchmarks, `chat --compare`)."""
    thread = threading.Thread(target=server.serve_forever, name="tuneterm-serve", daemon=True)
    thread.start()
    return thread
