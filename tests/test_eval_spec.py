"""Eval specs: the shipped suite validates; bad specs fail with file and field, before any model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuneterm.core.errors import InputError, NotFoundError
from tuneterm.core.evals.items import build_items
from tuneterm.core.evals.spec import load_suite, load_task

REPO = Path(__file__).resolve().parents[1]
EVALS = REPO / "evals"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rows(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def test_shipped_suite_loads_and_builds_items():
    tasks = load_suite(EVALS / "sample.yaml")
    by_name = {t.name: t for t in tasks}
    assert set(by_name) == {"tickets", "extraction", "domain_qa", "general_mc", "heldout_perplexity"}
    assert [by_name[n].type for n in ("tickets", "general_mc", "heldout_perplexity")] == ["generate", "choice", "perplexity"]
    tickets = build_items(by_name["tickets"], limit=5)
    assert len(tickets) == 5
    assert tickets[0].messages[0]["role"] == "system" and tickets[0].messages[-1]["role"] == "user"
    assert tickets[0].target in {"payments-ops", "platform-eng", "identity-team", "logistics"}
    mc = build_items(by_name["general_mc"])
    assert 40 <= len(mc) <= 60
    assert all(it.context.startswith("Question: ") and it.context.endswith("\nAnswer:") for it in mc)
    assert all(0 <= it.gold < len(it.choices) for it in mc)
    assert len({it.id for it in mc}) == len(mc)
    ppl = build_items(by_name["heldout_perplexity"], limit=3)
    assert all(it.text and "\n" in it.text for it in ppl)
    # a folder of task files is a suite too
    assert [t.name for t in load_suite(EVALS / "tickets")] == ["tickets"]


def test_fewshot_is_deterministic_and_excludes_the_item():
    spec = load_task(EVALS / "general_mc" / "general_mc.yaml")
    a = build_items(spec, limit=6, shots=3)
    b = build_items(spec, limit=6, shots=3)
    assert [x.context for x in a] == [y.context for y in b]
    for it in a:
        blocks = it.context.split("\n\n")
        assert len(blocks) == 4 and blocks[-1] == f"Question: {it.row['question']}\nAnswer:"
        assert all(f"Question: {it.row['question']}\n" not in blk for blk in blocks[:-1])
    tickets = build_items(load_task(EVALS / "tickets" / "tickets.yaml"), limit=2, shots=2)
    roles = [m["role"] for m in tickets[0].messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]


@pytest.mark.parametrize(
    "body, field, words",
    [
        ("name: t\ntype: generate\ndata: {path: d.jsonl}\n", "version", "required field is missing"),
        ("name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\ntemprature: 0\n", "temprature", "unknown field"),
        ("name: t\nversion: 1\ntype: guess\ndata: {path: d.jsonl}\n", "type", "generate"),
        ("name: t\nversion: 1\ntype: choice\ndata: {path: d.jsonl}\n", "(top level)", "choices"),
        ("name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\nextract: [shout]\n", "extract", "unknown step"),
        ("name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\nextract: [{regex: '(a'}]\n", "extract", "bad regex"),
        ("name: t\nversion: 1\ntype: generate\ndata: {}\n", "data", "exactly one"),
        ("name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\nmetrics: exact_match\n", "metrics", "must be a list"),
        ("name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\nprompt: {template: '{{ x | upper }}'}\n",
         "prompt.template", "placeholder"),
        ("name: t\nversion: [1\n", "(yaml)", ""),
    ],
)
def test_bad_specs_name_file_and_field(tmp_path, body, field, words):
    path = write(tmp_path / "bad.yaml", body)
    with pytest.raises(InputError) as exc:
        load_task(path)
    facts = dict(exc.value.facts)
    assert facts["file"] == str(path)
    assert facts["field"] == field
    assert words in facts["problem"]


def test_data_problems_name_line_and_field(tmp_path):
    rows(tmp_path / "d.jsonl", [{"q": "a", "a": "b"}, {"q": "c"}])
    spec = load_task(write(tmp_path / "t.yaml", "name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\n"
                                                 "prompt: {template: '{{q}}'}\ntarget: '{{a}}'\n"))
    with pytest.raises(InputError) as exc:
        build_items(spec)
    facts = dict(exc.value.facts)
    assert facts["data line"] == "2" and facts["field"] == "target" and "{{a}}" in exc.value.title
    missing = load_task(write(tmp_path / "m.yaml", "name: m\nversion: 1\ntype: generate\ndata: {path: nope.jsonl}\n"))
    with pytest.raises(NotFoundError) as exc:
        build_items(missing)
    assert dict(exc.value.facts)["field"] == "data.path"
    rows(tmp_path / "dup.jsonl", [{"id": 1, "q": "a"}, {"id": 1, "q": "b"}])
    dup = load_task(write(tmp_path / "u.yaml", "name: u\nversion: 1\ntype: generate\ndata: {path: dup.jsonl}\n"
                                               "prompt: {template: '{{q}}'}\ntarget: '{{q}}'\n"))
    with pytest.raises(InputError, match="share an item id"):
        build_items(dup)


def test_suite_file_errors(tmp_path):
    suite = write(tmp_path / "s.yaml", "suite: s\ntasks: [missing.yaml]\n")
    with pytest.raises(InputError) as exc:
        load_suite(suite)
    assert dict(exc.value.facts)["field"] == "tasks[0]"
    with pytest.raises(NotFoundError):
        load_suite(tmp_path / "nothing-here")


def test_cli_check_and_bad_spec_without_traceback(tmp_path, cli):
    code, out, err = cli("eval", str(EVALS / "sample.yaml"), "--models", "smollm2-135m-instruct", "--check", "--limit", "3")
    assert code == 0, err
    assert "general_mc: choice, version 1, 3 items, metrics accuracy" in out
    bad = write(tmp_path / "bad.yaml", "name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\nmetrics: [{f1: 3}]\n")
    code, out, err = cli("eval", str(bad), "--models", "smollm2-135m-instruct")
    assert code == 3
    assert "field: metrics[0].f1" in err and "Traceback" not in err
    code, out, err = cli("eval", str(EVALS / "sample.yaml"), "--models", "no-such-model-xyz", "--check")
    assert code == 4 and "unknown model reference" in err


def test_eval_help_stays_light():
    code = ("import sys; from tuneterm.cli import main\n"
            "try:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'evaluate', 'peft') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_identical_rows_are_items_of_their_own_with_stable_ids(tmp_path, cli):
    rows(tmp_path / "d.jsonl", [{"q": "a"}, {"q": "b"}, {"q": "a"}, {"q": "a"}])
    path = write(tmp_path / "t.yaml", "name: t\nversion: 1\ntype: generate\ndata: {path: d.jsonl}\n"
                                      "prompt: {template: '{{q}}'}\ntarget: '{{q}}'\n")
    items = build_items(load_task(path))
    first = items[0].id
    assert [it.id for it in items] == [first, items[1].id, f"{first}-2", f"{first}-3"]
    assert [it.duplicate_of for it in items] == [None, None, 1, 1]
    assert [it.id for it in build_items(load_task(path))] == [it.id for it in items]  # stable across runs
    code, out, err = cli("eval", str(path), "--models", "smollm2-135m-instruct", "--check")
    assert code == 0, err
    assert "4 items" in out and "2 duplicate row(s)" in out


def test_check_reports_every_problem_in_one_run(tmp_path, cli, monkeypatch):
    """`eval --check` checks metric names (with a close-match hint) and model references without loading
    weights, and prints every problem of the run, not the first one only."""
    monkeypatch.setenv("TUNETERM_HOME", str(tmp_path / "ws"))
    rows(tmp_path / "d.jsonl", [{"q": "a", "a": "b"}])
    write(tmp_path / "suite" / "t.yaml", "name: t\nversion: 1\ntype: generate\ndata: {path: ../d.jsonl}\n"
                                         "prompt: {template: '{{q}}'}\ntarget: '{{a}}'\nmetrics: [exact_matc, f1]\n")
    write(tmp_path / "suite" / "u.yaml", "name: u\nversion: 1\ntype: generat\ndata: {path: ../d.jsonl}\n"
                                         "promt: {template: '{{q}}'}\n")
    write(tmp_path / "suite" / "ok.yaml", "name: ok\nversion: 1\ntype: generate\ndata: {path: ../d.jsonl}\n"
                                          "prompt: {template: '{{q}}'}\ntarget: '{{a}}'\n")
    code, out, err = cli("eval", str(tmp_path / "suite"), "--models", "smollm2-135m-instruct,job:nope,foo-bar", "--check")
    assert code == 3 and "Traceback" not in err
    assert "no metric module 'exact_matc'; did you mean 'exact_match'?" in err
    assert "field: type" in err and "field: promt" in err  # both problems of one file
    assert "no job 'nope'" in err and "unknown model reference 'foo-bar'" in err
    assert "eval --check: 5 problems found" in err
    assert "ok: generate, version 1, 1 items" in out and "t: generate" not in out
    # the real run rejects the same metric before any model loads, with the same hint
    from tuneterm.core.evals.metrics import check_metrics

    with pytest.raises(NotFoundError, match="did you mean 'exact_match'"):
        check_metrics(load_task(tmp_path / "suite" / "t.yaml"))
