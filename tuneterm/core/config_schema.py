"""One settings mechanism for recipes and quantize configs: pydantic models with ``extra="forbid"``,
choices as ``Literal`` and bounds as ``Field(ge/gt/le/lt)``, built from the commented TOML defaults
(the defaults stay the schema and the help text). A failed check becomes one ``ConfigError`` with
the same words whichever command or screen asked: ``KEY must be one of ...``, ``KEY must be at
least N``, ``unknown setting``, with "did you mean" hints.

Torch-free; pydantic is imported by the functions here, which run only when a job is planned.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, Union

from tuneterm.core.errors import ConfigError

# bounds per flat key: {"ge": 0, "lt": 1, ...} (pydantic's names)
Bounds = dict[str, dict[str, float]]


def close_hint(value: str, candidates) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in candidates], n=3, cutoff=0.5)
    return ("did you mean " + " or ".join(close) + "?") if close else ""


def _annotation(like: Any, key: str, choices: dict, types: dict):
    if key in types:
        return types[key]
    if key in choices:
        return Literal[tuple(choices[key])]
    if like is None:
        return Union[float, None]
    if isinstance(like, bool):
        return bool
    if isinstance(like, int):
        return int
    if isinstance(like, float):
        return float
    if isinstance(like, list):
        return list
    return type(like)


def model_for(name: str, defaults: dict, *, choices: dict | None = None, bounds: Bounds | None = None,
              types: dict | None = None, prefix: str = ""):
    """A pydantic model (nested per TOML table) whose fields are the keys of ``defaults``."""
    from pydantic import ConfigDict, Field, create_model

    choices, bounds, types = choices or {}, bounds or {}, types or {}
    fields: dict[str, Any] = {}
    for key, like in defaults.items():
        flat = f"{prefix}{key}"
        if isinstance(like, dict):
            sub = model_for(f"{name}_{key}", like, choices=choices, bounds=bounds, types=types, prefix=flat + ".")
            fields[key] = (sub, Field(default_factory=sub))
            continue
        fields[key] = (_annotation(like, flat, choices, types), Field(default=like, **bounds.get(flat, {})))
    return create_model(name, __config__=ConfigDict(extra="forbid", strict=True), **fields)


def check(model, data: dict, *, source: str = "config", bounds: Bounds | None = None,
          choices: dict | None = None) -> None:
    """Validate ``data`` (nested dicts) against ``model``; the first problem as a ConfigError."""
    from pydantic import ValidationError

    try:
        model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise error_for(err, source, bounds or {}, choices or {}, model) from None


def _known(model, prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            out += _known(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def error_for(err: dict, source: str, bounds: Bounds, choices: dict, model) -> ConfigError:
    key = ".".join(str(p) for p in err["loc"])
    value = err.get("input")
    kind = err["type"]
    got = [("got", repr(value)), ("source", source)]
    if kind == "extra_forbidden":
        known = _known(model)
        hint = close_hint(key, known)
        if not hint:
            section = key.rpartition(".")[0]
            same = [k for k in known if k.rpartition(".")[0] == section]
            hint = "known: " + ", ".join(same)
        return ConfigError(f"unknown setting {key!r}", [("source", source)], hint)
    if kind == "literal_error":
        allowed = choices.get(key) or []
        return ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}", got, close_hint(str(value), allowed))
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        b = bounds.get(key, {})
        low, high = b.get("ge", b.get("gt")), b.get("le", b.get("lt"))
        if "ge" in b and "le" in b:
            return ConfigError(f"{key} must be between {_num(low)} and {_num(high)}", got)
        words = {"greater_than_equal": f"at least {_num(low)}", "greater_than": f"above {_num(low)}",
                 "less_than": f"below {_num(high)}", "less_than_equal": f"at most {_num(high)}"}[kind]
        return ConfigError(f"{key} must be {words}", got)
    expected = {"bool_type": "true or false", "int_type": "a whole number", "float_type": "a number",
                "string_type": "a string", "list_type": "a list"}.get(kind.split(".")[0], err.get("msg", "valid"))
    return ConfigError(f"{key} must be {expected}", got)


def _num(x) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)
