"""Scoring: metric modules loaded with ``evaluate.load(<local path>)``, intervals and paired tests.

A metric module returns ``{<name>: value, "per_item": [...]?, <extra>: ...}``. With per-item
0/1 scores the interval is Wilson's and the paired test McNemar's (exact); with per-item
continuous scores, a bootstrap of the mean and a paired bootstrap; a corpus-level metric
(macro-F1, perplexity, chrF) is recomputed on bootstrap resamples through the module's own
``_compute`` (same code, no Arrow round trip).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from tuneterm.core.errors import InputError
from tuneterm.core.evals import stats
from tuneterm.core.evals.metrics import metric_path
from tuneterm.core.evals.spec import MetricRef, TaskSpec

_LOADED: dict[str, Any] = {}


def load_metric(path: Path) -> Any:
    key = str(path)
    if key not in _LOADED:
        os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
        import evaluate

        try:
            _LOADED[key] = evaluate.load(str(path), keep_in_memory=True)
        except Exception as exc:  # a user's module with a bug: name it
            raise InputError("a metric module failed to load", [("module", key), ("problem", f"{type(exc).__name__}: {exc}")]) from exc
    return _LOADED[key]


class Scored:
    """A metric's result for one variant: value, per-item scores and a recompute hook."""

    def __init__(self, name: str, module: Any, options: dict, preds: list, refs: list, key: str) -> None:
        self.name, self.module, self.options, self.preds, self.refs = name, module, options, preds, refs
        self.key = key
        result = module.compute(predictions=preds, references=refs, **options) if preds else {key: float("nan")}
        self.value = float(result.get(key, float("nan")))
        self.per_item = result.get("per_item")
        self.extras = {k: v for k, v in result.items() if k not in (key, "per_item") and isinstance(v, (int, float))}
        self.higher_is_better = bool(getattr(module, "higher_is_better", True))
        self.unit = str(getattr(module, "unit", "fraction"))  # "fraction" = shown as a percentage
        self.binary = self.per_item is not None and stats.is_binary(self.per_item)

    def on(self, idx: list[int]) -> float:
        if self.per_item is not None:
            return stats.mean([self.per_item[i] for i in idx])
        res = self.module._compute(predictions=[self.preds[i] for i in idx],
                                   references=[self.refs[i] for i in idx], **self.options)
        return float(res.get(self.key, float("nan")))

    def interval(self) -> dict:
        n = len(self.preds)
        if n == 0:
            return {"value": None, "ci95": None, "ci_method": None}
        if self.binary and abs(stats.mean(self.per_item) - self.value) < 1e-12:
            lo, hi = stats.wilson(sum(self.per_item), n)
            method = "wilson"
        else:
            lo, hi = stats.bootstrap_ci(n, self.on)
            method = "bootstrap"
        return {"value": _num(self.value), "ci95": [_num(lo), _num(hi)], "ci_method": method,
                "higher_is_better": self.higher_is_better, "unit": self.unit, **({"extra": {k: _num(v) for k, v in self.extras.items()}} if self.extras else {})}


def score(ref: MetricRef, spec: TaskSpec, preds: list, refs: list) -> Scored:
    path = metric_path(ref, spec)
    module = load_metric(path)
    key = path.stem if path.is_file() else path.name
    return Scored(ref.name, module, dict(ref.options), preds, refs, key)


def compare(a: Scored, b: Scored, ids_a: list[str], ids_b: list[str]) -> dict:
    """b (the variant) against a (its baseline) on the items both answered."""
    pos_a = {i: k for k, i in enumerate(ids_a)}
    common = [(pos_a[i], k) for k, i in enumerate(ids_b) if i in pos_a]
    n = len(common)
    out: dict[str, Any] = {"metric": a.name, "n": n, "unit": a.unit}
    if n == 0:
        out.update(delta=None, p_value=None, test=None, significant=False, warning="no items in common")
        return out
    ia, ib = [c[0] for c in common], [c[1] for c in common]

    def sub(s: Scored, idx: list[int]) -> Scored:
        clone = Scored.__new__(Scored)
        clone.__dict__.update(s.__dict__)
        clone.preds = [s.preds[i] for i in idx]
        clone.refs = [s.refs[i] for i in idx]
        clone.per_item = [s.per_item[i] for i in idx] if s.per_item is not None else None
        return clone

    sa, sb = sub(a, ia), sub(b, ib)
    va, vb = sa.on(list(range(n))), sb.on(list(range(n)))
    delta = vb - va
    out["baseline_value"], out["value"], out["delta"] = _num(va), _num(vb), _num(delta)
    if sa.binary and sb.binary:
        fixed = sum(1 for x, y in zip(sa.per_item, sb.per_item) if not x and y)
        broken = sum(1 for x, y in zip(sa.per_item, sb.per_item) if x and not y)
        p = stats.mcnemar_exact(fixed, broken)
        (lo, hi), _ = stats.paired_bootstrap(n, sa.on, sb.on)
        out.update(test="mcnemar_exact", p_value=_num(p), fixed=fixed, broken=broken, ci95=[_num(lo), _num(hi)])
        mde = stats.min_detectable(n, max(min(va, 1.0), 0.0))
    else:
        (lo, hi), p = stats.paired_bootstrap(n, sa.on, sb.on)
        out.update(test="paired_bootstrap", p_value=_num(p), ci95=[_num(lo), _num(hi)])
        if sa.per_item is not None and sb.per_item is not None:
            better = (lambda x, y: y > x) if a.higher_is_better else (lambda x, y: y < x)
            out["fixed"] = sum(1 for x, y in zip(sa.per_item, sb.per_item) if better(x, y))
            out["broken"] = sum(1 for x, y in zip(sa.per_item, sb.per_item) if better(y, x))
        mde = None
    significant = p < 0.05
    worse = significant and ((delta < 0) if a.higher_is_better else (delta > 0))
    out.update(significant=significant, regression=worse)
    if not significant:
        if mde is not None and abs(delta) < mde:
            out["warning"] = f"n={n} cannot resolve differences below ±{100 * mde:.1f} pt"
        elif n < 30:
            out["warning"] = f"n={n} is small; the difference is not significant"
    return out


def _num(x: float) -> float | None:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return None
    return round(float(x), 6)
