"""The gate's tokenizer check: the artifact must tokenize and template exactly as its source does.

Run before the distribution metrics. For a transformers artifact the tokenizer saved next to the
weights is compared; for a GGUF file the tokenizer is read back from the file itself (with llama.cpp's
own encoder when llama-cpp-python is installed, else the file's token list, merges and ids). Checked:
sample texts encode to the same ids, BOS/EOS/pad ids are the same, and the chat template renders the
same prompt. Each mismatch is one failure naming the first differing text.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

SAMPLES = [
    "What is the capital of France?",
    "  leading spaces, trailing spaces  ",
    "Numbers 1234567 and 3.14159; code: def f(x): return x ** 2",
    "naïve café, Straße, 東京, Ελληνικά, emoji 😀",
    "line one\nline two\n\n\ttabbed",
]
PROMPT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Say hello."}]


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _specials(tokenizer: Any) -> dict[str, int | None]:
    return {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}


def _samples(source: Any) -> list[str]:
    texts = list(SAMPLES)
    if source.eos_token:
        texts.append(f"end of turn{source.eos_token}next")
    return texts


def _prompt(tokenizer: Any) -> str | None:
    from tuneterm.core.chat_templates import TemplateRenderError, render

    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        return render(tokenizer, PROMPT, add_generation_prompt=True)
    except TemplateRenderError:
        return None


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def compare(source: Any, artifact: Any) -> list[str]:
    """Failures of a transformers ``artifact`` tokenizer against ``source``."""
    failures = []
    for text in _samples(source):
        a, b = _ids(source, text), _ids(artifact, text)
        if a != b:
            failures.append(f"tokenizer: {_short(text)} encodes to {b[:8]} in the artifact, {a[:8]} in the source")
            break
    for name, want in _specials(source).items():
        got = _specials(artifact)[name]
        if got != want:
            failures.append(f"tokenizer: {name} token id is {got} in the artifact, {want} in the source")
    if _prompt(source) != _prompt(artifact):
        failures.append("tokenizer: the chat template renders a different prompt in the artifact")
    return failures


def compare_gguf(source: Any, path: Path) -> list[str]:
    """Failures of the tokenizer stored in the GGUF file ``path`` against ``source``."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key: str):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    failures = []
    tokens = field("tokenizer.ggml.tokens") or []
    texts = _samples(source)
    if importlib.util.find_spec("llama_cpp") is not None:
        from llama_cpp import Llama

        llm = Llama(str(path), vocab_only=True, verbose=False)
        try:
            for text in texts:
                a, b = _ids(source, text), llm.tokenize(text.encode(), add_bos=False, special=True)
                if a != b:
                    failures.append(f"tokenizer: {_short(text)} encodes to {b[:8]} in the GGUF (llama.cpp), "
                                    f"{a[:8]} in the source")
                    break
        finally:
            llm.close()
    else:  # the source's ids must name the same tokens in the file
        for text in texts:
            ids = _ids(source, text)
            want = source.convert_ids_to_tokens(ids)
            got = [tokens[i] if i < len(tokens) else None for i in ids]
            if got != want:
                failures.append(f"tokenizer: {_short(text)} maps to other tokens in the GGUF's vocabulary")
                break
    for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        want = _specials(source)[name]
        got = field(f"tokenizer.ggml.{key}_token_id")
        if want is not None and got is not None and int(got) != int(want):
            failures.append(f"tokenizer: {name} token id is {got} in the GGUF, {want} in the source")
        elif want is not None and got is None and name != "pad":
            failures.append(f"tokenizer: the GGUF has no {name} token id (the source's is {want})")
    if (field("tokenizer.chat_template") or None) != (getattr(source, "chat_template", None) or None):
        failures.append("tokenizer: the GGUF's chat template differs from the source's")
    return failures
