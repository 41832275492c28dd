"""Eval variants: model references, optionally with a few-shot count (``REF+3shot``). Torch-free."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuneterm.core import modelref
from tuneterm.core.errors import UsageError

_SHOTS_RE = re.compile(r"^(?P<ref>.+?)\+(?P<n>\d+)shots?$")


@dataclass
class Variant:
    vid: str  # the name used in reports (the string as given)
    ref: str  # the model reference
    shots: int | None = None  # None: the spec's fewshot.n
    parent: str | None = None  # the vid this variant is compared against
    remote: bool = False


def parse_variants(models: list[str]) -> list[Variant]:
    """``REF`` or ``REF+Nshot`` per entry; refs are checked now, before anything loads."""
    out: list[Variant] = []
    seen = set()
    for raw in models:
        raw = raw.strip()
        if not raw:
            continue
        if raw in seen:
            raise UsageError("a model is listed twice", [("model", raw)], "list each variant once")
        seen.add(raw)
        m = _SHOTS_RE.match(raw)
        ref, shots = (m.group("ref"), int(m.group("n"))) if m else (raw, None)
        parsed = modelref.parse(ref)
        out.append(Variant(vid=raw, ref=ref, shots=shots, remote=parsed.is_remote))
    if not out:
        raise UsageError("no models given", hint="--models REF[,REF...], e.g. --models smollm2-135m-instruct,job:ID")
    return out


def split_models(text: str) -> list[str]:
    """``a,b,http://h:1/v1#m`` -> entries (commas separate; a URL's own commas are not expected)."""
    return [p for p in (s.strip() for s in text.split(",")) if p]
