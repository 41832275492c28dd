"""Token counters for dataset stats and limits: the right tokenizer for the target model.

- OpenAI models (``openai:gpt-4o-mini``, ``gpt-4.1-mini-2025-04-14``, ``ft:...``): tiktoken through
  :mod:`tuneterm.core.openai_tokens` (the cookbook's count, plus tools), limits from the
  fine-tuning guide (shared/reference/openai-fine-tuning.md §4).
- Local models (the embedded default, ``hf:``, a folder, ``job:``): the model's HF tokenizer
  (loaded through :mod:`tuneterm.workers.loading`, imported only here, inside a function).
  Content tokens are exact (one batched call to the fast tokenizer); the chat template's
  overhead is measured once per pattern of roles by rendering the template with empty contents.
  The limit is the tokenizer's ``model_max_length``, else the config's ``max_position_embeddings``.

With no model, :func:`counter_for` uses the settings' ``default_model`` (the embedded
SmolLM2-135M-Instruct unless configured).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from tuneterm.core.errors import InputError

# Max tokens per training example (base model prefix -> limit), longest prefix wins.
OPENAI_LIMITS: list[tuple[str, int]] = sorted([
    ("gpt-3.5-turbo-0613", 4096), ("gpt-3.5-turbo", 16385), ("gpt-4-0613", 8192),
    ("gpt-4o", 65536), ("gpt-4.1-mini", 32768), ("gpt-4.1-nano", 32768), ("gpt-4.1", 65536),
    ("babbage-002", 4096), ("davinci-002", 4096), ("o4-mini", 65536),
], key=lambda kv: -len(kv[0]))

_OPENAI_NAME = re.compile(r"^(ft:|gpt-|o[1345](-|$)|chatgpt-|davinci-002|babbage-002)")


def is_openai_model(model: str | None) -> bool:
    return bool(model) and (model.startswith("openai:") or bool(_OPENAI_NAME.match(model)))


def openai_name(model: str) -> str:
    return model[len("openai:"):] if model.startswith("openai:") else model


def openai_limit(model: str) -> int | None:
    from tuneterm.core import openai_tokens

    base = openai_tokens.base_model(openai_name(model))
    for prefix, limit in OPENAI_LIMITS:
        if base.startswith(prefix):
            return limit
    return None


class TokenCounter:
    """``count_many(examples) -> list[int]``; ``name`` says which tokenizer, ``limit`` the cutoff."""

    name: str = ""
    limit: int | None = None
    model: str = ""
    is_openai: bool = False

    def count_many(self, examples: list[dict]) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def template_problems(self, examples: list[dict]) -> list[tuple[str, str] | None]:
        """Per example, what the model's chat template does to it (None: nothing); see HFCounter."""
        return [None] * len(examples)


class OpenAICounter(TokenCounter):
    is_openai = True

    def __init__(self, model: str) -> None:
        from tuneterm.core import openai_tokens

        self.model = openai_name(model)
        self._counter = openai_tokens.counter_for(self.model)
        self.name = f"tiktoken {self._counter.encoding_name} ({openai_tokens.base_model(self.model)})"
        self.limit = openai_limit(self.model)

    def count_many(self, examples: list[dict]) -> list[int]:
        example = self._counter.example
        out = []
        for ex in examples:
            try:
                out.append(example(ex))
            except (TypeError, AttributeError, ValueError):  # a shape the counter does not know: its JSON text
                out.append(len(self._counter.enc.encode_ordinary(json.dumps(ex, ensure_ascii=False))))
        return out


def _content_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") if isinstance(p, dict) and isinstance(p.get("text"), str)
                       else p if isinstance(p, str) else "" for p in value)
    return "" if value is None else json.dumps(value, ensure_ascii=False)


def _chat_messages(example: dict) -> list[dict]:
    """The messages a model sees for one example (a DPO pair: prompt + preferred reply)."""
    from tuneterm.core.datasets.schemas import messages_of

    return messages_of(example)


def _config_limit(tok: Any) -> int | None:
    """The model's context length from config.json next to the tokenizer, if there is one."""
    from pathlib import Path

    config = Path(str(getattr(tok, "name_or_path", "") or "")) / "config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


class HFCounter(TokenCounter):
    def __init__(self, model: str) -> None:
        from tuneterm.workers.loading import load_tokenizer  # deferred: imports transformers/torch

        self.model = model
        self.tok = load_tokenizer(model)
        self.name = f"HF tokenizer of {model}"
        max_len = getattr(self.tok, "model_max_length", None)
        self.limit = int(max_len) if isinstance(max_len, int) and 0 < max_len < 10**7 else _config_limit(self.tok)
        self._overhead: dict[tuple, int] = {}
        self._cache: dict[str, int] = {}
        self._has_template = bool(getattr(self.tok, "chat_template", None))

    def template_problems(self, examples: list[dict]) -> list[tuple[str, str] | None]:
        """Per example: (kind, message) when the model's chat template changes it (a system role it
        lacks, folded into the first user turn) or cannot render it; None when it renders as is."""
        from tuneterm.core import chat_templates

        out: list[tuple[str, str] | None] = []
        for ex in examples:
            msgs = _chat_messages(ex) if isinstance(ex, dict) else []
            if not self._has_template or not msgs:
                out.append(None)
                continue
            try:
                chat_templates.render(self.tok, msgs)
            except chat_templates.TemplateRenderError as exc:
                out.append(("template_error", f"the chat template of {self.model} cannot render it: {exc}"))
                continue
            if any(m.get("role") == "system" for m in msgs) and chat_templates.rejects_system(self.tok):
                out.append(("template_folds_system", f"{self.model}'s template has no system role; the system "
                                                     "text is folded into the first user turn"))
            else:
                out.append(None)
        return out

    def _render_len(self, messages: list[dict]) -> int:
        from tuneterm.core.chat_templates import prepare

        text = self.tok.apply_chat_template(prepare(self.tok, messages, notice=False), tokenize=False)
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def _overhead_for(self, roles: tuple) -> int:
        if roles not in self._overhead:
            if not self._has_template:
                value = 0
            else:
                try:
                    value = self._render_len([{"role": r, "content": ""} for r in roles])
                except Exception:  # a template that rejects this pattern: count 4 per message
                    value = 4 * len(roles)
            if len(self._overhead) < 4096:
                self._overhead[roles] = value
            return value
        return self._overhead[roles]

    def count_many(self, examples: list[dict]) -> list[int]:
        texts: list[str] = []
        owners: list[int] = []
        totals: list[int] = []
        for i, ex in enumerate(examples):
            msgs = _chat_messages(ex) if isinstance(ex, dict) else []
            roles = tuple(str(m.get("role")) for m in msgs)
            totals.append(self._overhead_for(roles) if msgs else 0)
            for m in msgs:
                texts.append(_content_text(m.get("content")))
                owners.append(i)
                for call in m.get("tool_calls") or [] if isinstance(m.get("tool_calls"), list) else []:
                    texts.append(json.dumps(call, ensure_ascii=False))
                    owners.append(i)
        if texts:
            sizes = self._sizes(texts)
            for owner, text in zip(owners, texts):
                totals[owner] += sizes[text]
        return totals

    def _encode_lengths(self, texts: list[str]) -> list[int]:
        """Token counts without special tokens. The Rust backend directly when it has no
        truncation or padding configured (about twice as fast as the Python wrapper)."""
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is not None and backend.truncation is None and backend.padding is None:
            encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
            return [len(e.ids) for e in encode(texts, add_special_tokens=False)]
        ids = self.tok(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return [len(x) for x in ids]

    def _sizes(self, texts: list[str]) -> dict[str, int]:
        """Token count of each distinct text; system prompts and labels repeat, so they are cached."""
        cache = self._cache
        todo = [t for t in dict.fromkeys(texts) if t not in cache]
        sizes = {}
        if todo:
            try:
                lens = self._encode_lengths(todo)
            except TypeError:  # lone surrogates: the fast tokenizer refuses them; count U+FFFD instead
                lens = self._encode_lengths([t.encode("utf-8", "replace").decode("utf-8") for t in todo])
            for text, n in zip(todo, lens):
                sizes[text] = n
                if len(text) <= 512 and len(cache) < 20000:
                    cache[text] = n
        return {t: sizes[t] if t in sizes else cache[t] for t in texts}


_COUNTERS: dict[str, TokenCounter] = {}


def _model_or_default(model: str | None) -> str:
    if model:
        return model
    from tuneterm.core.settings import get_settings

    return get_settings().default_model


def loading_text(model: str | None = None) -> str | None:
    """``loading the tokenizer of MODEL`` while :func:`counter_for` has yet to load a local model's
    tokenizer (seconds: transformers, torch and the tokenizer files); None when it is loaded, or
    for tiktoken (OpenAI models), which loads at once."""
    model = _model_or_default(model)
    if model in _COUNTERS or is_openai_model(model):
        return None
    return f"loading the tokenizer of {model}"


def counter_for(model: str | None = None) -> TokenCounter:
    """The counter for ``model`` (None: the settings' default model); loaded once per process."""
    model = _model_or_default(model)
    if model not in _COUNTERS:
        _COUNTERS[model] = _new_counter(model)
    return _COUNTERS[model]


def _new_counter(model: str) -> TokenCounter:
    if is_openai_model(model):
        return OpenAICounter(model)
    from tuneterm.core import modelref

    ref = modelref.parse(model)
    if ref.kind == "http":
        raise InputError("token counts need a tokenizer, and a server URL has none here", [("model", model)],
                         "pass the model the server runs (e.g. hf:ORG/NAME or a local folder)")
    return HFCounter(model)


def count_all(counter: TokenCounter, examples: Iterable[dict], batch: int = 512) -> Iterable[int]:
    buf: list[dict] = []
    for ex in examples:
        buf.append(ex)
        if len(buf) >= batch:
            yield from counter.count_many(buf)
            buf = []
    if buf:
        yield from counter.count_many(buf)
