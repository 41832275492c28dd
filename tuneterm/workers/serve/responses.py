"""``POST /v1/responses``: OpenAI's Responses API for text: ``input`` (a string or messages),
``instructions``, ``max_output_tokens``, ``temperature``, ``top_p``, streaming events. Every other
field is refused by name, as on chat completions (:mod:`.schemas`)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tuneterm.core.generation import GenerationParams, GenerationStats
from tuneterm.workers.serve.schemas import (ApiError, DEFAULT_MAX_TOKENS, check_fields, check_model, refuse_classifier,
                                            sampling)
from tuneterm.workers.variants import ServedModel

RESPONSE_FIELDS: dict[str, str] = {
    "model": "applied", "input": "applied", "instructions": "applied", "max_output_tokens": "applied",
    "temperature": "applied", "top_p": "applied", "stream": "applied", "metadata": "no-op", "user": "no-op",
    "parallel_tool_calls": "no-op", "service_tier": "no-op", "store": "default-only", "text": "default-only",
    "tools": "default-only", "tool_choice": "default-only", "truncation": "default-only",
    "previous_response_id": "refused", "reasoning": "refused", "include": "refused", "background": "refused",
    "conversation": "refused", "prompt": "refused", "max_tool_calls": "refused", "top_logprobs": "refused",
    "stream_options": "refused",
}
INPUT_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def parse_response_request(body: Any, variants: dict[str, ServedModel]) -> tuple[ServedModel, list[dict], GenerationParams, bool]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    variant = variants[check_model(body, variants)]
    refuse_classifier(variant, "/v1/responses")
    check_fields(body, RESPONSE_FIELDS, "responses")
    for name, neutral in (("text", ({"format": {"type": "text"}},)), ("tools", ([],)), ("tool_choice", ("none", "auto")),
                          ("truncation", ("disabled",)), ("store", (False,))):
        value = body.get(name)
        if value is not None and value not in neutral:
            raise ApiError(400, f"{name}: this server supports only plain text answers without tools or stored "
                                f"responses ({name}={value!r} is not applied)", param=name,
                           code="unsupported_parameter")
    messages: list[dict] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise ApiError(400, "instructions must be a string", param="instructions")
        messages.append({"role": "system", "content": instructions})
    messages += _input(body.get("input"))
    max_tokens = body.get("max_output_tokens")
    params = sampling({k: body.get(k) for k in ("temperature", "top_p")},
                      DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens, "max_output_tokens")
    return variant, messages, params, bool(body.get("stream", False))


def _input(raw: Any) -> list[dict]:
    if isinstance(raw, str) and raw:
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "input must be a non-empty string or a list of messages", param="input")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or item.get("type", "message") != "message" or item.get("role") not in INPUT_ROLES:
            raise ApiError(400, f"input[{i}] must be a message with role user, assistant, system or developer "
                                "(other input items are not supported)", param=f"input[{i}]")
        content = item.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                    raise ApiError(400, f"input[{i}].content[{j}]: only text parts are supported",
                                   param=f"input[{i}].content[{j}]")
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        if not isinstance(content, str):
            raise ApiError(400, f"input[{i}].content must be a string or text parts", param=f"input[{i}].content")
        out.append({"role": INPUT_ROLES[item["role"]], "content": content})
    return out


class ResponsesRenderer:
    def __init__(self, model_id: str, params: GenerationParams, instructions: str | None) -> None:
        self.id = f"resp_{uuid.uuid4().hex}"
        self.item_id = f"msg_{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_id, self.params, self.instructions = model_id, params, instructions
        self.seq = 0
        self.text = ""

    def _response(self, status: str, text: str | None, stats: GenerationStats | None) -> dict:
        output = [] if text is None else [self._item("completed", text)]
        incomplete = stats is not None and stats.finish_reason == "length"
        usage = None
        if stats is not None:
            prompt = stats.prompt_tokens or 0
            usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens": stats.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": prompt + stats.completion_tokens}
        return {"id": self.id, "object": "response", "created_at": self.created,
                "status": "incomplete" if incomplete and status == "completed" else status,
                "model": self.model_id, "output": output, "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
                "instructions": self.instructions, "max_output_tokens": self.params.max_new_tokens,
                "temperature": self.params.temperature, "top_p": self.params.top_p, "parallel_tool_calls": False,
                "tool_choice": "none", "tools": [], "text": {"format": {"type": "text"}}, "truncation": "disabled",
                "metadata": {}, "usage": usage}

    def _item(self, status: str, text: str) -> dict:
        return {"type": "message", "id": self.item_id, "status": status, "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []}

    def _event(self, type_: str, **fields: Any) -> dict:
        self.seq += 1
        return {"type": type_, "sequence_number": self.seq - 1, **fields}

    def opening(self) -> list[dict | str]:
        part = {"type": "output_text", "text": "", "annotations": []}
        return [self._event("response.created", response=self._response("in_progress", None, None)),
                self._event("response.in_progress", response=self._response("in_progress", None, None)),
                self._event("response.output_item.added", output_index=0, item=self._item("in_progress", "")),
                self._event("response.content_part.added", item_id=self.item_id, output_index=0, content_index=0,
                            part=part)]

    def piece(self, text: str) -> dict:
        self.text += text
        return self._event("response.output_text.delta", item_id=self.item_id, output_index=0, content_index=0,
                           delta=text, logprobs=[])

    def closing(self, stats: GenerationStats) -> list[dict | str]:
        part = {"type": "output_text", "text": self.text, "annotations": []}
        final = self._response("completed", self.text, stats)
        return [self._event("response.output_text.done", item_id=self.item_id, output_index=0, content_index=0,
                            text=self.text, logprobs=[]),
                self._event("response.content_part.done", item_id=self.item_id, output_index=0, content_index=0,
                            part=part),
                self._event("response.output_item.done", output_index=0, item=self._item("completed", self.text)),
                self._event("response.incomplete" if final["status"] == "incomplete" else "response.completed",
                            response=final)]

    def body(self, text: str, stats: GenerationStats) -> dict:
        return self._response("completed", text, stats)
