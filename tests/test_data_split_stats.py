"""Splits (deterministic, stratified, leak-free) and stats (tokens with the right tokenizer, histogram, labels)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tuneterm.core.datasets import split, stats, store
from tuneterm.core.datasets.validate import example_digest
from tuneterm.core.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
TICKETS = REPO / "sample_data" / "tickets" / "train.jsonl"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_assign_is_deterministic_stratified_and_keeps_duplicates_together():
    digests = [bytes([i % 40]) for i in range(200)]  # every example appears 5 times
    labels = ["a" if i % 40 < 30 else "b" for i in range(200)]
    one = split.assign(digests, labels, 0.1, 0.2, seed=5)
    assert one == split.assign(digests, labels, 0.1, 0.2, seed=5)
    assert one != split.assign(digests, labels, 0.1, 0.2, seed=6)
    for d in set(digests):
        assert len({one[i] for i, x in enumerate(digests) if x == d}) == 1  # no leakage of duplicates
    by = Counter((labels[i], s) for i, s in enumerate(one))
    assert by[("a", "test")] == 30 and by[("b", "test")] == 10  # 20% of each label
    assert by[("a", "val")] == 15 and by[("b", "val")] == 5
    with pytest.raises(UsageError):
        split.assign(digests, None, 0.6, 0.5, seed=0)


def test_split_dataset_writes_files_and_records_them(tmp_path):
    rows = _lines(TICKETS)
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(rows + rows[:10]) + "\n", encoding="utf-8")  # 10 exact duplicates
    store.import_dataset(src, name="t")
    rec = split.split_dataset("t", val=0.1, test=0.2, seed=11)
    assert sum(rec.splits.values()) == 310 and rec.meta["split"]["stratified_by"] == "label"
    parts = {s: _lines(rec.file(s)) for s in ("train", "val", "test")}
    digest_sets = {s: {example_digest(json.loads(x)) for x in v} for s, v in parts.items()}
    assert not (digest_sets["train"] & digest_sets["test"]) and not (digest_sets["train"] & digest_sets["val"])
    assert not (digest_sets["val"] & digest_sets["test"])
    again = split.split_dataset("t", val=0.1, test=0.2, seed=11)
    assert {s: _lines(again.file(s)) for s in parts} == parts
    labels = Counter(json.loads(x)["messages"][-1]["content"] for x in parts["test"])
    assert max(labels.values()) - min(labels.values()) <= 2  # stratified: the four queues evenly
    only_val = split.split_dataset("t", val=0.2, test=0.0, seed=1)
    assert set(only_val.splits) == {"train", "val"} and not (only_val.path / "test.jsonl").exists()


def test_stats_with_tiktoken_for_an_openai_model(tmp_path):
    result = stats.stats_file(TICKETS, model="gpt-4o-mini", cutoff=70, per_example=True)
    tokens = result["tokens"]
    assert tokens["tokenizer"] == "tiktoken o200k_base (gpt-4o-mini-2024-07-18)"
    per = tokens["per_example"]
    assert len(per) == 300 and tokens["total"] == sum(per)
    from tuneterm.core import openai_tokens

    first = json.loads(_lines(TICKETS)[0])
    assert per[0] == openai_tokens.count_example_tokens(first, "gpt-4o-mini")
    assert tokens["truncated"] == sum(1 for n in per if n > 70) > 0
    assert tokens["tokens_lost"] == sum(n - 70 for n in per if n > 70)
    assert sum(b["count"] for b in tokens["histogram"]) == 300
    assert any(b["over_cutoff"] for b in tokens["histogram"])
    assert result["labels"] == {q: 75 for q in ("identity-team", "logistics", "payments-ops", "platform-eng")}
    assert result["messages_per_example"]["distribution"] == {"3": 300}
    assert result["duplicates"] == {"duplicate_examples": 0, "distinct_examples": 300}


def test_stats_with_the_hf_tokenizer_of_a_local_model_match_its_chat_template(embedded_model_dir):
    from transformers import AutoTokenizer

    result = stats.stats_file(REPO / "sample_data" / "general" / "train.jsonl", model=str(embedded_model_dir),
                              per_example=True)
    assert result["tokens"]["cutoff"] == 8192 and result["labels"] is None
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    rows = [json.loads(x) for x in _lines(REPO / "sample_data" / "general" / "train.jsonl")[:20]]
    exact = [len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
             for r in rows]
    assert result["tokens"]["per_example"][:20] == exact


def test_cli_stats_text_and_json(cli):
    code, out, _ = cli("data", "stats", str(TICKETS), "--model", "openai:gpt-4.1-mini", "--cutoff", "70")
    assert code == 0 and "would be truncated" in out and "platform-eng" in out and "tiktoken o200k_base" in out
    code, out, _ = cli("data", "stats", str(TICKETS), "--model", "gpt-3.5-turbo", "--json")
    assert code == 0 and json.loads(out)["tokens"]["tokenizer"].startswith("tiktoken cl100k_base")


# The text report of `data stats` on TICKETS, as it was before the progress line existed (stdout
# must not change): {file} and {model} are the paths given on the command line.
STATS_REPORT = """\
{file} (jsonl:chat): 300 valid examples
tokens (HF tokenizer of {model}): total 22,381, mean 74.6, min 63, p50 75, p90 80, p95 82, max 86
cutoff 8,192: 0 examples would be truncated (0 tokens lost)
length histogram (tokens per example; ! = past the cutoff):
        0-7               0 
        8-15              0 
       16-23              0 
       24-31              0 
       32-39              0 
       40-47              0 
       48-55              0 
       56-63              1 #
       64-71             69 ##############
       72-79            199 ########################################
       80-87             31 ######
       88-95              0 
messages per example: min 3, mean 3.0, max 3  3:300
roles: assistant 300, system 300, user 300
duplicates: 0 examples repeat an earlier one (300 distinct)
labels:
  identity-team                75   25.0%
  logistics                    75   25.0%
  payments-ops                 75   25.0%
  platform-eng                 75   25.0%
"""


def test_cli_stats_tells_its_progress_on_stderr_and_keeps_stdout(cli, embedded_model_dir, monkeypatch):
    """Not a terminal (captured): the tokenizer's load is announced before it happens and the counting
    pass ends with its count on stderr; stdout is the report byte for byte, and --json is unchanged."""
    from tuneterm.core.datasets import tokens

    monkeypatch.setattr(tokens, "_COUNTERS", {})  # a fresh process: the tokenizer is not loaded yet
    model = str(embedded_model_dir)
    code, out, err = cli("data", "stats", str(TICKETS), "--model", model)
    assert code == 0
    assert out == STATS_REPORT.format(file=TICKETS, model=model)
    lines = err.splitlines()
    assert lines[0] == f"loading the tokenizer of {model} ..."
    assert lines[-1].startswith("counting tokens: 300/300 examples, ")
    assert "\r" not in err  # no in-place redraws in a log
    code, out, err = cli("data", "stats", str(TICKETS), "--model", model, "--json")
    assert code == 0 and json.loads(out) == stats.stats_file(TICKETS, model=model)
    assert "loading the tokenizer" not in err  # loaded once per process
    assert err.splitlines()[-1].startswith("counting tokens: 300/300 examples, ")
