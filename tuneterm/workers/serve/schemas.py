"""Request bodies of the OpenAI API, checked field by field, and OpenAI's error shape.

Every field a body may carry is in :data:`CHAT_FIELDS`: applied, accepted as a no-op (as
OpenAI's API itself treats ``user`` or ``metadata``), or refused with a 400 that names it. A field
that is not listed is refused too: a client that sends a parameter and gets no error believes it
was applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneterm.core.generation import GenerationParams
from tuneterm.workers.variants import ServedModel

DEFAULT_MAX_TOKENS = 512
ROLES = ("system", "developer", "user", "assistant", "tool")

# field -> how it is treated: "applied", "no-op" (accepted and without effect, as in OpenAI's API),
# "default-only" (accepted only at its neutral value), or "refused" (a 400 naming it)
CHAT_FIELDS: dict[str, str] = {
    "model": "applied", "messages": "applied", "max_tokens": "applied", "max_completion_tokens": "applied",
    "temperature": "applied", "top_p": "applied", "stop": "applied", "seed": "applied", "stream": "applied",
    "stream_options": "applied", "n": "default-only",
    "user": "no-op", "metadata": "no-op", "store": "default-only", "service_tier": "no-op",
    "frequency_penalty": "default-only", "presence_penalty": "default-only", "logit_bias": "default-only",
    "response_format": "applied", "tool_choice": "applied", "parallel_tool_calls": "no-op",
    "logprobs": "applied", "top_logprobs": "applied", "tools": "applied", "functions": "refused",
    "function_call": "refused", "modalities": "default-only", "audio": "refused", "prediction": "refused",
    "reasoning_effort": "refused", "web_search_options": "refused", "verbosity": "refused",
}
# the neutral value of each "default-only" field: sending it changes nothing
_NEUTRAL: dict[str, tuple] = {
    "n": (1,), "store": (False,), "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0),
    "logit_bias": ({},),
    "modalities": (["text"],),
}
_WHY: dict[str, str] = {
    "n": "only n=1 is supported",
    "store": "this server stores no completions; store must be false",
    "functions": "the legacy functions field is not supported; send tools",
    "function_call": "the legacy function_call field is not supported; send tool_choice",
}


class ApiError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    variant: ServedModel
    messages: list[dict]
    params: GenerationParams
    stream: bool
    include_usage: bool
    top_logprobs: int | None = None  # None: no log-probabilities; else how many alternatives per token
    schema: str | None = None  # response_format's JSON schema (json_object: {"type": "object"})
    body: dict | None = None  # the request as sent (tools are planned against the model's template)


def check_fields(body: dict, fields: dict[str, str], endpoint: str) -> None:
    """Refuse (400, naming the field) anything not applied, not a no-op, or not at its neutral value."""
    for name, value in body.items():
        how = fields.get(name)
        if how is None:
            raise ApiError(400, f"Unrecognized request argument supplied: {name} ({endpoint} does not know this "
                                "field)", param=name, code="unknown_parameter")
        if value is None or how in ("applied", "no-op"):
            continue
        if how == "default-only" and value in _NEUTRAL.get(name, ()):
            continue
        raise ApiError(400, f"{name}: {_WHY.get(name, 'this field is not supported by this server')}",
                       param=name, code="unsupported_parameter")


def parse_request(body: Any, variants: dict[str, ServedModel]) -> ChatRequest:
    """Validate a chat.completions body; raises :class:`ApiError` naming the bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = check_model(body, variants)
    check_fields(body, CHAT_FIELDS, "chat.completions")
    messages = _messages(body.get("messages"))
    if variants[model].is_classifier:
        check_classifier_chat(body, messages, variants[model])
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    params = sampling(body, max_tokens, "max_tokens")
    stream = bool(body.get("stream", False))
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    from tuneterm.workers.serve.structured import response_format_schema

    return ChatRequest(variants[model], messages, params, stream, bool(opts.get("include_usage")), _logprobs(body),
                       response_format_schema(body.get("response_format")), body)


MAX_TOP_LOGPROBS = 20


def _logprobs(body: dict) -> int | None:
    wanted = body.get("logprobs")
    top = body.get("top_logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise ApiError(400, f"logprobs must be a boolean, got {wanted!r}", param="logprobs")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise ApiError(400, f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {top!r}",
                           param="top_logprobs")
        if not wanted:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    return (top or 0) if wanted else None


# chat fields that cannot apply to a classifier's answer (one label), with their neutral values
CLASSIFIER_REFUSED: dict[str, tuple] = {
    "logprobs": (False,), "top_logprobs": (), "tools": ([],), "tool_choice": ("none", "auto"),
    "response_format": ({"type": "text"},),
}


def check_classifier_chat(body: dict, messages: list[dict], variant: ServedModel) -> None:
    """A classifier answers with one of its labels: refuse (400, naming the field) log-probabilities,
    tools and structured output, and a conversation without a user message (the text it reads)."""
    for name, neutral in CLASSIFIER_REFUSED.items():
        value = body.get(name)
        if value is None or value in neutral:
            continue
        raise ApiError(400, f"{name}: {variant.model_id} is a classifier ({variant.describe()}); it answers with one "
                            f"of its labels, so {name} does not apply", param=name, code="unsupported_parameter")
    if not any(m["role"] == "user" for m in messages):
        raise ApiError(400, f"{variant.model_id} is a classifier: it reads the last user message, and messages has "
                            "none", param="messages")


def refuse_classifier(variant: ServedModel, endpoint: str) -> None:
    """``/v1/completions`` and ``/v1/responses`` have no form for a classifier: a 400 naming ``model``."""
    if variant.is_classifier:
        raise ApiError(400, f"{variant.model_id} is a classifier ({variant.describe()}): it answers "
                            f"/v1/chat/completions with a label, not {endpoint}", param="model",
                       code="model_is_classifier")


def refuse_engine(variant: ServedModel, param: str, what: str) -> None:
    """What a model's engine cannot do is a 400 naming the field that asked for it: a GGUF file in
    llama.cpp has no tool calling or raw-prompt scoring here; a quantized artifact
    on the lean decode loop (one sequence, no batcher) has none of them, nor log-probabilities."""
    group = variant.group
    if getattr(group.model, "is_llamacpp", False):
        if param in ("logprobs", "response_format"):  # from the sampled row; through llama.cpp's grammar
            return
        engine = "llama.cpp (a GGUF file)"
    elif getattr(group, "lean_loop", False):
        engine = "the lean decode loop of a quantized artifact"
    else:
        return
    raise ApiError(400, f"{param}: {what} is not available for {variant.model_id}, which runs on {engine}",
                   param=param, code="unsupported_parameter")


def check_model(body: dict, variants: dict[str, ServedModel]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    served = served_name(model, variants)
    if served is None:
        raise ApiError(404, f"The model '{model}' does not exist; this server has: {', '.join(variants)}",
                       param="model", code="model_not_found")
    return served


def served_name(model: str, variants: dict) -> str | None:
    """The served name ``model`` stands for: itself, or for ``job:`` references any form ``job:ID`` takes
    (full id, 4-digit suffix, unique prefix), whichever form the server was started with."""
    if model in variants:
        return model
    if not model.startswith("job:"):
        return None
    from tuneterm.core.errors import TunetermError
    from tuneterm.core.jobs.store import resolve_id

    def full_id(ref: str) -> str | None:
        try:
            return resolve_id(ref[len("job:"):])
        except TunetermError:
            return None

    wanted = full_id(model)
    if wanted is None:
        return None
    return next((name for name in variants if name.startswith("job:") and full_id(name) == wanted), None)


def sampling(body: dict, max_tokens: Any, max_name: str) -> GenerationParams:
    """The generation settings shared by every endpoint: max tokens, temperature, top_p, seed, stop."""
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "stop must be a string or a list of at most 4 strings", param="stop")
    temperature = body.get("temperature", 1.0)
    top_p = body.get("top_p", 1.0)
    temperature = 1.0 if temperature is None else temperature
    top_p = 1.0 if top_p is None else top_p
    seed = body.get("seed")
    for name, value, kinds in ((max_name, max_tokens, int), ("temperature", temperature, (int, float)),
                               ("top_p", top_p, (int, float)), ("seed", seed, (int, type(None)))):
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ApiError(400, f"{name} has the wrong type: {value!r}", param=name)
    if not 0 <= temperature <= 2:
        raise ApiError(400, f"temperature must be between 0 and 2, got {temperature}", param="temperature")
    if not 0 < top_p <= 1:
        raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p")
    if max_tokens < 1:
        raise ApiError(400, f"{max_name} must be at least 1, got {max_tokens}", param=max_name)
    return GenerationParams(max_new_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
                            seed=seed, stop=stop)


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
        message = {"role": role, "content": content}
        if role == "assistant" and isinstance(m.get("tool_calls"), list):  # for templates that take tools
            message["tool_calls"] = [_template_call(c) for c in m["tool_calls"] if isinstance(c, dict)]
        if role == "tool":
            for key in ("tool_call_id", "name"):
                if isinstance(m.get(key), str):
                    message[key] = m[key]
        out.append(message)
    return out


def _template_call(call: dict) -> dict:
    """An OpenAI tool call as chat templates take it (arguments as an object)."""
    import json

    fn = call.get("function") or {}
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    return {"id": call.get("id"), "type": "function", "function": {"name": fn.get("name"), "arguments": args}}
