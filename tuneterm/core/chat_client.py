"""Streaming chat against OpenAI-compatible servers, and local `tuneterm serve` children.

``stream_chat(ref, messages, params, stats)`` yields text pieces for ``openai:MODEL`` and
``http://HOST:PORT/v1#MODEL`` references through the official ``openai`` SDK (imported when
first used) and fills :class:`ChatStats` (time to first token, tokens/s, token count). A
few-shot reference over a remote model (``fewshot:K:POOL@openai:MODEL``) puts the pool's
examples before the conversation here (:func:`with_fewshot`); ``tuneterm serve`` does the same
for local ones.

:class:`LocalServers` starts ``tuneterm serve`` children on free 127.0.0.1 ports for local
references (one child per call to :meth:`LocalServers.ensure`, holding all the references it
was given, so a base and its adapters share weights), waits until ``/v1/models`` answers, and
stops them on :meth:`LocalServers.stop_all`. Torch-free.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tuneterm.core import modelref
from tuneterm.core.errors import InputError, NotFoundError, OpenAIError, RuntimeFailure, UsageError
from tuneterm.core.generation import GenerationParams, GenerationStats, inference_thread_env


ChatStats = GenerationStats  # one definition of an answer's figures (tuneterm.core.generation)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str
    hosted: bool  # OpenAI itself (use max_completion_tokens)
    query: dict | None = None  # Azure: api-version
    headers: dict | None = None  # Azure: api-key


def endpoint(ref: str) -> Endpoint:
    """Where a remote reference lives: base URL, model name and the key to send."""
    parsed = modelref.parse(ref)
    if parsed.kind == "openai":
        key = os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise UsageError("OPENAI_API_KEY is not set", [("reference", ref)],
                             "export OPENAI_API_KEY=sk-... (it is read from the environment, never stored)")
        base = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return Endpoint(base, parsed.target, key, hosted=True)
    if parsed.kind == "hosted":
        from tuneterm.core.providers import get

        p = get(parsed.model_name)
        key = p.api_key()
        if p.name == "azure":  # a deployment of a fine-tune: /openai/deployments/NAME/chat/completions
            base = f"{p.base_url().rstrip('/')}/openai/deployments/{parsed.target}"
            version = os.environ.get("OPENAI_API_VERSION") or "2025-04-01-preview"
            return Endpoint(base, parsed.target, key, hosted=True, query={"api-version": version},
                            headers={"api-key": key})
        return Endpoint(p.chat_url(), parsed.target, key, hosted=False)
    if parsed.kind == "http":
        key = os.environ.get("TUNETERM_API_KEY") or "none"  # many local servers ignore the key
        model = parsed.model_name or _only_model(parsed.target, key)
        return Endpoint(parsed.target, model, key, hosted=False)
    raise UsageError(f"{ref} is a local model, not a server", [("reference", ref)],
                     "local models are served through `tuneterm serve` (LocalServers in the TUI)")


def _only_model(base_url: str, key: str) -> str:
    ids = list_models(base_url, key)
    if len(ids) != 1:
        raise InputError("name the model after '#' in the URL", [("server", base_url), ("models", ", ".join(ids) or "none")],
                         f"for example {base_url}#{ids[0] if ids else 'MODEL'}")
    return ids[0]


def list_models(base_url: str, api_key: str | None = None, timeout: float = 5.0) -> list[str]:
    """The ids ``GET /v1/models`` lists (plain urllib: fast, and usable as a readiness probe)."""
    req = urllib.request.Request(base_url.rstrip("/") + "/models")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise OpenAIError(f"the server answered {exc.code} to GET /models", [("server", base_url)]) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise OpenAIError("cannot reach the server", [("server", base_url), ("problem", str(exc))],
                          "is it running? for local models use `tuneterm serve MODEL --port P`") from exc
    return [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]


def model_card(ref: str, timeout: float = 5.0) -> dict:
    """``GET /v1/models/{id}`` for an ``http://`` reference (tuneterm serve adds memory and
    sharing facts under ``"tuneterm"``); ``{}`` for hosted OpenAI models."""
    from urllib.parse import quote

    parsed = modelref.parse(ref)
    if parsed.kind != "http":
        return {}
    ep = endpoint(ref)
    req = urllib.request.Request(f"{ep.base_url}/models/{quote(ep.model, safe='/:')}")
    req.add_header("Authorization", f"Bearer {ep.api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise OpenAIError("cannot read the model card", [("reference", ref), ("problem", str(exc))]) from exc


def is_remote(ref: str) -> bool:
    """Streams from a server as it is (openai:, http://, or a few-shot reference over one)."""
    parsed = modelref.parse(ref)
    if parsed.kind == "fewshot":
        return modelref.parse(parsed.target).is_remote
    return parsed.is_remote


def with_fewshot(spec: Any, messages: list[dict], pool: list | None = None) -> list[dict]:
    """``messages`` with a few-shot spec's examples before the conversation.

    The system prompt stays first (the conversation's own, else the pool's); the examples are
    chosen for the last user message (``similar``) or by the spec's seed; earlier turns of the
    conversation keep their order after the examples.
    """
    from tuneterm.core import fewshot

    system = next((m["content"] for m in messages if m.get("role") == "system" and m.get("content")), None)
    prompt = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    pool = pool if pool is not None else fewshot.load_pool(spec.pool)
    head = fewshot.build_messages(prompt, fewshot.select(pool, spec.k, prompt, spec.strategy, spec.seed), system)
    return head[:-1] + [m for m in messages if m.get("role") != "system"]


def request_body(ep: Endpoint, messages: list[dict], params: dict) -> dict:
    """The chat.completions arguments for these generation settings."""
    body: dict[str, Any] = {"model": ep.model, "messages": messages, "stream": True,
                            "stream_options": {"include_usage": True}}
    temperature = params.get("temperature", 0.0)
    body["temperature"] = temperature
    if temperature and params.get("top_p") not in (None, 1.0):
        body["top_p"] = params["top_p"]
    max_tokens = params.get("max_tokens") or params.get("max_new_tokens")
    if max_tokens:
        body["max_completion_tokens" if ep.hosted else "max_tokens"] = int(max_tokens)
    if params.get("seed") is not None:
        body["seed"] = int(params["seed"])
    if params.get("stop"):
        body["stop"] = params["stop"]
    if params.get("json_schema"):  # structured output, as OpenAI's API, vLLM and `tuneterm serve` take it
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": params["json_schema"], "strict": True}}
    return body


def stream_chat(
    ref: str,
    messages: list[dict],
    params: "dict | GenerationParams | None" = None,
    stats: ChatStats | None = None,
    cancel: threading.Event | None = None,
    timeout: float = 600.0,
) -> Iterator[str]:
    """Yield the answer's text pieces as they stream; fills ``stats``. ``params``: a
    :class:`GenerationParams` or a dict (temperature, top_p, max_tokens, seed, stop). Setting
    ``cancel`` closes the stream at the next piece."""
    from openai import OpenAI  # deferred: the SDK costs ~0.3 s to import

    params = params.to_dict() if isinstance(params, GenerationParams) else (params or {})
    stats = stats if stats is not None else ChatStats()
    stats.model = ref
    parsed = modelref.parse(ref)
    if parsed.kind == "fewshot":
        from tuneterm.core import fewshot

        messages = with_fewshot(fewshot.parse_spec(ref), messages)
        ref = parsed.target
    ep = endpoint(ref)
    client = OpenAI(base_url=ep.base_url, api_key=ep.api_key, timeout=timeout, max_retries=0,
                    default_query=ep.query, default_headers=ep.headers)
    started = time.perf_counter()
    counted = 0
    done = threading.Event()
    try:
        stream = client.chat.completions.create(**request_body(ep, messages, params))
        if cancel is not None:
            # A stream waiting for its next token (a busy server) would see `cancel` only when the
            # token comes; closing the response from here ends the read at once.
            def watch() -> None:
                while not done.wait(0.05):
                    if cancel.is_set():
                        _abort(stream.response)
                        return

            threading.Thread(target=watch, name="tuneterm-chat-cancel", daemon=True).start()
        try:
            for chunk in stream:
                if chunk.usage is not None:
                    stats.prompt_tokens = chunk.usage.prompt_tokens
                    stats.completion_tokens = chunk.usage.completion_tokens
                    stats.tokens_exact = True
                for choice in chunk.choices or []:
                    if choice.finish_reason:
                        stats.finish_reason = choice.finish_reason
                    piece = choice.delta.content if choice.delta else None
                    if piece:
                        if stats.ttft_s is None:
                            stats.ttft_s = time.perf_counter() - started
                        counted += 1
                        if not stats.tokens_exact:
                            stats.completion_tokens = counted
                        stats.total_s = time.perf_counter() - started
                        yield piece
                if cancel is not None and cancel.is_set():
                    stats.finish_reason = "cancelled"
                    break
        finally:
            done.set()
            try:
                stream.close()
            except Exception:
                pass
    except Exception as exc:
        if cancel is not None and cancel.is_set():  # the read was cut short on purpose
            stats.finish_reason = "cancelled"
            stats.total_s = time.perf_counter() - started
            return
        _raise_clear(exc, ref, ep)
    if cancel is not None and cancel.is_set():
        stats.finish_reason = "cancelled"
    stats.total_s = time.perf_counter() - started


def _abort(response: Any) -> None:
    """Cut an HTTP response short from another thread: shutting the socket down wakes the
    reader blocked in recv() (closing the response alone does not)."""
    try:
        net = response.extensions.get("network_stream")
        sock = net.get_extra_info("socket") if net is not None else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:
        pass


def _raise_clear(exc: Exception, ref: str, ep: Endpoint) -> None:
    import openai

    # the SDK's HTTP layer (httpx or httpx2, by version) raises its own transport errors mid-stream
    if isinstance(exc, (openai.APIConnectionError, OSError)) or type(exc).__module__.startswith("httpx"):
        raise OpenAIError("cannot reach the model server", [("reference", ref), ("server", ep.base_url),
                          ("problem", str(exc))], "is the server running? check the URL and port") from exc
    try:
        raise exc
    except openai.AuthenticationError as exc:
        raise OpenAIError("the server refused the API key", [("reference", ref), ("problem", _api_message(exc))],
                          "set OPENAI_API_KEY (openai:) or TUNETERM_API_KEY (http:// servers)") from exc
    except openai.NotFoundError as exc:
        raise NotFoundError(f"the server has no model {ep.model!r}", [("reference", ref), ("problem", _api_message(exc))],
                            "GET /v1/models lists what it serves") from exc
    except openai.BadRequestError as exc:
        raise InputError("the server rejected the request", [("reference", ref), ("problem", _api_message(exc))]) from exc
    except openai.APIError as exc:
        raise OpenAIError("the model server failed", [("reference", ref), ("problem", _api_message(exc))]) from exc


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc)


def chat_once(ref: str, messages: list[dict], params: dict | None = None) -> tuple[str, ChatStats]:
    stats = ChatStats()
    text = "".join(stream_chat(ref, messages, params, stats))
    return text, stats


# --- local `tuneterm serve` children -----------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerChild:
    refs: list[str]
    port: int
    process: subprocess.Popen
    log_path: Path
    ready: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def url_ref(self, ref: str) -> str:
        return f"{self.base_url}#{ref}"


class LocalServers:
    """Start and stop ``tuneterm serve`` children for local model references."""

    def __init__(self, log_dir: Path | None = None, python: str | None = None) -> None:
        self.children: list[ServerChild] = []
        self.log_dir = log_dir
        self.python = python or sys.executable
        self._lock = threading.Lock()
        import atexit

        atexit.register(self.stop_all)  # never leave a child behind, even if the TUI forgets

    def served(self, ref: str) -> str | None:
        """The ``http://…#ref`` reference if a ready child serves ``ref``."""
        child = self._child_for(ref)
        return child.url_ref(ref) if child is not None and child.ready.is_set() else None

    def _child_for(self, ref: str) -> ServerChild | None:
        for child in self.children:
            if ref in child.refs and child.process.poll() is None and child.failure is None:
                return child
        return None

    def ensure(self, refs: list[str], timeout: float = 300.0, cancel: threading.Event | None = None) -> dict[str, str]:
        """An ``http://…#ref`` reference for each local ref. The refs no child serves yet get one
        new child (so a base and its adapters share weights); a ref whose child is still loading
        waits for it. Blocking (loads models): call it from a worker thread."""
        with self._lock:
            waiting: dict[str, ServerChild] = {}
            missing = []
            for r in refs:
                child = self._child_for(r)
                if child is None:
                    missing.append(r)
                else:
                    waiting[r] = child
            started = self._start(missing) if missing else None
            if started is not None:
                self.children.append(started)  # listed at once, so stop_all() can stop it while it loads
                waiting.update({r: started for r in missing})
        if started is not None:
            try:
                self._wait_ready(started, timeout, cancel)
            except BaseException as exc:
                started.failure = exc
                started.ready.set()
                self._stop(started)
                raise
            started.ready.set()
        out = {}
        for r, child in waiting.items():
            deadline = time.monotonic() + timeout
            while not child.ready.wait(0.1):
                if (cancel is not None and cancel.is_set()) or time.monotonic() > deadline:
                    raise RuntimeFailure("the model server is still starting", [("models", ", ".join(child.refs))])
            if child.failure is not None:
                raise RuntimeFailure("the model server failed to start", [("models", ", ".join(child.refs)),
                                     ("log", str(child.log_path))], "see the log")
            out[r] = child.url_ref(r)
        return out

    def _start(self, refs: list[str]) -> ServerChild:
        if self.log_dir is None:
            from tuneterm.core.workspace import workspace

            self.log_dir = workspace().root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log_path = self.log_dir / f"serve-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "tuneterm", "serve", *refs, "--host", "127.0.0.1", "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**inference_thread_env(), "TUNETERM_API_KEY": ""},
            )
        return ServerChild(list(refs), port, proc, log_path)

    def _wait_ready(self, child: ServerChild, timeout: float, cancel: threading.Event | None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                raise RuntimeFailure("cancelled while the model server was starting", [("models", ", ".join(child.refs))])
            code = child.process.poll()
            if code is not None:
                tail = child.log_path.read_text(errors="replace").strip().splitlines()[-8:]
                raise RuntimeFailure(
                    "the model server exited while loading",
                    [("models", ", ".join(child.refs)), ("exit code", str(code)), ("log", str(child.log_path))]
                    + [("", line) for line in tail],
                    "run `tuneterm serve " + " ".join(child.refs) + "` to see the error",
                )
            try:
                if set(child.refs) <= set(list_models(child.base_url, timeout=1.0)):
                    return
            except OpenAIError:
                pass
            time.sleep(0.1)
        raise RuntimeFailure("the model server did not become ready in time",
                             [("models", ", ".join(child.refs)), ("waited", f"{timeout:.0f} s"), ("log", str(child.log_path))])

    def _stop(self, child: ServerChild, grace: float = 5.0) -> None:
        proc = child.process
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        with self._lock:
            for child in self.children:
                self._stop(child)
            self.children.clear()

    def __enter__(self) -> "LocalServers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
