"""Token counts for hosted models that are not OpenAI's: exact where the tokenizer is on this machine.

Each price row names its tokenizer (``tokenizer`` in ``tuneterm/data/<provider>_prices.toml``):

- ``""`` (OpenAI and Azure's OpenAI models): tiktoken, by :mod:`tuneterm.core.openai_tokens` (the
  cookbook's per-message overhead: 3 per message, 1 per name, 3 to prime the reply).
- ``llama3``: the tokenizer and chat format that ``llama-models`` ships (``pip install
  tuneterm[hosted-tokens]``): ``<|begin_of_text|>`` then per message a header
  (``<|start_header_id|>role<|end_header_id|>\\n\\n``), the content and ``<|eot_id|>``
  (llama_models.llama3.chat_format.ChatFormat.encode_message).
- ``mistral:FILE``: a tokenizer that ``mistral-common`` ships in ``mistral_common/data``; the whole
  conversation is encoded by ``encode_chat_completion`` in fine-tuning mode (``[INST]``/``[/INST]``,
  ``<s>``/``</s>`` control tokens included).
- any model whose id is a Hugging Face repo in the local HF cache: its own tokenizer and chat
  template (``local_files_only``; nothing is downloaded).
- otherwise ``estimate``: the o200k_base count, marked as an estimate with the error band
  :data:`ESTIMATE_BAND` measured on the sample data (see its comment).

What is billed per provider: the billed sequence is the tokenized training example as above;
OpenAI and Azure cap each example at the model's limit; see each provider module's ``BILLING``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from tuneterm.core.errors import ConfigError

# The relative gap between the o200k_base count and a model's own tokenizer, summed over the 888 chat
# examples of the shipped samples (tickets, extraction, domain_qa, general): llama3 +1.6 %, mistral
# tekken_240911 -8.9 %, mistral v3 SentencePiece +1.5 %; the band is the largest, rounded up.
# Measured with `python -m tuneterm.core.providers.tokens` on 2026-12-05.
ESTIMATE_BAND = 0.10
TIKTOKEN = ("o200k_base", "cl100k_base")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def hf_cached(repo: str) -> bool:
    """True when ``repo``'s tokenizer files are in the local Hugging Face cache."""
    if repo.count("/") != 1 or not _installed("huggingface_hub"):
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo, "tokenizer_config.json")
    except ValueError:  # not a valid repo id
        return False
    return isinstance(hit, str) and os.path.isfile(hit)


def tokenizer_key(row, provider: str = "openai") -> str:
    """The counter to use for one price row (see the module docstring)."""
    spec = row.tokenizer
    if not spec:
        from tuneterm.core.openai_tokens import encoding_name_for

        return encoding_name_for(row.id)
    if hf_cached(row.id):
        return f"hf:{row.id}"
    if spec == "llama3" and _installed("llama_models"):
        return "llama3"
    if spec.startswith("mistral:") and _installed("mistral_common") and (
            spec.endswith(".json") or _installed("sentencepiece")):
        return spec
    if spec.startswith("hf:") and hf_cached(spec[3:]):
        return spec
    return "estimate"


def describe(key: str) -> tuple[bool, float]:
    """(exact?, relative error band) of a counter."""
    if key == "estimate":
        return False, ESTIMATE_BAND
    return True, 0.05 if key in TIKTOKEN else 0.0


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _message_text(msg: Any) -> tuple[str, str]:
    if not isinstance(msg, dict):
        return "user", _text(msg)
    text = _text(msg.get("content"))
    for call in msg.get("tool_calls") or []:
        text += _text(call.get("function") if isinstance(call, dict) else call)
    if msg.get("function_call"):
        text += _text(msg["function_call"])
    return str(msg.get("role", "user")), text


class _Base:
    """The counting interface of :class:`tuneterm.core.openai_tokens._Counter`."""

    encoding_name = ""

    def n(self, text: Any) -> int:
        raise NotImplementedError

    def content(self, value: Any) -> int:
        return self.n(_text(value))

    def call(self, call: Any) -> int:
        return self.n(_text(call.get("function") if isinstance(call, dict) else call))

    def message(self, msg: Any) -> int:
        raise NotImplementedError

    def messages(self, messages: Any) -> int:
        return sum(self.message(m) for m in messages) if isinstance(messages, list) else 0

    def chat(self, messages: Any, tools: Any = None, functions: Any = None) -> int:
        extra = self.n(json.dumps(tools, ensure_ascii=False)) if tools else 0
        return self.messages(messages) + extra

    def example(self, example: Any) -> int:
        if not isinstance(example, dict):
            return 0
        if isinstance(example.get("messages"), list):
            return self.conversation(example["messages"], example.get("tools"))
        if isinstance(example.get("input"), dict):
            prompt = example["input"].get("messages") or []
            total = 0
            for key in ("preferred_output", "non_preferred_output"):
                out = example.get(key) or []
                total += self.conversation(list(prompt) + (out if isinstance(out, list) else [out]), None)
            return total
        if "prompt" in example or "completion" in example:
            return self.n(example.get("prompt")) + self.n(example.get("completion"))
        if isinstance(example.get("text"), str):
            return self.n(example["text"])
        return 0

    def conversation(self, messages: list, tools: Any) -> int:
        return self.chat(messages, tools)


class _Llama3(_Base):
    encoding_name = "llama3"

    def __init__(self) -> None:
        from llama_models.llama3.chat_format import ChatFormat
        from llama_models.llama3.tokenizer import Tokenizer

        self.tok = Tokenizer.get_instance()
        self.fmt = ChatFormat(self.tok)

    def n(self, text: Any) -> int:
        text = _text(text)
        return len(self.tok.encode(text, bos=False, eos=False)) if text else 0

    def message(self, msg: Any) -> int:
        role, text = _message_text(msg)
        role = role if role in ("system", "user", "assistant", "ipython") else "ipython" if role == "tool" else "user"
        # header (4 tokens: start, role, end, "\n\n") + content + <|eot_id|>, as ChatFormat.encode_message
        return len(self.fmt._encode_header(role)) + self.n(text) + 1

    def conversation(self, messages: list, tools: Any) -> int:
        return 1 + self.chat(messages, tools)  # <|begin_of_text|>


class _Mistral(_Base):
    def __init__(self, filename: str) -> None:
        import mistral_common
        from mistral_common.protocol.instruct.validator import ValidationMode
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        path = os.path.join(os.path.dirname(mistral_common.__file__), "data", filename)
        if not os.path.isfile(path):
            raise ConfigError("mistral-common does not ship this tokenizer", [("file", filename)],
                              "upgrade mistral-common, or fix the `tokenizer` of the price row")
        self.encoding_name = f"mistral:{filename}"
        self.mt = MistralTokenizer.from_file(path, mode=ValidationMode.finetuning)
        self.raw = self.mt.instruct_tokenizer.tokenizer

    def n(self, text: Any) -> int:
        text = _text(text)
        return len(self.raw.encode(text, bos=False, eos=False)) if text else 0

    def message(self, msg: Any) -> int:
        return self.n(_message_text(msg)[1]) + 2  # [INST]/[/INST] or </s> around each turn

    def conversation(self, messages: list, tools: Any) -> int:
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        try:
            plain = [{"role": m.get("role"), "content": _text(m.get("content"))} for m in messages
                     if isinstance(m, dict)]
            request = ChatCompletionRequest.from_openai(messages=plain)
            return len(self.mt.encode_chat_completion(request).tokens)
        except Exception:  # a shape the template refuses (tool turns, odd order): per-message count
            return 1 + self.chat(messages, tools)


class _HF(_Base):
    def __init__(self, repo: str) -> None:
        from transformers import AutoTokenizer  # deferred: heavy, only for models in the HF cache

        self.encoding_name = f"hf:{repo}"
        self.tok = AutoTokenizer.from_pretrained(repo, local_files_only=True)

    def n(self, text: Any) -> int:
        text = _text(text)
        return len(self.tok.encode(text, add_special_tokens=False)) if text else 0

    def message(self, msg: Any) -> int:
        return self.n(_message_text(msg)[1]) + 4

    def conversation(self, messages: list, tools: Any) -> int:
        plain = [{"role": r, "content": t} for r, t in map(_message_text, messages)]
        try:
            return len(self.tok.apply_chat_template(plain, tokenize=True))
        except Exception:  # no chat template: content plus a per-message estimate
            return self.chat(messages, tools)


class _Estimate:
    """o200k_base counts standing in for an unknown tokenizer (see :data:`ESTIMATE_BAND`)."""

    encoding_name = "estimate"

    def __init__(self) -> None:
        from tuneterm.core.openai_tokens import counter_for_encoding

        self._inner = counter_for_encoding("o200k_base")

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


_COUNTERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def counter(key: str):
    """The cached counter for a tokenizer key (``o200k_base``, ``llama3``, ``mistral:F``, ``hf:R``, ``estimate``)."""
    with _LOCK:
        found = _COUNTERS.get(key)
        if found is None:
            if key in TIKTOKEN:
                from tuneterm.core.openai_tokens import counter_for_encoding

                found = counter_for_encoding(key)
            elif key == "llama3":
                found = _Llama3()
            elif key.startswith("mistral:"):
                found = _Mistral(key.split(":", 1)[1])
            elif key.startswith("hf:"):
                found = _HF(key[3:])
            elif key == "estimate":
                found = _Estimate()
            else:
                raise ConfigError("unknown tokenizer", [("tokenizer", key)],
                                  "use llama3, mistral:FILE, hf:REPO, estimate or a tiktoken encoding")
            _COUNTERS[key] = found
        return found


def _measure() -> None:  # pragma: no cover - the measurement behind ESTIMATE_BAND
    from tuneterm.core.resources import sample_data_dir

    rows = []
    for name in ("tickets", "extraction", "domain_qa", "general"):
        folder = sample_data_dir() / name
        for path in sorted(folder.glob("*.jsonl")):
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if isinstance(r.get("messages"), list)]
    base = sum(counter("o200k_base").example(r) for r in rows)
    keys = ["llama3", "mistral:tekken_240911.json", "mistral:mistral_instruct_tokenizer_240323.model.v3"]
    if hf_cached("HuggingFaceTB/SmolLM2-135M-Instruct"):
        keys.append("hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    print(f"{len(rows)} examples, o200k_base {base} tokens")
    for key in keys:
        own = sum(counter(key).example(r) for r in rows)
        print(f"{key:<55} {own:>8}  {100 * (own - base) / own:+.1f} % vs o200k")


if __name__ == "__main__":  # pragma: no cover
    _measure()
