"""Eval variants: model references, few-shot references included. Torch-free.

A variant is any model reference (``tuneterm.core.modelref``): the base, ``job:ID`` artifacts
(adapters, quantized models, classifiers), ``openai:MODEL``, ``http://HOST:PORT/v1#MODEL``, and
the few-shot form ``fewshot:K[:similar|:seed=N]:POOL@REF`` (``tuneterm.core.fewshot``): REF
prompted with K examples from POOL. A few-shot variant runs on REF's model (one copy in memory
serves both) and is compared with REF when REF is in the list too.

The older ``REF+Nshot`` form is folded into ``fewshot:``: it is refused with a hint that gives
the new form (one syntax for one thing). A task's own ``fewshot:`` block (n, pool, seed) stays a
property of the task that applies to every variant, as ``num_fewshot`` does in lm-eval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuneterm.core import modelref
from tuneterm.core.errors import UsageError
from tuneterm.core.fewshot import PREFIX as FEWSHOT_PREFIX
from tuneterm.core.fewshot import FewShotSpec, parse_spec

_OLD_SHOTS_RE = re.compile(r"^(?P<ref>.+?)\+(?P<n>\d+)shots?$")


@dataclass
class EvalVariant:
    """One column of an eval: a model reference (or a few-shot prompt around one) as the user named it."""

    vid: str  # the name used in reports (the string as given)
    ref: str  # the model reference that is loaded or called (REF of a few-shot variant)
    fewshot: FewShotSpec | None = None
    parent: str | None = None  # the vid this variant is compared against
    remote: bool = False

    @property
    def shots(self) -> int | None:
        return self.fewshot.k if self.fewshot is not None else None

    @property
    def items_key(self) -> str:
        """Variants with the same key see the same prompts."""
        fs = self.fewshot
        return "" if fs is None else f"{fs.k}:{fs.strategy}:{fs.seed}:{fs.pool}"


def parse_variant(raw: str) -> EvalVariant:
    """One ``--models`` entry; the reference is checked now, before anything loads."""
    raw = raw.strip()
    old = _OLD_SHOTS_RE.match(raw)
    if old:
        raise UsageError(
            "REF+Nshot is now written as a few-shot reference",
            [("model", raw)],
            f"use fewshot:{old.group('n')}:POOL@{old.group('ref')}, e.g. "
            f"fewshot:{old.group('n')}:sample_data/fewshot/pool.jsonl@{old.group('ref')} "
            "(or set the task's fewshot.n to give every variant the task's own examples)",
        )
    if raw.startswith(FEWSHOT_PREFIX):
        spec = parse_spec(raw)
        inner = modelref.parse(spec.base)
        if inner.kind == "fewshot":
            raise UsageError("a few-shot reference cannot wrap another one", [("model", raw)],
                             "fewshot:K:POOL@REF with a plain model reference as REF")
        return EvalVariant(vid=raw, ref=spec.base, fewshot=spec, remote=inner.is_remote)
    parsed = modelref.parse(raw)
    return EvalVariant(vid=raw, ref=raw, remote=parsed.is_remote)


def parse_variants(models: list[str]) -> list[EvalVariant]:
    """``REF`` or ``fewshot:K:POOL@REF`` per entry; refs are checked now, before anything loads."""
    out: list[EvalVariant] = []
    seen = set()
    for raw in models:
        raw = raw.strip()
        if not raw:
            continue
        if raw in seen:
            raise UsageError("a model is listed twice", [("model", raw)], "list each variant once")
        seen.add(raw)
        out.append(parse_variant(raw))
    if not out:
        raise UsageError("no models given", hint="--models REF[,REF...], e.g. --models smollm2-135m-instruct,job:ID")
    return out


def split_models(text: str) -> list[str]:
    """``a,b,http://h:1/v1#m`` -> entries (commas separate; a URL's own commas are not expected)."""
    return [p for p in (s.strip() for s in text.split(",")) if p]
