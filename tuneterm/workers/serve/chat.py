"""The shapes of ``chat.completion`` answers and ``chat.completion.chunk`` stream events."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tuneterm.core.generation import GenerationStats


def finish_reason(stats: GenerationStats) -> str:
    return "length" if stats.finish_reason == "length" else "stop"


def usage(stats: GenerationStats) -> dict:
    prompt = stats.prompt_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": stats.completion_tokens,
            "total_tokens": prompt + stats.completion_tokens}


class ChatRenderer:
    def __init__(self, model_id: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model_id = model_id
        self.include_usage = include_usage

    def _chunk(self, delta: dict, finish: str | None = None, usage_: Any = None, choices: bool = True) -> dict:
        obj = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model_id,
               "system_fingerprint": "tuneterm",
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else []}
        if self.include_usage:
            obj["usage"] = usage_
        return obj

    def opening(self) -> list[dict | str]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def piece(self, text: str) -> dict:
        return self._chunk({"content": text})

    def closing(self, stats: GenerationStats) -> list[dict | str]:
        events: list[dict | str] = [self._chunk({}, finish_reason(stats))]
        if self.include_usage:
            events.append(self._chunk({}, usage_={**usage(stats), "tuneterm": stats.to_dict()}, choices=False))
        events.append("[DONE]")
        return events

    def body(self, text: str, stats: GenerationStats) -> dict:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model_id,
            "system_fingerprint": "tuneterm",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish_reason(stats)}],
            "usage": usage(stats), "tuneterm": stats.to_dict(),
        }
