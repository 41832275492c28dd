"""Recipes: commented TOML, validated before launch, overrides type-checked (torch-free)."""

from __future__ import annotations

import pytest

from tuneterm.core import recipes
from tuneterm.core.errors import ConfigError


@pytest.mark.parametrize("method", recipes.METHODS)
def test_builtin_recipes_are_commented_and_valid(method):
    path = recipes.recipe_path(method)
    text = path.read_text()
    assert "tuneterm train --model" in text.splitlines()[2] and f"--method {method}" in text
    for line in text.splitlines():
        stripped = line.strip()
        if "=" in stripped and not stripped.startswith("#"):
            assert "#" in stripped, f"{path.name}: setting without a comment: {stripped}"
    config = recipes.resolve(method)
    assert config["method"] == method and config["train"]["batch_size"] >= 1


def test_overrides_are_typed_and_nested():
    config = recipes.resolve("lora", overrides=["lora.r=8", "train.lr=1e-4", "train.gradient_checkpointing=true",
                                                "lora.target_modules=q_proj,v_proj", "train.epochs=3"])
    assert config["lora"]["r"] == 8 and config["train"]["lr"] == 1e-4
    assert config["train"]["gradient_checkpointing"] is True
    assert config["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert recipes.resolve("lora", overrides=['lora.target_modules=["o_proj"]'])["lora"]["target_modules"] == ["o_proj"]
    assert recipes.resolve("freeze", overrides=["freeze.modules=model.norm"])["freeze"]["modules"] == ["model.norm"]


def test_unknown_key_lists_close_matches():
    with pytest.raises(ConfigError) as err:
        recipes.resolve("lora", overrides=["lora.rank=8"])
    assert "unknown recipe key 'lora.rank'" in err.value.title and "lora.r" in err.value.hint
    with pytest.raises(ConfigError) as err:
        recipes.resolve("full", overrides=["lora.r=8"])  # a LoRA key on a full fine-tune
    assert "lora.r" in err.value.title


@pytest.mark.parametrize("override, words", [
    ("lora.r=eight", "whole number"), ("train.lr=fast", "a number"), ("train.loss=assist", "assistant"),
    ("train.gradient_checkpointing=maybe", "true or false"), ("train.batch_size=0", "at least 1"),
    ("lora.dropout=1.5", "below 1"), ("noequals", "key.sub=value"), ("method=full", "--method"),
])
def test_bad_overrides_fail_with_a_clear_message(override, words):
    with pytest.raises(ConfigError) as err:
        recipes.resolve("lora", overrides=[override])
    assert words in err.value.render()


def test_user_recipe_file_is_checked_against_the_method(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('method = "lora"\n[train]\nlr = 1e-3\n[lora]\nr = 4\n')
    config = recipes.resolve("lora", good, ["train.epochs=1"])
    assert config["train"]["lr"] == 1e-3 and config["lora"]["r"] == 4 and config["train"]["epochs"] == 1
    assert config["lora"]["alpha"] == 32  # the rest from the built-in recipe
    typo = tmp_path / "typo.toml"
    typo.write_text('[train]\nlearning_rate = 1e-3\n')
    with pytest.raises(ConfigError) as err:
        recipes.resolve("lora", typo)
    assert "train.learning_rate" in err.value.title and str(typo) in err.value.render()
    broken = tmp_path / "broken.toml"
    broken.write_text('[train\nlr = 1\n')
    with pytest.raises(ConfigError) as err:
        recipes.resolve("lora", broken)
    assert "line 1" in err.value.render()
    other = tmp_path / "other.toml"
    other.write_text('method = "full"\n')
    with pytest.raises(ConfigError, match="another method"):
        recipes.resolve("lora", other)


def test_train_command_validates_before_creating_a_job(cli, tmp_workspace):
    code, _, err = cli("train", "--model", "smollm2", "--data", "sample_data/tickets/train.jsonl",
                       "--method", "lora", "lora.rnk=4")
    assert code == 2 and "did you mean lora.r" in err
    code, _, err = cli("train", "--model", "smollm2", "--data", "nope.jsonl", "--method", "lora")
    assert code == 4
    assert not list((tmp_workspace.jobs_dir).glob("2*"))
    code, out, _ = cli("train", "--model", "smollm2", "--data", "sample_data/tickets/train.jsonl",
                       "--method", "qlora", "--dry-run", "lora.r=4")
    assert code == 0 and 'method = "qlora"' in out and "r = 4" in out and "val.jsonl" in out


@pytest.mark.parametrize("method", recipes.ALL_METHODS)
def test_every_train_method_has_a_recipe_that_resolves(method):
    assert recipes.recipe_path(method).is_file()
    config = recipes.resolve(method)
    expected = {"sequential": "sequential", "distill": "distill", "feature": "feature",
                "cls_head": "cls_head"}.get(method, "train")
    assert config["method"] == method and recipes.kind_of(method) == expected


def test_sequential_recipe_is_commented_and_its_stages_resolve():
    path = recipes.recipe_path("sequential")
    text = path.read_text()
    assert "tuneterm train --model" in text.splitlines()[2] and "--method sequential" in text
    for line in text.splitlines():
        stripped = line.strip()
        if ("=" in stripped or stripped.startswith("[")) and not stripped.startswith("#"):
            assert "#" in stripped, f"{path.name}: setting without a comment: {stripped}"
    config = recipes.resolve("sequential", overrides=["train.max_steps=5", "stages.2.lora.r=4",
                                                      "stages.general.train.lr=1e-5", "eval.base=false"])
    first, second = config["stages"]
    assert (first["method"], second["method"]) == ("full", "lora")
    assert first["train"]["max_steps"] == second["train"]["max_steps"] == 5
    assert second["lora"]["r"] == 4 and first["train"]["lr"] == 1e-5 and config["eval"]["base"] is False
    assert second["train"]["lr"] == 3e-4  # the rest from recipes/lora.toml
    with pytest.raises(ConfigError, match="stage 2 \\(domain_qa\\)"):
        recipes.resolve("sequential", overrides=["stages.domain_qa.train.batch_size=0"])
    with pytest.raises(ConfigError, match="no stage 'nope'"):
        recipes.resolve("sequential", overrides=["stages.nope.train.lr=1"])
    with pytest.raises(ConfigError, match="unknown recipe key 'lora.rank'"):
        recipes.resolve("sequential", overrides=["lora.rank=4"])  # no stage's method knows it


def test_sequential_user_recipe_replaces_the_stages(tmp_path):
    mine = tmp_path / "pipe.toml"
    mine.write_text('method = "sequential"\n[[stages]]\nname = "only"\nmethod = "freeze"\ndata = "x.jsonl"\n'
                    '[stages.freeze]\nlast_n_blocks = 1\n')
    config = recipes.resolve("sequential", mine)
    assert [s["name"] for s in config["stages"]] == ["only"] and config["stages"][0]["freeze"]["last_n_blocks"] == 1
    mine.write_text('method = "sequential"\n[[stages]]\nname = "a"\nmethod = "full"\ndata = "x"\n'
                    '[[stages]]\nname = "a"\nmethod = "full"\ndata = "y"\n')
    with pytest.raises(ConfigError, match="two stages are named 'a'"):
        recipes.resolve("sequential", mine)
    mine.write_text('method = "sequential"\n[[stages]]\nname = "a"\nmethod = "full"\n')
    with pytest.raises(ConfigError, match="stage 1 \\(a\\): the stage has no data"):
        recipes.resolve("sequential", mine)
    mine.write_text('method = "sequential"\n[eval]\nbase = false\n')  # no stages: the built-in ones
    assert [s["name"] for s in recipes.resolve("sequential", mine)["stages"]] == ["general", "domain_qa"]
    mine.write_text('method = "sequential"\nstages = []\n')
    with pytest.raises(ConfigError, match="at least one \\[\\[stages\\]\\]"):
        recipes.resolve("sequential", mine)
