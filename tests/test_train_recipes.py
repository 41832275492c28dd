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
