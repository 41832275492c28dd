"""Statistics, the local evaluate metric modules (loaded offline by path) and report rendering."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tuneterm.core.evals import report as report_mod
from tuneterm.core.evals import stats
from tuneterm.core.evals.extract import extract

METRICS = Path(__file__).resolve().parents[1] / "evals" / "metrics"


@pytest.fixture(scope="module")
def load():
    import os

    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    import evaluate

    return lambda name: evaluate.load(str(METRICS / name), keep_in_memory=True)


def test_wilson_and_mcnemar_known_values():
    lo, hi = stats.wilson(17, 20)
    assert (round(lo, 3), round(hi, 3)) == (0.640, 0.948)
    assert stats.wilson(0, 10)[0] == 0.0
    # the reference's synthetic example: 18 fixed, 7 broken -> p = 0.043
    assert round(stats.mcnemar_exact(18, 7), 3) == 0.043
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_bootstrap_is_seeded_and_paired_beats_unpaired():
    a = [1.0 if i % 3 else 0.0 for i in range(90)]
    b = [x + (0.1 if i % 2 else 0.0) for i, x in enumerate(a)]
    stat_a = lambda idx: stats.mean([a[i] for i in idx])  # noqa: E731
    stat_b = lambda idx: stats.mean([b[i] for i in idx])  # noqa: E731
    assert stats.bootstrap_ci(90, stat_a) == stats.bootstrap_ci(90, stat_a)
    (lo, hi), p = stats.paired_bootstrap(90, stat_a, stat_b)
    assert 0 < lo <= 0.05 <= hi and p < 0.01  # a constant small shift is resolved when paired
    assert stats.min_detectable(100) > stats.min_detectable(1000)


def test_metric_modules(load):
    em = load("exact_match").compute(predictions=["Paris ", "rome"], references=["paris", "Madrid"])
    assert em == {"exact_match": 0.5, "per_item": [1, 0]}
    acc = load("accuracy").compute(predictions=[0, 2, 1], references=[0, 1, 1])
    assert acc["accuracy"] == pytest.approx(2 / 3)
    from sklearn.metrics import f1_score

    preds = ["a", "b", "a", "c", "b", "zzz"]
    refs = ["a", "b", "b", "c", "c", "a"]
    ours = load("f1").compute(predictions=preds, references=refs)["f1"]
    assert ours == pytest.approx(f1_score(refs, preds, average="macro", labels=["a", "b", "c"]))
    union = load("f1").compute(predictions=preds, references=refs, labels="union")["f1"]
    assert union == pytest.approx(f1_score(refs, preds, average="macro"))
    rl = load("rouge_l").compute(predictions=["the cat sat on the mat"], references=["the cat was on the mat"])
    assert rl["rouge_l"] == pytest.approx(5 / 6)  # LCS "the cat on the mat" = 5 of 6 tokens each side
    jv = load("json_validity").compute(predictions=['{"a": 1}', "[1]", "nope"], references=["", "", ""])
    assert jv["per_item"] == [1, 0, 0]
    ff = load("field_f1").compute(predictions=['{"a": 1, "b": "X"}', "oops"], references=['{"a": 1, "b": "y"}', '{"a": 2}'])
    assert ff["per_item"] == [0.5, 0.0] and ff["field_acc.a"] == 0.5
    ppl = load("perplexity").compute(predictions=[2.0, 4.0], references=[2, 4])
    assert ppl["perplexity"] == pytest.approx(math.e)


def test_chrf_matches_sacrebleu_when_present(load):
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps = ["the cat sat on the mat", "a quick brown fox", "hello"]
    refs = ["the cat is on the mat", "the quick brown fox jumps", "hello world"]
    ours = load("chrf").compute(predictions=hyps, references=refs)["chrf"]
    assert ours == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-6)


def test_user_metric_module_by_path(tmp_path):
    """A user adds a metric the same way: a folder NAME/ with NAME.py, referenced from the spec."""
    from tuneterm.core.evals.spec import load_task
    from tuneterm.core.evals.metrics import check_metrics, metric_path
    from tuneterm.workers.evals import scoring

    mod = tmp_path / "metrics" / "starts_with"
    mod.mkdir(parents=True)
    (mod / "starts_with.py").write_text(
        "import datasets\nimport evaluate\n\n"
        "class StartsWith(evaluate.Metric):\n"
        "    def _info(self):\n"
        "        return evaluate.MetricInfo(description='', citation='', inputs_description='',\n"
        "            features=datasets.Features({'predictions': datasets.Value('string'), 'references': datasets.Value('string')}))\n"
        "    def _compute(self, predictions, references):\n"
        "        hits = [int(p.startswith(r)) for p, r in zip(predictions, references)]\n"
        "        return {'starts_with': sum(hits) / len(hits), 'per_item': hits}\n"
    )
    (tmp_path / "d.jsonl").write_text('{"q": "x"}\n')
    spec = load_task(_w(tmp_path / "t.yaml", "name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\n"
                                             "metrics: [starts_with, {module: ./metrics/starts_with, name: sw2}]\n"))
    check_metrics(spec)
    s = scoring.score(spec.metrics[0], spec, ["paris!", "rome"], ["paris", "madrid"])
    assert s.value == 0.5 and s.binary and s.interval()["ci_method"] == "wilson"
    assert metric_path(spec.metrics[1], spec) == mod.resolve()


def _w(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_extract_steps():
    assert extract("  Payments-Ops.\nmore", ["strip", "first_word", "lowercase", "remove_punctuation"]) == "payments-ops"
    assert extract('Sure! {"b": 2, "a": 1} done', ["json"]) == '{"a": 1, "b": 2}'
    assert extract("no json here", ["json"]) == "no json here"
    assert extract("answer: C", [{"regex": r"answer:\s*([A-D])"}]) == "C"
    assert extract("nothing", [{"regex": r"([A-D])$", "default": ""}]) == ""


def _report(delta_items: tuple[int, int]) -> dict:
    fixed, broken = delta_items
    comp = {"variant": "tuned", "baseline": "base", "metric": "exact_match", "n": 100, "unit": "fraction",
            "value": 0.5, "baseline_value": 0.6, "delta": -0.1, "test": "mcnemar_exact",
            "p_value": stats.mcnemar_exact(fixed, broken), "fixed": fixed, "broken": broken, "ci95": [-0.2, -0.01]}
    comp["significant"] = comp["p_value"] < 0.05
    comp["regression"] = comp["significant"]
    res = lambda v: {"n": 100, "metrics": {"exact_match": {"value": v, "ci95": [v - 0.1, v + 0.1], "unit": "fraction",  # noqa: E731
                                                         "ci_method": "wilson"}}, "speed": {"tokens_per_s": 10.0}}
    return report_mod.build_report(
        tasks={"t": {"version": 1, "type": "generate", "source": "t.yaml", "metrics": ["exact_match"],
                     "variants": {"base": res(0.6), "tuned": res(0.5)}, "comparisons": [comp]}},
        variants=[{"id": "base", "ref": "base", "parent": None}, {"id": "tuned", "ref": "job:x", "parent": "base"}],
        settings={}, started=0.0)


def test_report_rendering_and_regressions(tmp_path):
    bad = _report((2, 12))
    assert report_mod.regressions(bad)[0]["variant"] == "tuned"
    assert report_mod.regressions(_report((6, 8))) == []
    report_mod.write_report(tmp_path / "r", bad, [{"task": "t", "variant": "base", "id": "1"}])
    loaded = report_mod.load_report(tmp_path / "r")
    assert loaded["schema"] == report_mod.SCHEMA
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| t | tuned | 100 | exact_match 50.0 [40.0, 60.0] | exact_match -10.0 pt *" in md
    table = report_mod.render_table(bad)
    assert "(+2/-12)" in table and "tuned" in table
    assert json.loads((tmp_path / "r" / "samples.jsonl").read_text())["id"] == "1"


def test_table_fits_the_terminal(monkeypatch):
    """80 columns: one compact table per task, long variant names wrapped, nothing wider than the terminal;
    the width comes from $COLUMNS when none is given."""
    rep = _report((2, 12))
    task = rep["tasks"]["t"]
    long = "fewshot:4:sample_data/fewshot/pool.jsonl@smollm2-135m-instruct"
    task["variants"][long] = task["variants"]["tuned"]
    task["comparisons"].append({**task["comparisons"][0], "variant": long})
    for width in (60, 80, 100, 120):
        text = report_mod.render_table(rep, width)
        assert max(len(line) for line in text.splitlines()) <= width, text
        assert "(+2/-12)" in text and "paired difference to base" in text
        rest = iter(text[text.index("fewshot:4:"):])
        assert all(ch in rest for ch in long)  # wrapped over lines, not cut: its characters in order
    wide = report_mod.render_table(rep, 200)
    assert "exact_match -10.0 pt * p=0.0129 (+2/-12) vs base" in wide and "speed" in wide
    monkeypatch.setenv("COLUMNS", "80")
    assert max(len(line) for line in report_mod.render_table(rep).splitlines()) <= 80
