"""``POST /v1/completions``: the legacy completions API, as lm-evaluation-harness's
``local-completions`` model sends it for log-likelihood tasks (``echo``, ``logprobs``,
``max_tokens`` 0 or 1 over a tokenized prompt).

A prompt is a string, a list of strings, a list of token ids or a list of those; each is one
choice. The raw prompt is decoded by the group's decode loop (no chat template); log-probabilities
come from one scoring forward pass over prompt and completion in the same loop.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

from tuneterm.core.generation import GenerationParams, GenerationStats
from tuneterm.workers.serve.chat import usage
from tuneterm.workers.serve.schemas import (ApiError, check_fields, check_model, refuse_classifier,
                                            refuse_engine, sampling)
from tuneterm.workers.variants import ServedModel

DEFAULT_MAX_TOKENS = 16
MAX_LOGPROBS = 20
COMPLETION_FIELDS: dict[str, str] = {
    "model": "applied", "prompt": "applied", "max_tokens": "applied", "temperature": "applied", "top_p": "applied",
    "stop": "applied", "seed": "applied", "stream": "applied", "stream_options": "applied", "echo": "applied",
    "logprobs": "applied", "n": "default-only", "best_of": "default-only", "user": "no-op",
    "frequency_penalty": "default-only", "presence_penalty": "default-only", "logit_bias": "default-only",
    "suffix": "refused",
}


class CompletionJob:
    """The choices of one request, computed in the pump thread (:class:`Generation`)."""

    def __init__(self, variant: ServedModel, prompts: list[list[int]], params: GenerationParams, max_tokens: int,
                 echo: bool, logprobs: int | None, stats: GenerationStats) -> None:
        self.variant, self.prompts, self.params, self.max_tokens = variant, prompts, params, max_tokens
        self.echo, self.logprobs, self.stats = echo, logprobs, stats
        self.tokenizer = variant.group.tokenizer
        self.choices: list[dict] = []

    def run(self, cancel: Any) -> Iterator[str]:
        self.stats.prompt_tokens = 0
        for index, ids in enumerate(self.prompts):
            sub = GenerationStats()
            prompt_text = self.tokenizer.decode(ids) if self.echo else ""
            if prompt_text and len(self.prompts) == 1:
                yield prompt_text
            text = ""
            if self.max_tokens > 0:
                for piece in self.variant.stream_ids(ids, self.params, sub, cancel):
                    text += piece
                    if len(self.prompts) == 1:
                        yield piece
            else:
                sub.finish_reason = "length"
            self.stats.prompt_tokens += len(ids)
            self.stats.completion_tokens += sub.completion_tokens
            self.stats.finish_reason = sub.finish_reason
            self.choices.append({"index": index, "text": prompt_text + text,
                                 "logprobs": self._logprobs(ids, text) if self.logprobs is not None else None,
                                 "finish_reason": "length" if sub.finish_reason == "length" else "stop"})

    def _logprobs(self, ids: list[int], text: str) -> dict:
        """OpenAI's legacy shape: tokens, token_logprobs, top_logprobs, text_offset (the prompt's
        tokens too when echoing). The completion's tokens are its text tokenized again."""
        completion = self.tokenizer.encode(text, add_special_tokens=False) if text else []
        scored = self.variant.score(ids + completion, top=self.logprobs)
        first = 0 if self.echo else len(ids)
        tokens, token_lps, tops, offsets = [], [], [], []
        offset = 0
        for tok, (lp, top) in zip((ids + completion)[first:], scored[first:]):
            piece = self.tokenizer.decode([tok])
            tokens.append(piece)
            token_lps.append(lp)
            tops.append({self.tokenizer.decode([t]): v for t, v in top.items()} if lp is not None else None)
            offsets.append(offset)
            offset += len(piece)
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


class CompletionRenderer:
    def __init__(self, model_id: str, job: CompletionJob, include_usage: bool) -> None:
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model_id, self.job, self.include_usage = model_id, job, include_usage

    def _chunk(self, choices: list[dict], usage_: Any = None) -> dict:
        obj = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model_id,
               "system_fingerprint": "tuneterm", "choices": choices}
        if self.include_usage:
            obj["usage"] = usage_
        return obj

    def opening(self) -> list[dict | str]:
        return []

    def piece(self, text: str) -> dict:
        return self._chunk([{"index": 0, "text": text, "logprobs": None, "finish_reason": None}])

    def closing(self, stats: GenerationStats) -> list[dict | str]:
        finish = self.job.choices[0]["finish_reason"] if self.job.choices else "stop"
        events: list[dict | str] = [self._chunk([{"index": 0, "text": "", "logprobs": None, "finish_reason": finish}])]
        if self.include_usage:
            events.append(self._chunk([], usage(stats)))
        return [*events, "[DONE]"]

    def body(self, text: str, stats: GenerationStats) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model_id,
                "system_fingerprint": "tuneterm", "choices": self.job.choices, "usage": usage(stats)}


def parse_completion(body: Any, variants: dict[str, ServedModel], stats: GenerationStats) -> tuple[CompletionJob, bool, bool]:
    """A completions body as a job; returns (job, stream, include_usage)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    variant = variants[check_model(body, variants)]
    refuse_classifier(variant, "/v1/completions")
    check_fields(body, COMPLETION_FIELDS, "completions")
    if variant.fewshot is not None:
        raise ApiError(400, "a few-shot model has no raw-prompt form; use /v1/chat/completions", param="model")
    refuse_engine(variant, "model", "/v1/completions (a raw prompt, echo, scoring)")
    prompts = _prompts(body.get("prompt"), variant)
    max_tokens = body.get("max_tokens")
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ApiError(400, f"max_tokens must be an integer of at least 0, got {max_tokens!r}", param="max_tokens")
    params = sampling(body, max(1, max_tokens), "max_tokens")
    echo = body.get("echo") or False
    if not isinstance(echo, bool):
        raise ApiError(400, "echo must be a boolean", param="echo")
    logprobs = body.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                 or not 0 <= logprobs <= MAX_LOGPROBS):
        raise ApiError(400, f"logprobs must be an integer from 0 to {MAX_LOGPROBS}", param="logprobs")
    stream = bool(body.get("stream", False))
    if stream and len(prompts) > 1:
        raise ApiError(400, "streaming takes one prompt", param="prompt")
    if stream and logprobs is not None:
        raise ApiError(400, "logprobs are not streamed by this server; send stream=false", param="logprobs")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    job = CompletionJob(variant, prompts, params, max_tokens, echo, logprobs, stats)
    return job, stream, bool(opts.get("include_usage"))


def _prompts(raw: Any, variant: ServedModel) -> list[list[int]]:
    tokenizer = variant.group.tokenizer
    vocab = len(tokenizer)

    def ids_of(item: Any, where: str) -> list[int]:
        if isinstance(item, str):
            ids = tokenizer(item)["input_ids"]
        elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            bad = [t for t in item if not 0 <= t < vocab]
            if bad:
                raise ApiError(400, f"{where}: token id {bad[0]} is outside the vocabulary (0-{vocab - 1})",
                               param="prompt")
            ids = list(item)
        else:
            raise ApiError(400, f"{where} must be a string or a list of token ids", param="prompt")
        if not ids:
            raise ApiError(400, f"{where} is empty", param="prompt")
        return ids

    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
        return [ids_of(raw, "prompt")]
    if isinstance(raw, list) and raw:
        return [ids_of(item, f"prompt[{i}]") for i, item in enumerate(raw)]
    raise ApiError(400, "prompt must be a string, a list of strings, or token ids", param="prompt")
