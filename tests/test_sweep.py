"""``tuneterm sweep``: search spaces, data splits, and whole sweeps of real jobs on the sample tickets
(the tiny model), interrupted and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneterm.core import jobs, modelref
from tuneterm.core.errors import ConfigError, UsageError
from tuneterm.core.resources import sample_data_dir
from tuneterm.core.sweep import runner
from tuneterm.core.sweep.data import detect_shape, prepare as prepare_data
from tuneterm.core.sweep.prepare import available_methods, prepare
from tuneterm.core.sweep.space import load_space, parse_space
from tuneterm.core.workspace import workspace

TICKETS = sample_data_dir() / "tickets"


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


# --- the parts, without jobs -------------------------------------------------------------------------


def test_budget_needs_a_unit():
    from tuneterm.commands.sweep import parse_budget

    assert parse_budget("15m") == 900 and parse_budget("1h30m") == 5400 and parse_budget("90s") == 90
    for bad in ("15", "fast", "0m", "15m and more"):
        with pytest.raises(UsageError):
            parse_budget(bad)


def test_the_shape_of_the_sample_data():
    assert detect_shape(TICKETS / "train.jsonl") == (
        "classification", ("identity-team", "logistics", "payments-ops", "platform-eng"))
    assert detect_shape(sample_data_dir() / "extraction" / "train.jsonl")[0] == "extraction"
    assert detect_shape(sample_data_dir() / "domain_qa" / "train.jsonl")[0] == "generation"


@pytest.mark.parametrize("shape", ["classification", "generation", "extraction"])
def test_the_built_in_spaces_load_and_span_methods(shape):
    space = load_space(None, shape)
    methods = set(space.methods)
    assert "fewshot" in methods and "lora" in methods
    everything = {"fewshot", "feature", "lora", "full", "freeze", "cls_head"}
    chosen, _notes = space.candidates(everything, n_params=10_000_000, n_layers=4)
    assert len(chosen) == min(space.max_trials, len(chosen))
    assert {c.method for c in chosen} == methods & everything  # every method gets its turn


def test_the_classification_head_only_where_this_tuneterm_has_it():
    space = load_space(None, "classification")
    without, notes = space.candidates({"fewshot", "feature", "lora", "freeze"}, 10_000_000, 4)
    assert "cls_head" not in {c.method for c in without}
    assert any(n.startswith("cls_head: not available") for n in notes)
    with_head, _ = space.candidates({"fewshot", "feature", "lora", "freeze", "cls_head"}, 10_000_000, 4)
    assert "cls_head" in {c.method for c in with_head}
    renamed, _ = space.candidates({"fewshot", "feature", "lora", "freeze", "classify"}, 10_000_000, 4)
    assert "classify" in {c.method for c in renamed}
    # the registry decides: a method counts when its job kind is registered
    assert "feature" in available_methods({"train", "feature"}) and "feature" not in available_methods({"train"})


def test_full_and_freeze_only_for_small_models_and_middle_layers_resolved():
    space = parse_space({"sweep": {"full_max_params": 1e6, "max_trials": 20},
                         "methods": {"full": {"train.lr": [1e-5]}, "feature": {"layer": ["middle", -1, 9]}}}, "x")
    chosen, notes = space.candidates({"full", "feature"}, n_params=5_000_000, n_layers=4)
    assert {c.method for c in chosen} == {"feature"}
    assert sorted(dict(c.params)["layer"] for c in chosen) == [-1, 2]
    assert any("over full_max_params" in n for n in notes) and any("layer 9 does not exist" in n for n in notes)


def test_space_errors_name_the_file_and_field(tmp_path):
    bad_key = _space(tmp_path, '[methods.lora]\n"lora.rank" = [8]\n')
    with pytest.raises(ConfigError) as err:
        load_space(bad_key, "classification")
    facts = dict(err.value.facts)
    assert facts["file"] == str(bad_key) and facts["field"] == "methods.lora.lora.rank"
    assert "lora.r" in facts["problem"]  # did you mean
    with pytest.raises(ConfigError, match="invalid search space"):
        load_space(_space(tmp_path, "[methods.magic]\nx = [1]\n"), "classification")
    with pytest.raises(ConfigError):
        load_space(_space(tmp_path, '[methods.fewshot]\nsampler = ["nearest"]\n'), "classification")
    with pytest.raises(ConfigError):
        load_space(_space(tmp_path, "[sweep]\neta = 1\n[methods.fewshot]\nk = [2]\n"), "classification")


def test_missing_splits_are_cut_seeded_and_stratified(tmp_path):
    lines = (TICKETS / "train.jsonl").read_text().splitlines()[:200]
    data = tmp_path / "only.jsonl"
    data.write_text("\n".join(lines) + "\n")
    first = prepare_data(str(data), None, tmp_path / "a", seed=3)
    again = prepare_data(str(data), None, tmp_path / "b", seed=3)
    assert first.counts == {"train": 140, "val": 30, "test": 30}
    assert (tmp_path / "a" / "val.jsonl").read_text() == (tmp_path / "b" / "val.jsonl").read_text()
    assert any("no val or test split" in n and "stratified by label" in n for n in first.notes)
    labels = [json.loads(x)["messages"][-1]["content"] for x in (tmp_path / "a" / "val.jsonl").read_text().splitlines()]
    assert sorted({labels.count(label) for label in set(labels)}) in ([7, 8], [7], [8])  # a quarter each
    # the dataset's own splits are used as they are
    own = prepare_data(str(TICKETS / "train.jsonl"), None, tmp_path / "c")
    assert own.counts == {"train": 300, "val": 60, "test": 80} and not own.notes


# --- whole sweeps of real jobs ------------------------------------------------------------------------

SMALL_SPACE = """
[sweep]
eta = 2
rungs = 2
max_trials = 4
[methods.fewshot]
k = [2]
sampler = ["random"]
[methods.feature]
layer = [-1]
[methods.lora]
"lora.r" = [4, 8]
"train.epochs" = [1]
"train.max_length" = [128]
"train.batch_size" = [16]
"""


def _small_tickets(tmp_path: Path) -> Path:
    folder = tmp_path / "tickets"
    folder.mkdir()
    for split, n in (("train", 96), ("val", 24), ("test", 24)):
        rows = (TICKETS / f"{split}.jsonl").read_text().splitlines()
        (folder / f"{split}.jsonl").write_text("\n".join(rows[:n]) + "\n")  # the files are balanced in order
    return folder / "train.jsonl"


def _job_ids() -> set[str]:
    return {p.name for p in workspace().jobs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}


@pytest.mark.slow
def test_a_sweep_interrupted_resumes_reusing_finished_trials(tiny_model_dir, tmp_path, cli):
    data = _small_tickets(tmp_path)
    space = _space(tmp_path, SMALL_SPACE)
    from tuneterm.workers.kinds import KINDS

    prepared = prepare(str(tiny_model_dir), str(data), space=str(space), job_kinds=set(KINDS))
    assert [t["method"] for t in prepared.state["trials"]] == ["feature", "fewshot", "lora", "lora"]

    pressed = []

    def stop_in_second_trial(state):  # Ctrl-C (once) while the second trial's job runs
        if state["trials"][1]["status"] == "running" and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt

    first = runner.SweepRunner(prepared.folder, prepared.state, prepared.data,
                               runner.Options(budget_s=600, poll_s=0.2), on_change=stop_in_second_trial)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    saved = runner.load_state(prepared.folder)
    assert saved["status"] == "interrupted"
    done, cut = saved["trials"][:2]
    assert done["status"] == "done" and done["runs"][0]["score"]["n"] == 24
    assert cut["status"] == "stopped" and cut["error"] == "stopped: interrupted"
    cut_job = cut["runs"][0]["train_job"] or cut["runs"][0]["eval_job"]
    assert jobs.get_job(cut_job).state in ("cancelled", "failed")  # failed: killed before its handler was set
    jobs_before = _job_ids()

    code, out, err = cli("sweep", "--model", str(tiny_model_dir), "--data", str(data), "--space", str(space),
                         "--budget", "10m", "--json")
    assert code == 0, err
    assert "(resumed)" in err
    doc = json.loads(out)
    assert doc["sweep"] == saved["id"] and doc["status"] == "finished" and doc["shape"] == "classification"
    # the finished trial was reused: same jobs, no new run
    again = next(r for r in doc["leaderboard"] if r["key"] == done["key"])
    run = done["runs"][0]
    assert again["job"] == (run["train_job"] or run["eval_job"]) and again["value"] == run["score"]["value"]
    state = runner.load_state(prepared.folder)
    assert len(state["trials"][0]["runs"]) == 1
    # the interrupted trial's job was resumed, not started again
    assert [r["train_job"] or r["eval_job"] for r in state["trials"][1]["runs"]] == [cut_job]
    assert state["trials"][1]["status"] == "done" and jobs.get_job(cut_job).state == "succeeded"
    # successive halving: of the two LoRA trials, one went on to the second rung, the other was pruned
    loras = [t for t in state["trials"] if t["method"] == "lora"]
    assert sorted(t["status"] for t in loras) == ["done", "pruned"]
    assert sorted(len(t["runs"]) for t in loras) == [1, 2]
    promoted = next(t for t in loras if t["status"] == "done")
    assert promoted["runs"][0]["steps"] == 3 and promoted["runs"][1]["steps"] is None  # 96/16 = 6 steps; 6/2
    # the leaderboard: ranked by the validation metric, intervals and costs on every scored row
    board = doc["leaderboard"]
    values = [r["value"] for r in board if r["value"] is not None]
    assert values == sorted(values, reverse=True) and len(values) == 4
    for row in board:
        lo, hi = row["ci95"]
        assert lo <= row["value"] <= hi and row["cost"]["wall_s"] > 0
    assert all(r["cost"].get("train_tokens") for r in board if r["method"] == "lora")
    # the best is a usable job:ID; the test split compared it with the base model and the runner-up
    best = doc["best"]
    assert best == board[0]["job"] and doc["best_ref"] == board[0]["ref"]
    if board[0]["method"] != "fewshot":
        assert modelref.job_artifact(best, workspace().jobs_dir).kind in ("classifier", "adapter")
    final = doc["final"]
    assert final["state"] == "done" and set(final["scores"]) == {"best", "base", "runner_up"}
    assert final["scores"]["base"]["ref"] == str(tiny_model_dir) and final["scores"]["best"]["n"] == 24
    assert {c["other"] for c in final["comparisons"]} == {"base", "runner_up"}
    for c in final["comparisons"]:
        assert c["test"] == "mcnemar_exact" and (c["significant"] or any(c["ref"] in w for w in final["warnings"]))

    # once more: everything is finished, nothing new runs
    jobs_after = _job_ids()
    assert jobs_before < jobs_after
    code, out, _ = cli("sweep", "--model", str(tiny_model_dir), "--data", str(data), "--space", str(space),
                       "--budget", "10m")
    assert code == 0 and _job_ids() == jobs_after
    assert "tuneterm sweep" in out and f"best: job:{best}" in out


def test_a_value_the_recipe_rejects_fails_before_any_job(tmp_path, cli):
    model = tmp_path / "no-weights"
    model.mkdir()
    space = _space(tmp_path, '[methods.lora]\n"train.batch_size" = [0]\n')
    code, out, err = cli("sweep", "--model", str(model), "--data", str(_small_tickets(tmp_path)),
                         "--space", str(space), "--budget", "1m")
    assert code == 2 and "trial 'lora batch_size=0'" in err and str(space) in err and "train.batch_size" in err
    assert _job_ids() == set()
