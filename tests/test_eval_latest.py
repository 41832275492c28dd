"""Chat's score headers (tuneterm.core.evals.latest) when a report compares a column with another
variant than the first column: `tuneterm eval` without --baseline compares a quantized model with its
source, and the header says against which column the difference is (torch-free, synthetic reports)."""

from __future__ import annotations

from tuneterm.core.evals.latest import _Report, latest_scores
from tuneterm.core.evals.report import SCHEMA


def _value(v: float) -> dict:
    return {"value": v, "ci95": [v - 0.05, v + 0.05], "higher_is_better": True, "unit": "fraction"}


def _comp(variant: str, baseline: str, delta: float) -> dict:
    return {"variant": variant, "baseline": baseline, "metric": "exact_match", "n": 80, "unit": "fraction",
            "value": 0.9, "baseline_value": 0.9 - delta, "delta": delta, "ci95": [delta - 0.05, delta + 0.05],
            "p_value": 0.5, "significant": False, "test": "mcnemar_exact", "fixed": 3, "broken": 2}


def _report(comparisons: list[dict], refs=("openai:base", "openai:tuned", "openai:quant")) -> _Report:
    variants = [{"id": r, "ref": r} for r in refs]  # a variant's id is its reference, as the runner writes it
    per_variant = {v["id"]: {"n": 80, "metrics": {"exact_match": _value(0.5)}} for v in variants}
    data = {"schema": SCHEMA, "created_at": "2026-12-06T06:00:00", "variants": variants,
            "tasks": {"tickets": {"metrics": ["exact_match"], "variants": per_variant, "comparisons": comparisons}}}
    return _Report(data["created_at"], "job 1", data)


def test_a_column_compared_with_its_source_says_against_which_column():
    # the lineage of `tuneterm eval` without --baseline: tuned vs base, quantized vs tuned
    rep = _report([_comp("openai:tuned", "openai:base", 0.4), _comp("openai:quant", "openai:tuned", -0.0125)])
    base, tuned, quant = latest_scores(["openai:base", "openai:tuned", "openai:quant"], [rep])
    assert base.scores[0].delta is None and len(base.scores[0].lines()) == 1
    assert tuned.scores[0].lines()[1] == "Δ +40.0 pt p=0.5 (+3/-2)"  # against the first column: no label
    assert quant.scores[0].lines()[1] == "Δ -1.2 pt p=0.5 (+3/-2) vs column 2"
    assert quant.scores[0].to_dict()["delta_vs"] == "column 2"
    # a baseline that is not on screen is named by its reference
    [_, alone] = latest_scores(["openai:base", "openai:quant"], [rep])
    assert alone.scores[0].lines()[1].endswith(" vs openai:tuned")


def test_a_comparison_with_the_first_column_wins_over_the_reports_own_baseline():
    rep = _report([_comp("openai:tuned", "openai:base", 0.4), _comp("openai:quant", "openai:base", 0.3)])
    older = _report([_comp("openai:quant", "openai:tuned", -0.1)])
    _, _, quant = latest_scores(["openai:base", "openai:tuned", "openai:quant"], [rep, older])
    assert quant.scores[0].delta_vs is None and quant.scores[0].lines()[1].startswith("Δ +30.0 pt")
