"""The shapes of ``chat.completion`` answers and ``chat.completion.chunk`` stream events."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tuneterm.core.generation import GenerationStats


def finish_reason(stats: GenerationStats, tool_calls: list | None = None) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if stats.finish_reason == "length" else "stop"


def usage(stats: GenerationStats) -> dict:
    prompt = stats.prompt_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": stats.completion_tokens,
            "total_tokens": prompt + stats.completion_tokens}


def byte_table() -> dict[int, str]:
    """Byte-level BPE's spelling of each byte (GPT-2's table: printable bytes stand for
    themselves, the others are moved to code points from 256 up)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
            *range(ord("\u00ae"), ord("\u00ff") + 1)]
    table = {b: chr(b) for b in keep}
    moved = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + moved)
            moved += 1
    return table


_BYTE_DECODER = {c: b for b, c in byte_table().items()}


def token_bytes(tokenizer: Any, token_id: int) -> list[int]:
    """A token's own bytes (a byte-level BPE token may hold part of a character). A llama.cpp
    engine, which has no Hugging Face tokenizer here, gives the bytes its worker sent."""
    own = getattr(tokenizer, "token_bytes", None)
    if own is not None:
        return own(token_id)
    raw = tokenizer.convert_ids_to_tokens(token_id)
    if isinstance(raw, str) and raw and all(c in _BYTE_DECODER for c in raw):
        return [_BYTE_DECODER[c] for c in raw]
    return list(tokenizer.decode([token_id]).encode())


def logprob_content(tokenizer: Any, entries: list) -> list[dict]:
    """OpenAI's ``logprobs.content``: token, logprob, bytes, top_logprobs, per token."""

    def one(token_id: int, lp: float) -> dict:
        raw = token_bytes(tokenizer, token_id)
        return {"token": bytes(raw).decode("utf-8", errors="replace"), "logprob": lp, "bytes": raw}

    return [{**one(t, lp), "top_logprobs": [one(a, alp) for a, alp in alts]} for t, lp, alts in entries]


class ChatRenderer:
    def __init__(self, model_id: str, include_usage: bool, log: Any = None, tokenizer: Any = None) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model_id = model_id
        self.include_usage = include_usage
        self.log, self.tokenizer = log, tokenizer  # a TokenLog when log-probabilities were asked for
        self.tool_calls: list[dict] = []  # set by the generating thread before the end

    def _chunk(self, delta: dict, finish: str | None = None, usage_: Any = None, choices: bool = True,
               logprobs: Any = None) -> dict:
        obj = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model_id,
               "system_fingerprint": "tuneterm",
               "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]
               if choices else []}
        if self.include_usage:
            obj["usage"] = usage_
        return obj

    def opening(self) -> list[dict | str]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def piece(self, value: Any) -> dict:
        if isinstance(value, str):
            return self._chunk({"content": value})
        text, entries = value
        return self._chunk({"content": text}, logprobs={"content": logprob_content(self.tokenizer, entries),
                                                         "refusal": None})

    def closing(self, stats: GenerationStats) -> list[dict | str]:
        events: list[dict | str] = []
        if self.tool_calls:
            events.append(self._chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(self.tool_calls)]}))
        events.append(self._chunk({}, finish_reason(stats, self.tool_calls)))
        if self.include_usage:
            events.append(self._chunk({}, usage_={**usage(stats), "tuneterm": stats.to_dict()}, choices=False))
        events.append("[DONE]")
        return events

    def body(self, text: str, stats: GenerationStats) -> dict:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model_id,
            "system_fingerprint": "tuneterm",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text or (None if self.tool_calls else ""),
                                                 "refusal": None, **({"tool_calls": self.tool_calls} if self.tool_calls else {})},
                         "logprobs": {"content": logprob_content(self.tokenizer, self.log.entries), "refusal": None}
                         if self.log is not None else None, "finish_reason": finish_reason(stats, self.tool_calls)}],
            "usage": usage(stats), "tuneterm": stats.to_dict(),
        }
