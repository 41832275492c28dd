"""The trained system prompts in front of ``tuneterm serve --engine vllm``.

vLLM answers every request as sent, but a ``job:ID`` model answers as trained only with the system
prompt its job was trained with (``tuneterm.core.trained_prompt``), which ``tuneterm serve``'s own engine
adds to a request that has none. When a served model has such a prompt, :class:`PromptFront` listens on
the address clients use and passes every request through to vLLM (on a private loopback port),
streams included, after :func:`with_trained_prompt` has put the prompt into chat and responses requests
for that model. vLLM still checks the API key. With no trained prompt there is no front: clients
reach vLLM directly.
"""

from __future__ import annotations

import contextlib
import json
import threading

from tuneterm.core import trained_prompt

# hop-by-hop headers, and those the front recomputes, are not passed on
_REQUEST_DROP = {b"host", b"content-length", b"connection", b"keep-alive", b"transfer-encoding"}
_RESPONSE_DROP = {"connection", "keep-alive", "transfer-encoding"}


def with_trained_prompt(path: str, body: bytes, prompts: dict) -> bytes:
    """``body`` of a request to ``path`` as vLLM should get it: for a model in ``prompts`` (name ->
    :class:`~tuneterm.core.trained_prompt.TrainedPrompt`), a chat request without a system or developer
    message gets the trained prompt first and a responses request without one gets it as
    ``instructions``, as tuneterm's own engine does. Every other body is returned unchanged."""
    if not prompts or not path.rstrip("/").endswith(("/chat/completions", "/responses")):
        return body
    try:
        data = json.loads(body)
    except ValueError:  # vLLM answers a malformed body itself
        return body
    found = prompts.get(data.get("model")) if isinstance(data, dict) else None
    if found is None:
        return body
    if path.rstrip("/").endswith("/chat/completions"):
        messages = data.get("messages")
        if not isinstance(messages, list) or trained_prompt.has_system(messages):
            return body
        data["messages"] = trained_prompt.apply(found, messages)
    else:
        given = data.get("input")
        if data.get("instructions") is not None or (isinstance(given, list) and trained_prompt.has_system(given)):
            return body
        data["instructions"] = found.text
    return json.dumps(data, ensure_ascii=False).encode()


def app(upstream: str, prompts: dict):
    """A Starlette app passing every request on to ``upstream`` (``http://127.0.0.1:PORT``)."""
    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def lifespan(application):
        # no timeout and no cap on connections: vLLM paces and queues the requests itself
        async with httpx.AsyncClient(base_url=upstream, timeout=None,
                                     limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)) as client:
            application.state.client = client
            yield

    async def forward(request):
        client = request.app.state.client
        body = with_trained_prompt(request.url.path, await request.body(), prompts)
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _REQUEST_DROP]
        sent = client.build_request(request.method, request.url.path, params=request.query_params.multi_items(),
                                    headers=headers, content=body)
        try:
            answer = await client.send(sent, stream=True)
        except httpx.TransportError as exc:
            from starlette.responses import JSONResponse

            return JSONResponse({"error": {"message": f"vLLM did not answer: {exc}", "type": "upstream_error",
                                           "code": 502}}, status_code=502)
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _RESPONSE_DROP}
        return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code, headers=kept,
                                 background=BackgroundTask(answer.aclose))

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


class PromptFront:
    """:func:`app` served on ``host:port`` from a thread; :meth:`stop` ends it."""

    def __init__(self, host: str, port: int, upstream: str, prompts: dict) -> None:
        import uvicorn

        config = uvicorn.Config(app(upstream, prompts), host=host, port=port, log_level="warning",
                                access_log=False, lifespan="on", loop="asyncio", http="h11", ws="none")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="tuneterm-vllm-front", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        from tuneterm.core.errors import RuntimeFailure

        self._thread.start()
        for _ in range(int(timeout * 20)):
            if self._server.started or not self._thread.is_alive():
                break
            self._thread.join(0.05)
        if not self._server.started:
            raise RuntimeFailure("the front for vLLM did not start", [("address", self._address())],
                                 "pick another --port")

    def _address(self) -> str:
        return f"{self._server.config.host}:{self._server.config.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
