"""Structured output: ``response_format`` ``json_object`` and ``json_schema`` constrain decoding.

The grammar engine is xgrammar: it compiles a JSON schema into a token-level automaton once (a
cache per tokenizer and schema) and then, per decoded token, fills a vocabulary bitmask in
microseconds and masks the logits in place; it is maintained by the MLC team, used by vLLM and
SGLang as their default, and ships CPU wheels. The decode loop (:mod:`tuneterm.workers.batcher`)
sees only :class:`Constraint`: ``mask(logits_row)`` before a token is picked, ``accept(token)``
after. A schema xgrammar cannot compile is a 400 naming ``response_format``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from tuneterm.workers.serve.schemas import ApiError

_lock = threading.Lock()
_compilers: dict[int, Any] = {}  # id(tokenizer) -> (tokenizer, xgrammar.GrammarCompiler)
_compiled: dict[tuple[int, str], Any] = {}


class Constraint:
    """One request's grammar state: masks the logits row before sampling, advances after it."""

    def __init__(self, compiled: Any) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, compiled.tokenizer_info.vocab_size)

    def mask(self, logits_row: Any) -> None:
        """``logits_row``: a [1, vocab] view of the batch's logits, masked in place."""
        self.matcher.fill_next_token_bitmask(self.bitmask)
        self._xgr.apply_token_bitmask_inplace(logits_row, self.bitmask.to(logits_row.device))

    def accept(self, token: int) -> None:
        if not self.matcher.is_terminated():
            self.matcher.accept_token(token)


def response_format_schema(response_format: Any) -> str | None:
    """The JSON schema a ``response_format`` asks for (None for plain text); 400 when malformed."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ApiError(400, "response_format must be an object", param="response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return json.dumps({"type": "object"})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise ApiError(400, "response_format.json_schema.schema must be a JSON schema object",
                           param="response_format.json_schema.schema")
        return json.dumps(spec["schema"], sort_keys=True)
    raise ApiError(400, f"response_format.type must be text, json_object or json_schema, got {kind!r}",
                   param="response_format.type")


def constraint_factory(schema: Any, tokenizer: Any, vocab_size: int, param: str = "response_format") -> Any:
    """Compile ``schema`` (a JSON schema string, or an ``xgrammar.Grammar``) for ``tokenizer``
    (cached) and return a maker of fresh :class:`Constraint`s."""
    try:
        import xgrammar as xgr
    except ImportError:
        raise ApiError(400, f"{param}: constrained decoding needs xgrammar, which is not installed on this "
                            "server (pip install 'tuneterm[structured]')", param=param) from None
    with _lock:
        entry = _compilers.get(id(tokenizer))
        if entry is None or entry[0] is not tokenizer:
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
            entry = (tokenizer, xgr.GrammarCompiler(info))
            _compilers[id(tokenizer)] = entry
        key = (id(tokenizer), schema if isinstance(schema, str) else str(schema))
        compiled = _compiled.get(key)
        if compiled is None:
            try:
                if isinstance(schema, str):
                    compiled = entry[1].compile_json_schema(schema, any_whitespace=False, strict_mode=True)
                else:
                    compiled = entry[1].compile_grammar(schema)
            except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError with its reason
                reason = str(exc).split("] ", 1)[-1].strip()[:300]
                raise ApiError(400, f"{param}: the JSON schema cannot be compiled: {reason}", param=param) from None
            _compiled[key] = compiled
    return lambda: Constraint(compiled)
