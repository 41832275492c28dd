"""Chat templates as model families ship them: rendering with the system role folded where a template
has none, and the character spans of the assistant replies in a rendered conversation.

Works on any Hugging Face tokenizer object (nothing is imported here at module level).

- System role: Gemma's template raises ``System role not supported``. Gemma's documented way is the
  system text at the top of the first user turn, so a conversation with a system message that the
  template refuses is rendered again with the system text folded into the first user message
  (``SYSTEM\\n\\nUSER``), and one notice line is printed per template.
- Assistant spans: where the template renders a conversation prefix by prefix (most do), each reply
  spans from the end of the prefix rendered with the generation prompt to the end of the
  conversation rendered up to that reply. Templates that do not (Qwen3 drops earlier turns' thinking,
  Phi-3 appends an end-of-text token) get spans located in the one rendering of the whole
  conversation: each reply's text is found after the previous one, and the end-of-turn token that
  follows it is included.
"""

from __future__ import annotations

import sys

_NOTICED: set[int] = set()
_REJECTS: dict[str, bool] = {}


class TemplateRenderError(ValueError):
    """The chat template cannot render this conversation (the template's own message)."""


def _clean(messages: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "weight"} for m in messages]


def fold_system(messages: list[dict]) -> list[dict]:
    """The conversation with leading system message(s) folded into the first user message."""
    system = [m for m in messages if m.get("role") == "system"]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    text = "\n\n".join(str(m.get("content") or "") for m in system if m.get("content"))
    if not text:
        return rest
    for m in rest:
        if m.get("role") == "user":
            m["content"] = f"{text}\n\n{m.get('content') or ''}"
            return rest
    return [{"role": "user", "content": text}, *rest]


def _apply(tokenizer, messages, add_generation_prompt, tools):
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **kwargs)


def rejects_system(tokenizer) -> bool:
    """Whether the tokenizer's template refuses a system message (probed once per template)."""
    key = str(getattr(tokenizer, "chat_template", None))
    if key not in _REJECTS:
        _REJECTS[key] = _probe_system(tokenizer)
    return _REJECTS[key]


def _probe_system(tokenizer) -> bool:
    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        _apply(tokenizer, probe, True, None)
    except Exception:  # noqa: BLE001 - jinja raises TemplateError (or whatever the template raises)
        try:
            _apply(tokenizer, probe[1:], True, None)
        except Exception:  # noqa: BLE001
            return False
        return True
    return False


def prepare(tokenizer, messages: list[dict], notice: bool = True) -> list[dict]:
    """The messages as this template takes them: ``weight`` dropped, system folded where refused."""
    clean = _clean(messages)
    if any(m.get("role") == "system" for m in clean) and rejects_system(tokenizer):
        key = hash(getattr(tokenizer, "chat_template", None) or "")
        if notice and key not in _NOTICED:
            _NOTICED.add(key)
            print("note: this model's chat template has no system role; the system text goes at the top of "
                  "the first user turn", file=sys.stderr)
        return fold_system(clean)
    return clean


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False, tools=None) -> str:
    """The conversation rendered by the tokenizer's chat template (system folded where refused)."""
    try:
        return _apply(tokenizer, prepare(tokenizer, messages), add_generation_prompt, tools)
    except Exception as exc:  # noqa: BLE001 - the template's own error, as text
        raise TemplateRenderError(str(exc) or type(exc).__name__) from exc


def _prefix_spans(tokenizer, messages, full, tools) -> list[tuple[int, int]] | None:
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        prefix = render(tokenizer, messages[:i], add_generation_prompt=True, tools=tools) if i else ""
        upto = render(tokenizer, messages[: i + 1], tools=tools)
        if not full.startswith(upto) or not upto.startswith(prefix):
            return None
        spans.append((len(prefix), len(upto.rstrip("\n"))))  # the reply and its end-of-turn token
    return spans


def _end_tokens(tokenizer) -> list[str]:
    names = [getattr(tokenizer, "eos_token", None)]
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>"):
        names.append(token)
    return [n for n in names if n]


def _offset_spans(tokenizer, messages, full) -> list[tuple[int, int]]:
    spans, cursor = [], 0
    ends = _end_tokens(tokenizer)
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            continue
        text = content.strip()
        at = full.find(text, cursor)
        if at < 0:
            raise TemplateRenderError(f"the template changes the text of a {message.get('role')} message, so its "
                                      "span cannot be located")
        end = at + len(text)
        cursor = end
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        rest = full[end:]
        gap = len(rest) - len(rest.lstrip(" \n"))
        for token in ends:  # the end-of-turn token right after the reply carries loss too
            if rest.startswith(token):
                end += len(token)
                break
            if rest[gap:].startswith(token) and gap <= 1:
                end += gap + len(token)
                break
        spans.append((at, end))
    return spans


def assistant_spans(tokenizer, messages: list[dict], tools=None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant replies that carry loss."""
    full = render(tokenizer, messages, tools=tools)
    spans = _prefix_spans(tokenizer, messages, full, tools)
    if spans is None:
        spans = _offset_spans(tokenizer, messages, full)
    return full, spans
