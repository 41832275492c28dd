"""`tuneterm train --method X`: every method resolves its recipe and prints it with --dry-run; bad
overrides and bad stages are named before any job exists (torch-free, in-process)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tuneterm.core import recipes

REPO = Path(__file__).resolve().parents[1]
TICKETS = str(REPO / "sample_data" / "tickets" / "train.jsonl")
PREFS = str(REPO / "sample_data" / "preferences" / "train.jsonl")
STAGE_DATA = (f"stages.1.data={REPO / 'sample_data' / 'general'}",
              f"stages.2.data={REPO / 'sample_data' / 'domain_qa'}")

ARGS = {
    "full": ("--model", "smollm2", "--data", TICKETS),
    "freeze": ("--model", "smollm2", "--data", TICKETS),
    "lora": ("--model", "smollm2", "--data", TICKETS, "lora.r=4"),
    "qlora": ("--model", "smollm2", "--data", TICKETS),
    "dpo": ("--model", "smollm2", "--data", PREFS),
    "sequential": ("--model", "smollm2", "train.max_steps=20", *STAGE_DATA),
    "distill": ("--model", "smollm2", "--data", TICKETS, "steps=5", "keep_layers=[0,2]"),
    "feature": ("--data", str(REPO / "sample_data" / "tickets"), "layer=-2"),
    "cls_head": ("--model", "smollm2", "--data", TICKETS, "head.tune=full"),
}


def _toml(out: str) -> dict:
    return tomllib.loads(out)  # the first line is a TOML comment


@pytest.mark.parametrize("method", list(ARGS))
def test_dry_run_prints_the_resolved_config(cli, tmp_workspace, method):
    code, out, err = cli("train", "--method", method, *ARGS[method], "--dry-run")
    assert code == 0, err
    assert out.startswith(f"# tuneterm train --method {method}: job kind {recipes.KINDS[method]}")
    config = _toml(out)
    assert config["method"] == method
    assert not list(tmp_workspace.jobs_dir.glob("2*"))  # nothing was created
    if method in ("full", "freeze", "lora", "qlora", "dpo"):
        assert config["data"].endswith("train.jsonl") and config["model"] == "smollm2"
    if method == "lora":
        assert config["lora"]["r"] == 4 and config["eval_data"].endswith("val.jsonl")
    if method == "sequential":
        assert [s["name"] for s in config["stages"]] == ["general", "domain_qa"]
        assert [s["train"]["max_steps"] for s in config["stages"]] == [20, 20]
        assert config["stages"][1]["eval_data"].endswith("domain_qa/val.jsonl")
        assert config["stages"][1]["lora"]["r"] == 16
    if method == "distill":
        assert config["teacher"] == "smollm2" and config["keep_layers"] == [0, 2] and config["steps"] == 5
    if method == "feature":
        assert config["layer"] == -2 and config["dataset"].endswith("tickets")
    if method == "cls_head":
        assert config["head"]["tune"] == "full" and config["eval_data"].endswith("val.jsonl")


@pytest.mark.parametrize("method, override, key", [
    ("lora", "lora.rnk=4", "lora.rnk"),
    ("distill", "alpah=0.3", "alpah"),
    ("feature", "pooling=max", "pooling"),
    ("sequential", "train.lrr=1e-4", "train.lrr"),
    ("sequential", "stages.domain_qa.lora.rr=4", "lora.rr"),
])
def test_bad_override_names_the_key(cli, tmp_workspace, method, override, key):
    args = list(ARGS[method])
    code, _, err = cli("train", "--method", method, *args, override, "--dry-run")
    assert code == 2, err
    assert key in err
    assert "Traceback" not in err


def test_sequential_recipe_with_a_bad_stage_names_the_stage(cli, tmp_path):
    recipe = tmp_path / "pipe.toml"
    recipe.write_text(f'''method = "sequential"

[[stages]]
name = "warmup"
method = "full"
data = "{REPO / 'sample_data' / 'general'}"

[[stages]]
name = "domain"
method = "lora"
data = "{REPO / 'sample_data' / 'domain_qa'}"

[stages.train]
learning_rate = 1e-4
''')
    code, _, err = cli("train", "--method", "sequential", "--model", "smollm2", "--recipe", str(recipe), "--dry-run")
    assert code == 2
    assert "stage 2 (domain)" in err and "train.learning_rate" in err and str(recipe) in err
    recipe.write_text(recipe.read_text().replace('method = "lora"', 'method = "lorra"').replace("learning_rate", "lr"))
    code, _, err = cli("train", "--method", "sequential", "--model", "smollm2", "--recipe", str(recipe), "--dry-run")
    assert code == 2 and "stage 2 (domain)" in err and "did you mean lora" in err
    recipe.write_text(recipe.read_text().replace("lorra", "lora").replace("domain_qa", "no_such_data"))
    code, _, err = cli("train", "--method", "sequential", "--model", "smollm2", "--recipe", str(recipe), "--dry-run")
    assert code == 4 and "stage 2 (domain)" in err and "no_such_data" in err


def test_methods_need_their_arguments(cli):
    code, _, err = cli("train", "--method", "lora", "--data", TICKETS, "--dry-run")
    assert code == 2 and "--model is required" in err
    code, _, err = cli("train", "--method", "sequential", "--model", "smollm2", "--data", TICKETS, "--dry-run")
    assert code == 2 and "stages.NAME.data" in err
    code, _, err = cli("train", "--method", "feature", "--data", TICKETS, "--nproc", "2", "--dry-run")
    assert code == 2 and "--nproc" in err

