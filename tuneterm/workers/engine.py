"""The local engine: a stream of text for these messages with these generation settings.

``stream_chat`` runs ``model.generate`` in a thread and yields decoded text pieces as the
tokens arrive; ``GenerationStats`` carries prompt and completion token counts, time to first
token and decode speed. Greedy when temperature is 0.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch
from transformers.generation.streamers import BaseStreamer

from tuneterm.core.errors import InputError, RuntimeFailure


@dataclass
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def validate(self) -> "GenerationParams":
        if self.max_new_tokens < 1:
            raise InputError("max_new_tokens must be at least 1", [("max_new_tokens", str(self.max_new_tokens))])
        if self.temperature < 0:
            raise InputError("temperature must be 0 (greedy) or more", [("temperature", str(self.temperature))])
        if not 0 < self.top_p <= 1:
            raise InputError("top_p must be in (0, 1]", [("top_p", str(self.top_p))])
        return self


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    total_s: float = 0.0
    finish_reason: str = "stop"

    @property
    def decode_tok_s(self) -> float:
        """Tokens per second after the first token (the decode rate)."""
        if self.ttft_s is None or self.completion_tokens <= 1:
            return 0.0
        span = self.total_s - self.ttft_s
        return (self.completion_tokens - 1) / span if span > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decode_tok_s"] = round(self.decode_tok_s, 2)
        d["ttft_ms"] = round(self.ttft_s * 1000, 1) if self.ttft_s is not None else None
        return d


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
    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, return_tensors="pt", return_dict=True
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
    """Yield text pieces as they are generated; fills ``stats`` as it goes.

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

    failure: list[BaseException] = []

    def run() -> None:
        try:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                model.generate(**gen_kwargs)
        except BaseException as exc:  # reported to the consumer below
            failure.append(exc)
            streamer.end()

    started = time.perf_counter()
    thread = threading.Thread(target=run, name="tuneterm-generate", daemon=True)
    thread.start()
    ids: list[int] = []
    last_tok: int | None = None
    emitted = 0
    stopped = False
    stops = [s for s in params.stop if s]
    hold = max((len(s) for s in stops), default=1) - 1
    eos = set(_eos_ids(model, tokenizer))
    try:
        while True:
            tok = streamer.q.get()
            if tok is None:
                break
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
                yield piece
        if not stopped:
            thread.join()
            if failure:
                exc = failure[0]
                raise RuntimeFailure("generation failed", [("problem", f"{type(exc).__name__}: {exc}")]) from exc
            text = tokenizer.decode(ids, skip_special_tokens=True)
            cut = _stop_index(text, stops, emitted)
            if cut is not None:
                stopped = True
                text = text[:cut]
            if len(text) > emitted:
                yield text[emitted:]
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
    if stopped:
        stats.finish_reason = "stop"
    elif cancel is not None and cancel.is_set():
        stats.finish_reason = "cancelled"
    elif stats.completion_tokens >= params.max_new_tokens and last_tok not in eos:
        stats.finish_reason = "length"


def _stop_index(text: str, stops: list[str], emitted: int) -> int | None:
    """Where the first stop string starts in ``text`` (searching only what could be new)."""
    found = None
    for s in stops:
        i = text.find(s, max(0, emitted - len(s) + 1))
        if i >= 0 and (found is None or i < found):
            found = i
    return found


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
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


def generate_text(model: Any, tokenizer: Any, messages: list[dict], params: GenerationParams) -> tuple[str, GenerationStats]:
    stats = GenerationStats()
    text = "".join(stream_chat(model, tokenizer, messages, params, stats))
    return text, stats
