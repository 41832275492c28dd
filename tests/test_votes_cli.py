"""`tuneterm eval votes [--json]` and `tuneterm eval votes export --dpo/--sft NAME` (in-process, torch-free)."""

from __future__ import annotations

import json
import tomllib

import pytest

from tuneterm.core import votes


def _votes(outcomes: list[str]) -> None:
    for i, outcome in enumerate(outcomes):
        votes.record(votes.Round(f"question {i}?", ["openai:one", "openai:two"], [f"good {i}", f"bad {i}"], [1, 0]),
                     outcome)


def test_eval_votes_without_votes_says_how_to_get_some(cli):
    code, out, err = cli("eval", "votes")
    assert code == 0, err
    assert "0 human vote(s)" in out and "too few votes" in out and "--blind" in out


def test_eval_votes_table_and_json(cli):
    _votes(["1"] * 9 + ["2"] * 2 + ["tie"])
    code, out, err = cli("eval", "votes")
    assert code == 0, err
    assert "win rates" in out and "openai:one" in out and "Bradley-Terry" in out
    assert "too few votes" not in out
    row = next(line for line in out.splitlines() if line.startswith("openai:one"))
    assert row.split()[2:5] == ["9-2", "1", "82%"]  # 9 of 11 decisive
    code, out, err = cli("eval", "votes", "--json")
    data = json.loads(out)
    assert data["votes"] == 12 and data["note"] is None
    assert [r["model"] for r in data["ranking"]] == ["openai:one", "openai:two"]
    r = data["ranking"][0]
    assert r["ci_low"] < r["rating"] < r["ci_high"]


def test_export_dpo_is_accepted_by_train_dpo_dry_run(cli, tmp_workspace):
    _votes(["1", "2", "tie", "both_bad", "1"])
    code, out, err = cli("eval", "votes", "export", "--dpo", "prefs")
    assert code == 0, err
    assert "3 preference pair(s)" in out
    rows = [json.loads(line) for line in (tmp_workspace.datasets_dir / "prefs" / "data.jsonl").read_text().splitlines()]
    assert rows[0]["preferred_output"][0]["content"] == "good 0"
    assert rows[1]["preferred_output"][0]["content"] == "bad 1"
    code, out, err = cli("train", "--method", "dpo", "--model", "smollm2", "--data", "prefs", "--dry-run")
    assert code == 0, err
    config = tomllib.loads(out)
    assert config["method"] == "dpo"
    from tuneterm.workers.train.dpo import read_pairs  # what the DPO job reads the data with

    pairs = read_pairs(config["data"])
    assert len(pairs) == 3 and pairs[0]["chosen"][-1]["content"] == "good 0"
    code, out, err = cli("eval", "votes", "export", "--sft", "chosen")
    assert code == 0, err
    assert "3 example(s)" in out
    code, _, err = cli("eval", "votes", "export", "--dpo", "prefs")
    assert code == 2 and "already exists" in err


def test_sft_export_is_chat_data_not_pairs(cli, tmp_workspace):
    from tuneterm.core.errors import DatasetError
    from tuneterm.workers.train.dpo import read_pairs

    _votes(["2"])
    assert cli("eval", "votes", "export", "--sft", "chosen")[0] == 0
    [row] = [json.loads(line) for line in (tmp_workspace.datasets_dir / "chosen" / "data.jsonl").read_text().splitlines()]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"] and row["messages"][1]["content"] == "bad 0"
    with pytest.raises(DatasetError):
        read_pairs(tmp_workspace.datasets_dir / "chosen" / "data.jsonl")


def test_bad_votes_usage(cli):
    code, _, err = cli("eval", "votes", "export")
    assert code == 2 and "--dpo NAME or --sft NAME" in err
    code, _, err = cli("eval", "votes", "frobnicate")
    assert code == 2 and "unknown votes subcommand" in err
    code, _, err = cli("eval", "evals/x.yaml")
    assert code == 2 and "--models" in err


def test_judge_human_agreement_is_reported_once_both_voted_on_the_same_rounds(cli):
    rounds = [votes.Round(f"question {i}?", ["openai:one", "openai:two"], [f"good {i}", f"bad {i}"], [0, 1],
                          round_id=f"r{i}") for i in range(4)]
    for rnd in rounds:
        votes.record(rnd, "1", voter="judge:openai:judge")
    code, out, err = cli("eval", "votes")
    assert code == 0, err
    assert "0 human vote(s), 4 judge verdict(s)" in out and "judge vs human" not in out  # no human vote yet
    for rnd, human in zip(rounds, ["1", "1", "2", "tie"]):
        votes.record(rnd, human)
    code, out, err = cli("eval", "votes")
    assert code == 0, err
    line = out.split("judge vs human (same rounds)\n", 1)[1].splitlines()[0]
    assert line.startswith("judge:openai:judge: 2/4 agree (50%, 95% CI [") and "Cohen's kappa" in line, line
    [agreement] = json.loads(cli("eval", "votes", "--json")[1])["agreement"]
    assert (agreement["judge"], agreement["rounds"], agreement["agree"]) == ("judge:openai:judge", 4, 2)
