"""The endpoints: health, metrics, model listing, chat completions; OpenAI's error shape for
everything else (unknown paths and methods included)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tuneterm.workers.serve.chat import ChatRenderer
from tuneterm.workers.serve.generation import Generation, error_for
from tuneterm.workers.serve.schemas import ApiError, parse_request, refuse_engine, served_name

if TYPE_CHECKING:
    from tuneterm.workers.serve.app import ServeState

MAX_BODY = 16 * 1024 * 1024


def _state(request: Request) -> "ServeState":
    return request.app.state.serve


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def endpoint(name: str, auth: bool = True, loaded: bool = True) -> Callable:
    """Wrap a handler: the API key check, the loading state, errors in OpenAI's shape, counting."""

    def wrap(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Any]]:
        async def run(request: Request) -> Any:
            state = _state(request)
            try:
                if auth:
                    check_auth(request, state.api_key)
                if loaded and state.variants is None:
                    raise ApiError(503, "the models are still loading; GET /health answers 200 once they are "
                                        "ready", "server_error", code="model_loading", headers={"Retry-After": "1"})
                response = await handler(request)
            except Exception as exc:  # noqa: BLE001 - every failure answers in OpenAI's shape
                response = error_response(error_for(exc))
            if not isinstance(response, Generation):  # a generation counts itself when it ends
                state.metrics.requests.labels(name, str(response.status_code)).inc()
            return response

        return run

    return wrap


def check_auth(request: Request, key: str | None) -> None:
    if not key:
        return
    given = request.headers.get("authorization", "")
    token = given[7:].strip() if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), key.encode()):
        raise ApiError(401, "Incorrect API key provided", code="invalid_api_key")


async def read_json(request: Request) -> Any:
    """The body as JSON, read within ``--read-timeout`` (a client sending a byte a second is cut
    off before it takes a decode slot)."""
    state = _state(request)
    length = request.headers.get("content-length")
    if length is None:
        raise ApiError(411, "a Content-Length header is required")
    try:
        n = int(length)
    except ValueError:
        raise ApiError(400, "bad Content-Length") from None
    if n > MAX_BODY:
        raise ApiError(413, f"request body too large ({n} bytes; the limit is {MAX_BODY})",
                       headers={"Connection": "close"})
    try:
        raw = await asyncio.wait_for(request.body(), state.read_timeout)
    except asyncio.TimeoutError:
        state.metrics.slow_bodies.inc()
        raise ApiError(408, f"the request body did not arrive within {state.read_timeout:g} s",
                       code="request_timeout", headers={"Connection": "close"}) from None
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None


@endpoint("health", auth=False, loaded=False)
async def health(request: Request) -> Response:
    state = _state(request)
    if state.load_error is not None:
        return JSONResponse({"status": "error", "error": str(state.load_error)}, status_code=500)
    if state.variants is None:
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ok", "models": list(state.variants)})


@endpoint("metrics", loaded=False)
async def metrics(request: Request) -> Response:
    m = _state(request).metrics
    return Response(m.render(), media_type=m.content_type)


def model_card(state: "ServeState", model_id: str) -> dict:
    v = state.variants[model_id]
    kind = "classifier" if v.is_classifier else "fewshot" if v.fewshot is not None else \
        "adapter" if v.adapter is not None else "model"
    return {
        "id": v.model_id, "object": "model", "created": state.created, "owned_by": "tuneterm",
        "tuneterm": {"kind": kind, "adapter": v.adapter is not None, "base": v.group.key, "engine": v.engine(),
                     "classifier": {"method": v.classifier.method, "labels": v.classifier.labels,
                                    "label": v.label()} if v.is_classifier else None,
                     "fewshot": {"k": v.fewshot.k, "pool": v.fewshot.pool, "strategy": v.fewshot.strategy}
                     if v.fewshot is not None else None,
                     "memory_bytes": v.group.memory_bytes(), "shared_with": [
                         o.model_id for o in state.variants.values() if o.group is v.group and o is not v]},
    }


@endpoint("models")
async def list_models(request: Request) -> Response:
    state = _state(request)
    return JSONResponse({"object": "list", "data": [model_card(state, m) for m in state.variants]})


@endpoint("models")
async def get_model(request: Request) -> Response:
    state = _state(request)
    model_id = served_name(request.path_params["model_id"], state.variants)
    if model_id is None:
        raise ApiError(404, f"The model '{request.path_params['model_id']}' does not exist", param="model",
                       code="model_not_found")
    return JSONResponse(model_card(state, model_id))


@endpoint("chat.completions")
async def chat_completions(request: Request) -> Any:
    from tuneterm.core.generation import GenerationStats

    arrived = time.perf_counter()
    state = _state(request)
    req = parse_request(await read_json(request), state.variants)
    stats = GenerationStats()
    if req.variant.is_classifier:  # one label for the last user message: no decode loop, no batcher
        return Generation(state, "chat.completions",
                          lambda cancel: req.variant.stream(req.messages, req.params, stats, cancel),
                          stats, ChatRenderer(req.variant.model_id, req.include_usage), req.stream, arrived)
    extra: dict[str, Any] = {}
    from tuneterm.workers.serve.tools import plan_tools

    if req.body.get("tools") is not None:
        refuse_engine(req.variant, "tools", "tool calling")
    plan = plan_tools(req.body, req.variant.group.tokenizer)
    if plan is not None:
        return await _chat_with_tools(state, req, plan, stats, arrived)
    if req.schema is not None:
        from tuneterm.workers.serve.structured import constraint_factory

        refuse_engine(req.variant, "response_format", "structured output")
        group = req.variant.group
        if getattr(group.model, "is_llamacpp", False):  # a GGUF file: llama.cpp's own grammar
            extra["constraint"] = await asyncio.to_thread(_gguf_grammar, group.model, req.schema)
        else:
            make = await asyncio.to_thread(constraint_factory, req.schema, group.tokenizer,
                                           group.model.config.vocab_size)
            extra["constraint"] = make()
    if req.top_logprobs is None:
        return Generation(state, "chat.completions",
                          lambda cancel: req.variant.stream(req.messages, req.params, stats, cancel, **extra),
                          stats, ChatRenderer(req.variant.model_id, req.include_usage), req.stream, arrived)
    from tuneterm.workers.batcher import TokenLog

    refuse_engine(req.variant, "logprobs", "log-probabilities")
    log = TokenLog(req.top_logprobs)

    def with_logprobs(cancel: Any) -> Any:  # each piece with the log-probabilities of its tokens
        sent = 0
        for piece in req.variant.stream(req.messages, req.params, stats, cancel, logprobs=log, **extra):
            upto = min(stats.completion_tokens, len(log.entries))
            yield piece, log.entries[sent:upto]
            sent = upto

    group = req.variant.group  # a llama.cpp engine spells its tokens itself (the bytes its worker sent)
    spelling = group.model if getattr(group.model, "is_llamacpp", False) else group.tokenizer
    renderer = ChatRenderer(req.variant.model_id, req.include_usage, log, spelling)
    return Generation(state, "chat.completions", with_logprobs, stats, renderer, req.stream, arrived)


def _gguf_grammar(engine: Any, schema: str) -> Any:
    """The schema as llama.cpp's grammar; a schema it cannot take is a 400 naming response_format."""
    from tuneterm.core.errors import InputError

    try:
        return engine.json_schema_grammar(schema)
    except InputError as exc:
        problem = dict(exc.facts).get("problem", "")
        raise ApiError(400, f"response_format: {exc.title}: {problem}", param="response_format") from None


async def _chat_with_tools(state: "ServeState", req: Any, plan: Any, stats: Any, arrived: float) -> Generation:
    """The conversation and tools through the model's template; the answer parsed into tool calls
    (a stream sends the answer once it is complete: a call is known only at its end)."""
    from tuneterm.workers.serve.structured import constraint_factory
    from tuneterm.workers.serve.tools import call_grammar, parse_calls

    if req.schema is not None or req.top_logprobs is not None:
        raise ApiError(400, "tools cannot be combined with response_format or logprobs on this server",
                       param="tools")
    group = req.variant.group
    ids = group.tokenizer.apply_chat_template(req.variant.prepare(req.messages), tools=plan.tools,
                                              add_generation_prompt=True, return_dict=True)["input_ids"]
    constraint = None
    if plan.forced is not None:
        make = await asyncio.to_thread(constraint_factory, call_grammar(plan), group.tokenizer,
                                       group.model.config.vocab_size, "tool_choice")
        constraint = make()
    renderer = ChatRenderer(req.variant.model_id, req.include_usage)

    def answer(cancel: Any) -> Any:
        text = "".join(req.variant.stream_ids(list(ids), req.params, stats, cancel, constraint=constraint))
        content, renderer.tool_calls = parse_calls(plan, text)
        if content:
            yield content

    return Generation(state, "chat.completions", answer, stats, renderer, req.stream, arrived)


@endpoint("completions")
async def completions(request: Request) -> Any:
    from tuneterm.core.generation import GenerationStats
    from tuneterm.workers.serve.completions import CompletionRenderer, parse_completion

    arrived = time.perf_counter()
    state = _state(request)
    stats = GenerationStats()
    job, stream, include_usage = parse_completion(await read_json(request), state.variants, stats)
    return Generation(state, "completions", job.run, stats, CompletionRenderer(job.variant.model_id, job, include_usage),
                      stream, arrived)


@endpoint("responses")
async def responses(request: Request) -> Any:
    from tuneterm.core.generation import GenerationStats
    from tuneterm.workers.serve.responses import ResponsesRenderer, parse_response_request

    arrived = time.perf_counter()
    state = _state(request)
    body = await read_json(request)
    variant, messages, params, stream = parse_response_request(body, state.variants)
    stats = GenerationStats()
    return Generation(state, "responses", lambda cancel: variant.stream(messages, params, stats, cancel), stats,
                      ResponsesRenderer(variant.model_id, params, body.get("instructions")), stream, arrived)


async def not_found(request: Request, exc: HTTPException) -> Response:
    state = _state(request)
    if exc.status_code == 405:
        err = ApiError(405, f"{request.method} is not allowed on {request.url.path}")
    else:
        err = ApiError(404, f"unknown endpoint {request.method} {request.url.path}", code="unknown_url")
    state.metrics.requests.labels("unknown", str(err.status)).inc()
    return error_response(err)


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/v1/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
]
