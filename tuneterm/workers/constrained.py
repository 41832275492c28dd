"""A JSON schema as a constraint on ``model.generate`` (eval's generate tasks, ``tuneterm chat
--json-schema``): the grammar path of ``tuneterm serve`` (:mod:`tuneterm.workers.serve.structured`,
xgrammar), as a transformers logits processor with one grammar state per row of the batch.

A row's state advances with the token picked for it at the step before; a row whose grammar has
ended (its answer closed and the end token picked) is left alone while the others go on.
"""

from __future__ import annotations

import json
from typing import Any

from tuneterm.core.errors import InputError, UsageError


def load_schema_file(path: str, what: str = "--json-schema") -> dict:
    """A JSON schema from a file, checked to be a JSON object."""
    from pathlib import Path

    p = Path(path).expanduser()
    try:
        schema = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError("cannot read the JSON schema", [(what, str(p)), ("problem", exc.strerror or str(exc))]) from exc
    except ValueError as exc:
        raise InputError("the JSON schema file is not JSON", [(what, str(p)), ("problem", str(exc))]) from exc
    if not isinstance(schema, dict):
        raise InputError("a JSON schema is a JSON object", [(what, str(p))], 'e.g. {"type": "object", ...}')
    return schema


def logits_processor(schema: dict, tokenizer: Any, vocab_size: int, what: str = "json_schema") -> Any:
    """A ``LogitsProcessorList`` that keeps every row of a ``generate`` call inside ``schema``
    (compiled once per tokenizer and schema). Errors name ``what`` (the option or spec field)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    try:
        from tuneterm.workers.serve.schemas import ApiError
        from tuneterm.workers.serve.structured import constraint_factory

        make = constraint_factory(json.dumps(schema, sort_keys=True), tokenizer, vocab_size, param=what)
    except ApiError as exc:
        if "not installed" in exc.message:
            raise UsageError("a JSON schema constraint needs xgrammar", [("option", what)],
                             "pip install 'tuneterm[structured]'") from None
        raise InputError("the JSON schema cannot be compiled", [("field", what), ("problem", exc.message)],
                         "give a JSON schema (draft 2020-12 subset: object, properties, enum, ...)") from None

    class _Schema(LogitsProcessor):
        def __init__(self) -> None:
            self.rows: list | None = None

        def __call__(self, input_ids, scores):
            if self.rows is None:
                self.rows = [make() for _ in range(scores.shape[0])]
            else:  # the token each row got at the step before
                for row, token in zip(self.rows, input_ids[:, -1].tolist()):
                    row.accept(int(token))
            for i, row in enumerate(self.rows):
                if not row.matcher.is_terminated():
                    row.mask(scores[i:i + 1])
            return scores

    return LogitsProcessorList([_Schema()])


def vocab_size(model: Any) -> int:
    """The width of the model's logits (the grammar's vocabulary)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)
