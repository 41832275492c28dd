"""The local engine: a stream of text for these messages with these generation settings.

``stream_chat`` runs ``model.generate`` in a thread and yields decoded text pieces as the
tokens arrive; ``GenerationStats`` carries prompt and completion token counts, time to first
token and decode speed. Greedy when temperature is 0.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator

import torch
from transformers.generation.streamers import BaseStreamer

from tuneterm.core.errors import InputError, RuntimeFailure
from tuneterm.core.generation import GenerationParams, GenerationStats

__all__ = ["GenerationParams", "GenerationStats", "build_messages", "encode_chat", "generate_text", "stream_chat",
           "text_pieces"]


class _QueueStreamer(BaseStreamer):
    """Receives token ids from ``generate``; the first ``put`` is the prompt, skipped."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for tok in value.reshape(-1).tolist():
            self.q.put(tok)

    def end(self) -> None:
        self.q.put(None)


def encode_chat(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = True) -> torch.Tensor:
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            "this model's tokenizer has no chat template",
            [("tokenizer", type(tokenizer).__name__)],
            "use an instruct/chat model, or give the model folder a chat_template.jinja",
        )
    from tuneterm.core.chat_templates import prepare

    enc = tokenizer.apply_chat_template(
        prepare(tokenizer, messages), add_generation_prompt=add_generation_prompt, return_tensors="pt", return_dict=True
    )
    return enc["input_ids"]


def build_messages(prompt: str, system: str | None = None, history: list[dict] | None = None) -> list[dict]:
    messages: list[dict] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(history or [])
    messages.append({"role": "user", "content": prompt})
    return messages


def stream_chat(
    model: Any,
    tokenizer: Any,
    messages: list[dict],
    params: GenerationParams,
    stats: GenerationStats | None = None,
    cancel: threading.Event | None = None,
    generate_kwargs: dict | None = None,
) -> Iterator[str]:
    """Yield text pieces as they are generated (``model.generate`` in a thread); fills ``stats``.

    A stop string ends the answer and is not part of it (as in OpenAI's API); text that could
    be the start of a stop string is held back until it is known not to be one. Closing the
    generator early (a client that went away) stops ``generate`` at its next step.
    ``generate_kwargs`` go to ``model.generate`` as they are (e.g. PEFT's ``adapter_names``).
    """
    params.validate()
    stats = stats if stats is not None else GenerationStats()
    input_ids = encode_chat(tokenizer, messages).to(model.device)
    stats.prompt_tokens = int(input_ids.shape[1])
    streamer = _QueueStreamer()
    halt = threading.Event()  # set when we stop early: a stop string, or the consumer left
    gen_kwargs: dict[str, Any] = dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=params.max_new_tokens,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    if params.temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if params.stop:
        gen_kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Halted(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):  # noqa: ARG002
            return halt.is_set() or (cancel is not None and cancel.is_set())

    gen_kwargs["stopping_criteria"] = StoppingCriteriaList([_Halted()])
    gen_kwargs.update(generate_kwargs or {})

    def run() -> None:
        try:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                model.generate(**gen_kwargs)
        except BaseException as exc:  # reported to the consumer by text_pieces
            streamer.q.put(exc)
            streamer.end()

    started = time.perf_counter()
    thread = threading.Thread(target=run, name="tuneterm-generate", daemon=True)
    thread.start()
    try:
        yield from text_pieces(streamer.q, tokenizer, params, stats, halt, cancel, started,
                               set(eos_ids(model, tokenizer)))
    finally:
        # Normal end, a stop string, or the consumer closed us early: let generate finish its step.
        halt.set()
        while thread.is_alive():
            try:
                streamer.q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
        stats.total_s = time.perf_counter() - started


def text_pieces(
    tokens: "queue.Queue",
    tokenizer: Any,
    params: GenerationParams,
    stats: GenerationStats,
    halt: threading.Event,
    cancel: threading.Event | None,
    started: float,
    eos: set[int],
) -> Iterator[str]:
    """Turn a queue of token ids (``None`` ends it; an exception is raised here) into text pieces.

    The consumer half of every local generation path (``generate`` in a thread, or the batched
    decode loop of :mod:`tuneterm.workers.batcher`): counts tokens, stamps the first one, holds
    back a possible stop string, sets ``halt`` when the answer is complete (a stop string) or the
    consumer goes away, and sets ``stats.finish_reason``.
    """
    ids: list[int] = []
    last_tok: int | None = None
    emitted = 0
    stopped = False
    stops = [s for s in params.stop if s]
    hold = max((len(s) for s in stops), default=1) - 1
    try:
        while True:
            tok = tokens.get()
            if tok is None:
                break
            if isinstance(tok, BaseException):
                raise RuntimeFailure("generation failed", [("problem", f"{type(tok).__name__}: {tok}")]) from tok
            if stats.ttft_s is None:
                stats.ttft_s = time.perf_counter() - started
            stats.completion_tokens += 1
            last_tok = tok
            if tok in eos:
                continue
            ids.append(tok)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for more
                continue
            cut = _stop_index(text, stops, emitted)
            if cut is not None:
                stopped = True
                halt.set()
                if cut > emitted:
                    yield text[emitted:cut]
                emitted = cut
                break
            safe = len(text) - hold if stops else len(text)
            if safe > emitted:
                piece = text[emitted:safe]
                emitted = safe
                stats.total_s = time.perf_counter() - started
                yield piece
        if not stopped:
            # an answer cut off inside a multi-byte character (max_tokens, a cancel) ends before it:
            # streaming never emits half a character
            text = tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
            cut = _stop_index(text, stops, emitted)
            if cut is not None:
                stopped = True
                text = text[:cut]
            if len(text) > emitted:
                yield text[emitted:]
    finally:
        halt.set()
        stats.total_s = time.perf_counter() - started
    if stopped:
        stats.finish_reason = "stop"
    elif cancel is not None and cancel.is_set():
        stats.finish_reason = "cancelled"
    elif stats.completion_tokens >= params.max_new_tokens and last_tok not in eos:
        stats.finish_reason = "length"
    else:
        stats.finish_reason = "stop"


def _stop_index(text: str, stops: list[str], emitted: int) -> int | None:
    """Where the first stop string starts in ``text`` (searching only what could be new)."""
    found = None
    for s in stops:
        i = text.find(s, max(0, emitted - len(s) + 1))
        if i >= 0 and (found is None or i < found):
            found = i
    return found


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    found = []
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, int))
    if tokenizer.eos_token_id is not None:
        found.append(tokenizer.eos_token_id)
    return found


_eos_ids = eos_ids  # the name tuneterm.workers.evals.backend imports


def generate_text(model: Any, tokenizer: Any, messages: list[dict], params: GenerationParams) -> tuple[str, GenerationStats]:
    stats = GenerationStats()
    text = "".join(stream_chat(model, tokenizer, messages, params, stats))
    return text, stats
