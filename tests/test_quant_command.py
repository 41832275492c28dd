"""`tuneterm quantize`: configs are checked before anything loads; --foreground runs the real job child."""

from __future__ import annotations

import json

from tuneterm.core import jobs


def test_bad_settings_fail_fast_without_a_job(cli, tiny_model_dir):
    code, _, err = cli("quantize", str(tiny_model_dir), "--method", "int4-magic")
    assert code == 2 and "unknown quantization method" in err
    code, _, err = cli("quantize", str(tiny_model_dir), "--method", "gguf", "quant.outtype=q3")
    assert code == 2 and "outtype" in err
    code, _, err = cli("quantize", str(tiny_model_dir), "gate.max_ppl=0.1")
    assert code == 2 and "unknown gate settings" in err and "max_ppl_increase" in err
    code, _, err = cli("quantize", "job:nope")
    assert code == 4
    assert jobs.list_jobs() == []


def test_dry_run_prints_the_resolved_config_and_writes_no_job(cli, tiny_model_dir):
    import tomllib

    code, out, _ = cli("quantize", str(tiny_model_dir), "--method", "gguf", "quant.outtype=f16", "--dry-run")
    assert code == 0
    config = tomllib.loads(out)
    assert config["method"] == "gguf" and config["quant"]["outtype"] == "f16"
    assert jobs.list_jobs() == []


def test_every_recipe_resolves():
    from tuneterm.core import quantize_config as qconfig

    for method in qconfig.METHODS:
        recipe = qconfig.load_recipe(qconfig.recipes_dir() / f"{method}.toml")
        config = qconfig.resolve("smollm2-135m-instruct", None, recipe, ["gate.max_ppl_increase=0.02"])
        assert config["method"] == method and config["gate"]["max_ppl_increase"] == 0.02
        # what the job reads back from spec.toml (no nulls) resolves to the same config
        frozen = json.loads(json.dumps(config))
        assert qconfig.from_spec(jobs.store._toml_clean(frozen)) == config


def test_foreground_quantize_prints_the_report_and_makes_a_job_ref(cli, tiny_model_dir):
    code, out, err = cli("quantize", str(tiny_model_dir), "--method", "int8-dynamic", "--foreground",
                         "gate.max_texts=2", "gate.max_length=32", "gate.max_new_tokens=4",
                         'gate.prompts=["Hi"]', "gate.min_exact_match=0.0")
    assert code == 0, err + out
    job = jobs.list_jobs()[-1]
    assert job.state == "succeeded" and job.kind == "quantize"
    assert f"job:{job.id}" in out and "Gate: passed" in out and "| decode (tokens/s) |" in out
    assert job.model_ref == f"job:{job.id}"
    spec = jobs.read_spec(job.dir)
    assert spec["config"]["gate"]["min_exact_match"] == 0.0 and "max_mean_kl" not in spec["config"]["gate"]


def test_recipes_are_checked_like_training_recipes(tmp_path):
    import pytest

    from tuneterm.core.errors import ConfigError
    from tuneterm.core import quantize_config as qconfig

    bad = tmp_path / "mine.toml"
    bad.write_text('method = "int8-dynamic"\n[quant]\nsmoth_alpha = 0.5\n')
    with pytest.raises(ConfigError) as caught:
        qconfig.resolve("m", None, qconfig.load_recipe(bad), source=str(bad))
    assert ("source", str(bad)) in caught.value.facts and "quant.smooth_alpha" in caught.value.hint
    with pytest.raises(ConfigError) as caught:  # a wrong type: the recipe's comment is the help
        qconfig.resolve("m", "int8-dynamic", overrides=["quant.keep_sensitive=some"])
    assert "keep_sensitive" in str(caught.value.facts) and "float" in caught.value.hint
    bad.write_text("[quant\n")
    with pytest.raises(ConfigError):
        qconfig.load_recipe(bad)
    config = qconfig.resolve("m", "int8-dynamic", overrides=["keep_sensitive=3", "gate.max_mean_kl=0.1"])
    assert config["quant"]["keep_sensitive"] == 3 and config["gate"]["max_mean_kl"] == 0.1
    assert qconfig.help_for("int8-dynamic")["quant.smooth_alpha"]


def test_the_chat_recipe_keeps_the_measured_sensitive_layers_float():
    from tuneterm.core import quantize_config as qconfig

    recipe = qconfig.load_recipe("int8-dynamic-chat")
    config = qconfig.resolve("m", None, recipe, source="int8-dynamic-chat")
    assert config["method"] == "int8-dynamic" and config["quant"]["keep_sensitive"] == 8
