"""Which tokens of an example are trained on: a long-lived helper process for the TUI.

    python -m tuneterm.workers.mask_preview --model REF

The TUI never imports transformers; it starts this process once per model and talks JSON
lines over stdin/stdout. The first line out is ``{"ready": true, ...}`` (or ``{"error": ...}``).
Then, one request per line:

    {"op": "mask", "example": {...}}     -> {"tokens": [[text, trained], ...], "n_tokens", "n_trained"}
    {"op": "lengths", "path": "x.jsonl"} -> {"lengths": [[line, n_tokens], ...], "limit": N}

The mask follows the usual assistant-only loss: render the conversation with the model's chat
template; an assistant turn's span is what rendering ``messages[:i+1]`` adds to rendering
``messages[:i]`` with the generation prompt (its content and end-of-turn marker). Turns with
``"weight": 0`` are not trained; everything else (system, user, tool, template markup) is masked.
Errors are ``{"error": TunetermError.to_dict()}``; the process keeps serving.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tuneterm.core.datasets.schemas import messages_of as conversation  # chat, or a pair's prompt + preferred reply
from tuneterm.core.errors import InputError, TunetermError


def _clean(messages: list[dict]) -> list[dict]:
    keep = ("role", "content", "tool_calls", "tool_call_id", "name")
    return [{k: v for k, v in m.items() if k in keep} for m in messages]


def spans_for(tokenizer: Any, messages: list[dict], tools=None) -> tuple[str, list[tuple[int, int]]]:
    """The training code's own spans (:mod:`tuneterm.core.chat_templates`), so the view is what training does."""
    from tuneterm.core import chat_templates
    from tuneterm.core.errors import DatasetError

    try:
        return chat_templates.assistant_spans(tokenizer, messages, tools)
    except chat_templates.TemplateRenderError as exc:
        raise DatasetError("the model's chat template cannot render this conversation", [("problem", str(exc))],
                           "run `tuneterm data validate --model MODEL` to see which rows") from exc


def mask_tokens(tokenizer: Any, example: dict) -> dict:
    messages = conversation(example)
    if not messages:
        raise InputError("the example has no messages", hint="a chat example is {\"messages\": [...]}")
    text, spans = spans_for(tokenizer, messages, example.get("tools"))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tokens = []
    for start, end in enc["offset_mapping"]:
        trained = end > start and any(a <= start < b for a, b in spans)
        tokens.append([text[start:end], trained])
    n_trained = sum(1 for _, t in tokens if t)
    return {"tokens": tokens, "n_tokens": len(tokens), "n_trained": n_trained}


def lengths(tokenizer: Any, path: str, limit: int = 100_000) -> dict:
    from tuneterm.core.datasets.formats import iter_records

    out = []
    for rec in iter_records(path):
        if rec.example is None or not isinstance(rec.example, dict):
            continue
        messages = _clean(conversation(rec.example))
        if not messages:
            continue
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception:  # a pattern the template rejects: count the contents
            text = " ".join(str(m.get("content") or "") for m in messages)
        out.append([rec.line, len(tokenizer(text, add_special_tokens=False)["input_ids"])])
        if len(out) >= limit:
            break
    max_len = getattr(tokenizer, "model_max_length", None)
    return {"lengths": out, "limit": int(max_len) if isinstance(max_len, int) and max_len < 10**7 else None}


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _error(exc: BaseException) -> dict:
    if isinstance(exc, TunetermError):
        return {"error": exc.to_dict()}
    return {"error": {"title": f"{type(exc).__name__}: {exc}", "facts": {}, "hint": "", "error": "RuntimeFailure"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneterm.workers.mask_preview")
    parser.add_argument("--model", required=True)
    args = parser.parse_args(argv)
    try:
        from tuneterm.workers.loading import load_tokenizer

        tokenizer = load_tokenizer(args.model)
        if not getattr(tokenizer, "chat_template", None):
            raise InputError(f"{args.model} has no chat template", [("model", args.model)],
                             "pick an instruct/chat model; a base model needs a template in its recipe")
    except Exception as exc:  # noqa: BLE001 - reported to the TUI, which shows it
        _emit(_error(exc))
        return 1
    _emit({"ready": True, "model": args.model, "tokenizer": type(tokenizer).__name__})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "mask":
                _emit(mask_tokens(tokenizer, request["example"]))
            elif op == "lengths":
                _emit(lengths(tokenizer, request["path"]))
            else:
                raise InputError(f"unknown op {op!r}", hint="use mask or lengths")
        except Exception as exc:  # noqa: BLE001
            _emit(_error(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
