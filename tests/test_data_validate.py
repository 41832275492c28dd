"""Validation: every rule fires on the broken sample, clean data stays clean, the cookbook's bugs don't."""

from __future__ import annotations

import json
from pathlib import Path

from tuneterm.core.datasets.rules import FILE_ONLY, RULES
from tuneterm.core.datasets.validate import validate_file

REPO = Path(__file__).resolve().parents[1]
BROKEN = REPO / "sample_data" / "broken" / "broken.jsonl"


def _file(tmp_path, rows, name="d.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def _chat(user="hi", reply="hello", system=True):
    msgs = [{"role": "system", "content": "s"}] if system else []
    return {"messages": msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def test_broken_sample_exercises_every_rule_with_file_line_key_and_hint():
    report = validate_file(BROKEN, model="gpt-3.5-turbo-0613")  # a 4,096-token model, tiktoken cl100k
    # the chat-template rules need a local model's template: tests/test_arch_templates.py exercises them
    template_rules = {"template_error", "template_folds_system"}
    missing = set(RULES) - FILE_ONLY - template_rules - set(report.counts)
    assert not missing, f"rules the broken sample does not exercise: {sorted(missing)}"
    by_kind = {p.kind: p for p in report.problems}
    assert by_kind["invalid_json"].line == 3 and by_kind["non_utf8"].line == 4
    assert by_kind["message_unrecognized_key"].key == "messages[1].mood"
    assert by_kind["duplicate_example"].message == "same as line 1"
    assert by_kind["over_token_limit"].line == 29 and "4,096" in by_kind["over_token_limit"].message
    for p in report.problems:
        assert p.file == str(BROKEN) and p.hint == RULES[p.kind][1]
    # For an OpenAI target, special tokens and too few examples are errors (OpenAI rejects the file).
    assert by_kind["reserved_special_token"].severity == "error"
    assert report.status == "errors" and report.n_errors > 0


def test_broken_sample_without_model_has_no_token_rule_and_softer_severities():
    report = validate_file(BROKEN)
    assert "over_token_limit" not in report.counts
    assert report.severity_of("reserved_special_token") == "warning"
    assert report.tokenizer is None


def test_sample_datasets_are_clean():
    for rel in ("tickets/train.jsonl", "tickets/test.jsonl", "extraction/train.jsonl", "preferences/train.jsonl",
                "domain_qa/train.jsonl", "fewshot/pool.jsonl"):
        report = validate_file(REPO / "sample_data" / rel)
        assert report.status == "clean", (rel, report.counts)
    general = validate_file(REPO / "sample_data" / "general" / "train.jsonl")
    assert set(general.counts) == {"missing_system_message"}  # the general set has no system prompt on purpose


def test_cookbook_bugs_are_not_reproduced(tmp_path):
    rows = [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "draft", "weight": 0},
                      {"role": "user", "content": "again"}, {"role": "assistant", "content": "final", "weight": 1}]},
        {"tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}],
         "parallel_tool_calls": False,
         "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
                      {"role": "tool", "tool_call_id": "c1", "content": "42"},
                      {"role": "assistant", "content": "It is 42."}]},
        {"messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": [
            {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "assistant", "content": "a cat"}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                      {"role": "function", "name": "f", "content": "1"}, {"role": "assistant", "content": "one"}]},
    ] + [_chat(f"q{i}") for i in range(8)]
    report = validate_file(_file(tmp_path, rows), model="gpt-4o-mini")
    assert report.counts == {}, report.problems
    assert report.tokenizer.startswith("tiktoken o200k_base") and report.token_limit == 65536


def test_openai_target_makes_too_few_examples_an_error(tmp_path):
    p = _file(tmp_path, [_chat(f"q{i}") for i in range(3)])
    assert validate_file(p).status == "warnings"
    strict = validate_file(p, model="openai:gpt-4.1-mini")
    assert strict.status == "errors" and strict.counts == {"too_few_examples": 1}


def test_empty_file_and_problem_cap_keeps_counts_exact(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_bytes(b"")
    assert validate_file(empty).counts == {"empty_file": 1}
    p = _file(tmp_path, [{"messages": []} for _ in range(50)], "many.jsonl")
    report = validate_file(p, keep=5)
    assert report.counts["missing_messages_list"] == 50
    assert sum(1 for x in report.problems if x.kind == "missing_messages_list") == 5 and report.truncated


def test_duplicates_ignore_key_order_and_spacing(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
                 '{"messages":[{"content":"a","role":"user"},{"content":"b","role":"assistant"}]}\n', encoding="utf-8")
    dup = [x for x in validate_file(p).problems if x.kind == "duplicate_example"]
    assert [(x.line, x.message) for x in dup] == [(2, "same as line 1")]


def test_validate_hf_tokenizer_limit_for_a_local_model(tmp_path, embedded_model_dir):
    long = _chat(reply="word " * 9000)
    p = _file(tmp_path, [_chat(f"q{i}") for i in range(10)] + [long])
    report = validate_file(p, model=str(embedded_model_dir))
    assert report.tokenizer.startswith("HF tokenizer") and report.token_limit == 8192
    assert report.counts == {"over_token_limit": 1}
    assert report.problems[0].line == 11


def test_cli_validate_exit_codes_and_json(cli, tmp_path):
    code, out, _ = cli("data", "validate", str(BROKEN), "--json")
    data = json.loads(out)
    assert code == 1 and data["status"] == "errors" and data["counts"]["invalid_json"] == 1
    assert {"file", "line", "key", "kind", "severity", "message", "hint"} <= set(data["problems"][0])
    warn_only = _file(tmp_path, [_chat(f"q{i}", system=False) for i in range(12)])
    code, out, _ = cli("data", "validate", str(warn_only))
    assert code == 0 and "warnings: 0 errors, 12 warnings" in out
    code, _, _ = cli("data", "validate", str(warn_only), "--strict")
    assert code == 1
    code, out, _ = cli("data", "validate", str(tmp_path / "nope.jsonl"))
    assert code == 4


def test_split_overlap_is_an_error_on_import_and_on_validate(tmp_path, cli):
    from tuneterm.core.datasets import store
    from tuneterm.core.errors import DatasetError

    folder = tmp_path / "leaky"
    folder.mkdir()
    rows = [_chat(f"q{i}") for i in range(12)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "test.jsonl").write_text(json.dumps(_chat("new")) + "\n" + json.dumps(rows[3]) + "\n", encoding="utf-8")
    import pytest

    with pytest.raises(DatasetError) as err:
        store.import_dataset(folder, name="leaky")
    assert "split_overlap" in dict(err.value.facts)["first problems"]
    rec = store.import_dataset(folder, name="leaky", skip_invalid=True)
    assert rec.splits == {"train": 12, "test": 1}
    # a dataset whose split files were edited afterwards: `data validate NAME` checks them together
    test_file = rec.file("test")
    test_file.write_text(test_file.read_text() + json.dumps(rows[0]) + "\n", encoding="utf-8")
    code, out, _ = cli("data", "validate", "leaky", "--json")
    data = json.loads(out)
    assert code == 1 and data["counts"].get("split_overlap") == 1
    (p,) = [x for x in data["problems"] if x["kind"] == "split_overlap"]
    assert p["file"] == str(test_file) and p["line"] == 2 and "train" in p["message"]
