"""Experiment trackers: a LoRA job with log.report_to=["tensorboard","mlflow"] leaves TensorBoard
event files and an MLflow run (read back with their own readers), with the job id as the run name
and the frozen config as parameters; a quantize gate's figures join that run; a tracker that is not
installed fails in the plan, naming the extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneterm.core import tracking
from tuneterm.core.errors import ConfigError, UsageError
from tuneterm.core.jobs.plan import plan_train

REPO = Path(__file__).resolve().parents[1]
ENV_KEYS = ("TENSORBOARD_LOGGING_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE",
            "MLFLOW_RUN_ID", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "TRACKIO_DIR")


@pytest.fixture
def clean_tracker_env(monkeypatch):
    for key in ENV_KEYS:  # set-then-restored: the job sets its stores into this process's environment
        monkeypatch.setenv(key, "")


def _data(tmp_path, n=16) -> Path:
    lines = (REPO / "sample_data" / "tickets" / "train.jsonl").read_text().splitlines()[:n]
    path = tmp_path / "tickets.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_lora_job_logs_to_tensorboard_and_mlflow(tiny_model_dir, tmp_path, tmp_workspace, clean_tracker_env):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import train

    plan = plan_train("lora", model=str(tiny_model_dir), data=str(_data(tmp_path)),
                      overrides=['log.report_to=["tensorboard","mlflow"]', "train.max_steps=4", "train.batch_size=2",
                                 "log.every_steps=1", "lora.r=4", "checkpoint.every_steps=100"])
    job = plan.create()
    train.run(JobContext(job.dir))
    record = json.loads((job.dir / "tracking.json").read_text())
    assert set(record) == {"tensorboard", "mlflow"}

    acc = EventAccumulator(str(job.dir / "tracking" / "tensorboard"))
    acc.Reload()
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]
    events = [json.loads(x) for x in (job.dir / "events.jsonl").read_text().splitlines()]
    ours = [e["loss"] for e in events if e.get("type") == "train"]
    assert [round(e.value, 4) for e in losses] == [round(v, 4) for v in ours]  # the same curve as events.jsonl
    assert "tuneterm_config/text_summary" in acc.Tags()["tensors"]  # the frozen config, as text

    uri = (tmp_workspace.root / "mlruns").as_uri()
    assert record["mlflow"]["tracking_uri"] == uri
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([record["mlflow"]["experiment_id"]], f"tags.`mlflow.runName` = '{job.id}'")
    assert [r.info.run_id for r in runs] == [record["mlflow"]["run_id"]]
    run = runs[0]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]
    assert run.data.params["tuneterm.lora.r"] == "4"
    assert run.data.params["tuneterm.method"] == "lora"
    assert json.loads(run.data.params["tuneterm.log.report_to"]) == ["tensorboard", "mlflow"]
    assert run.info.status == "FINISHED"

    # a real quantize job of job:ID: its gate figures and report land in the same run, its card has the gate
    from test_quant_cpu import run_job

    quant = run_job(f"job:{job.id}", "int8-dynamic")
    hist = client.get_metric_history(run.info.run_id, "quant/ppl_increase")
    quality = json.loads((quant.dir / "output" / "quality.json").read_text())
    assert [round(m.value, 6) for m in hist] == [round(quality["ppl_increase"], 6)]
    assert client.get_run(run.info.run_id).data.metrics["quant/gate_passed"] == 1.0
    acc = EventAccumulator(str(job.dir / "tracking" / "tensorboard"))
    acc.Reload()
    assert len(acc.Scalars("quant/ppl_increase")) == 1
    from tuneterm.workers.quantize.gate import GateFailed

    with pytest.raises(GateFailed):  # a failed gate is logged too
        run_job(f"job:{job.id}", "int8-dynamic", "quant.bits=2", "gate.min_top1_agreement=0.9", "gate.max_mean_kl=0.01")
    assert [m.value for m in client.get_metric_history(run.info.run_id, "quant/gate_passed")] == [1.0, 0.0]
    card = (quant.dir / "output" / "README.md").read_text()
    assert card.startswith("---\n") and "## Quantization gate" in card and "Gate: **passed**" in card
    assert f"`job:{job.id}`" in card  # its lineage

    # and an eval report that scored job:ID, with its intervals
    from tuneterm.workers.tracking import log_eval_report

    report = {"variants": [{"id": "tuned", "ref": f"job:{job.id}"}, {"id": "base", "ref": "smollm2-135m-instruct"}],
              "tasks": {"tickets": {"variants": {"tuned": {"n": 40, "metrics": {
                  "accuracy": {"value": 0.8, "ci95": [0.66, 0.9]}}}}}}}
    assert log_eval_report(report) == [f"job:{job.id}"]
    run = client.get_run(run.info.run_id)
    assert run.data.metrics["eval/tickets/accuracy"] == 0.8
    assert run.data.metrics["eval/tickets/accuracy_ci_low"] == 0.66


def test_quantize_of_an_untracked_job_logs_nowhere(tmp_path):
    from tuneterm.workers.tracking import log_to_source

    (tmp_path / "abc").mkdir()
    (tmp_path / "abc" / "spec.toml").write_text('[job]\nid = "abc"\n[config]\nmodel = "smollm2-135m-instruct"\n')
    assert not log_to_source("job:abc", tmp_path, {"x": 1.0})
    assert not log_to_source("smollm2-135m-instruct", tmp_path, {"x": 1.0})


def test_missing_tracker_fails_in_the_plan_naming_the_extra(tiny_model_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UsageError) as err:
        plan_train("lora", model=str(tiny_model_dir), data=str(_data(tmp_path)), overrides=["log.report_to=wandb"])
    text = err.value.render()
    assert "wandb" in text and "tuneterm[tracking]" in text and "not installed" in text
    with pytest.raises(ConfigError) as err:
        plan_train("lora", model=str(tiny_model_dir), data=str(_data(tmp_path)),
                   overrides=["log.report_to=tensorbord"])
    assert "did you mean tensorboard" in err.value.render()


def test_trackio_when_absent_names_its_own_install(tiny_model_dir, tmp_path):
    import importlib.util

    if importlib.util.find_spec("trackio") is not None:
        pytest.skip("trackio is installed here")
    with pytest.raises(UsageError) as err:
        plan_train("lora", model=str(tiny_model_dir), data=str(_data(tmp_path)), overrides=["log.report_to=trackio"])
    assert "pip install trackio" in err.value.render() and "tuneterm[tracking]" not in err.value.render()


def test_missing_tracker_from_the_cli_exits_2_before_a_job(cli, tiny_model_dir, tmp_path, monkeypatch, tmp_workspace):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    code, out, err = cli("train", "--method", "lora", "--model", str(tiny_model_dir), "--data",
                         str(_data(tmp_path)), "log.report_to=mlflow")
    assert code == 2 and "pip install 'tuneterm[tracking]'" in err
    assert not list((tmp_workspace.root / "jobs").glob("*")) if (tmp_workspace.root / "jobs").exists() else True


def test_every_training_recipe_has_report_to():
    from tuneterm.core import recipes

    for method in recipes.ALL_METHODS:
        config = recipes.default_recipe(method)
        assert config["log"]["report_to"] == [], method


def test_tracking_env_keeps_what_the_user_set(tmp_path):
    job = tmp_path / "ws" / "jobs" / "j1"
    env = tracking.tracking_env(job, {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000", "WANDB_MODE": "online"})
    assert "MLFLOW_TRACKING_URI" not in env and "WANDB_MODE" not in env and "MLFLOW_ALLOW_FILE_STORE" not in env
    assert env["TENSORBOARD_LOGGING_DIR"] == str(job.resolve() / "tracking" / "tensorboard")
    env = tracking.tracking_env(job, {})
    assert env["MLFLOW_TRACKING_URI"] == (tmp_path / "ws" / "mlruns").resolve().as_uri()
    assert env["WANDB_MODE"] == "offline" and env["MLFLOW_ALLOW_FILE_STORE"] == "true"
    env = tracking.tracking_env(job, {}, ("tensorboard", "mlflow"))  # only the trackers asked for: transformers
    assert not [k for k in env if k.startswith(("WANDB_", "TRACKIO_"))]  # prints a W&B line when WANDB_MODE is set
    assert env["MLFLOW_ALLOW_FILE_STORE"] == "true" and "TENSORBOARD_LOGGING_DIR" in env
    assert "MLFLOW_ALLOW_FILE_STORE" not in tracking.tracking_env(job, {}, ("wandb",))


def _wandb_records(path: Path):
    """The protobuf records of an offline W&B run file (its LevelDB-style log: 32 KiB blocks, each record
    a 7-byte header - crc32, length, type full/first/middle/last - after the file's 7-byte ':W&B' header)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_lora_job_logs_to_wandb_offline(tiny_model_dir, tmp_path, tmp_workspace, clean_tracker_env):
    pytest.importorskip("wandb")

    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import train

    plan = plan_train("lora", model=str(tiny_model_dir), data=str(_data(tmp_path)),
                      overrides=['log.report_to=["wandb"]', "train.max_steps=3", "train.batch_size=2",
                                 "log.every_steps=1", "lora.r=4"])
    job = plan.create()
    train.run(JobContext(job.dir))
    record = json.loads((job.dir / "tracking.json").read_text())["wandb"]
    assert record["mode"] == "offline" and record["name"] == job.id
    files = list((job.dir / "tracking" / "wandb").glob(f"offline-run-*-{record['run_id']}/run-{record['run_id']}.wandb"))
    assert len(files) == 1
    records = list(_wandb_records(files[0]))
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert [r.display_name for r in runs] == [job.id]
    config = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for u in r.config.update}
    assert config["tuneterm.lora.r"] == "4" and config["tuneterm.method"] == "lora"  # the frozen config
    losses = [json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "history"
              for i in r.history.item if (i.key or "/".join(i.nested_key)) == "train/loss"]
    events = [json.loads(x) for x in (job.dir / "events.jsonl").read_text().splitlines()]
    assert [round(v, 4) for v in losses] == [round(e["loss"], 4) for e in events if e.get("type") == "train"]


def test_sequential_pipeline_logs_each_stage_as_its_own_run(tiny_model_dir, tmp_path, tmp_workspace,
                                                            clean_tracker_env):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_method_sequential import _recipe

    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import sequential

    plan = plan_train("sequential", model=str(tiny_model_dir), recipe=_recipe(tmp_path),
                      overrides=["train.max_steps=2", "log.every_steps=1", "stages.domain_qa.lora.r=4",
                                 'log.report_to=["tensorboard","mlflow"]', "eval.base=false"])
    job = plan.create()
    sequential.run(JobContext(job.dir))
    client = mlflow.MlflowClient((tmp_workspace.root / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tuneterm")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {f"{job.id}-stage1-general", f"{job.id}-stage2-domain_qa"}
    for run in runs.values():
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert runs[f"{job.id}-stage2-domain_qa"].data.params["tuneterm.method"] == "lora"
    for name in runs:  # each stage's curve in its own TensorBoard folder
        acc = EventAccumulator(str(job.dir / "tracking" / "tensorboard" / name))
        acc.Reload()
        assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]


def test_feature_classifier_without_a_trainer_logs_through_its_own_hook(tiny_model_dir, tmp_path, tmp_workspace,
                                                                       clean_tracker_env):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_method_feature import _write

    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import feature

    data = tmp_path / "easy"
    data.mkdir()
    for split, n, seed in (("train", 20, 1), ("val", 10, 2), ("test", 10, 3)):
        _write(data, split, n, seed)
    job = plan_train("feature", model=str(tiny_model_dir), data=str(data),
                     overrides=['log.report_to=["tensorboard","mlflow"]']).create()
    feature.run(JobContext(job.dir))
    metrics = json.loads((job.dir / "output" / "metrics.json").read_text())
    record = json.loads((job.dir / "tracking.json").read_text())
    run = mlflow.MlflowClient(record["mlflow"]["tracking_uri"]).get_run(record["mlflow"]["run_id"])
    assert run.info.run_name == job.id and run.data.params["tuneterm.pooling"] == "mean"
    assert run.info.status == "FINISHED"
    assert run.data.metrics["feature/val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    acc = EventAccumulator(record["tensorboard"]["logdir"])
    acc.Reload()
    assert acc.Scalars("feature/test_accuracy")[0].value == pytest.approx(metrics["test_accuracy"])
    assert (job.dir / "output" / "README.md").read_text().startswith("---\n")


def test_a_resumed_job_goes_on_in_the_same_mlflow_run(tiny_model_dir, tmp_path, tmp_workspace, clean_tracker_env):
    mlflow = pytest.importorskip("mlflow")
    from stop_context import StopAtStep

    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import train

    job = plan_train("lora", model=str(tiny_model_dir), data=str(_data(tmp_path)),
                     overrides=['log.report_to=["mlflow"]', "train.max_steps=5", "train.batch_size=2",
                                "log.every_steps=1", "lora.r=4", "checkpoint.every_steps=100"]).create()
    train.run(StopAtStep(job.dir, at=2))
    first = json.loads((job.dir / "tracking.json").read_text())["mlflow"]["run_id"]
    train.run(JobContext(job.dir, resume=True))
    record = json.loads((job.dir / "tracking.json").read_text())["mlflow"]
    assert record["run_id"] == first
    client = mlflow.MlflowClient(record["tracking_uri"])
    steps = sorted({m.step for m in client.get_metric_history(first, "loss")})
    assert steps == [1, 2, 3, 4, 5]
    assert len(client.search_runs([record["experiment_id"]])) == 1


def test_an_eval_of_a_tracked_job_logs_its_scores_to_the_run(tiny_model_dir, tmp_path, tmp_workspace,
                                                             clean_tracker_env):
    mlflow = pytest.importorskip("mlflow")
    from tuneterm.core.evals.spec import load_task
    from tuneterm.core.evals.variants import parse_variants
    from tuneterm.workers.evals.runner import RunOptions, run_eval
    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import train

    job = plan_train("lora", model=str(tiny_model_dir), data=str(_data(tmp_path)),
                     overrides=['log.report_to=["mlflow"]', "train.max_steps=2", "train.batch_size=2",
                                "lora.r=4"]).create()
    train.run(JobContext(job.dir))
    rows = [{"id": f"g{i}", "messages": [{"role": "user", "content": f"Ticket {i}"},
                                         {"role": "assistant", "content": "billing"}]} for i in range(4)]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "gen.yaml").write_text("name: gen\nversion: 1\ntype: generate\ndata: {path: gen.jsonl}\n"
                                       "generation: {max_new_tokens: 3}\nmetrics: [exact_match]\n")
    report = run_eval([load_task(tmp_path / "gen.yaml")], parse_variants([f"job:{job.id}"]),
                      RunOptions(out_dir=tmp_path / "eval", progress=False))
    value = next(iter(report["tasks"]["gen"]["variants"].values()))["metrics"]["exact_match"]["value"]
    record = json.loads((job.dir / "tracking.json").read_text())["mlflow"]
    metrics = mlflow.MlflowClient(record["tracking_uri"]).get_run(record["run_id"]).data.metrics
    assert metrics["eval/gen/exact_match"] == pytest.approx(value)
    from huggingface_hub import ModelCard

    card = ModelCard((job.dir / "output" / "README.md").read_text())  # the job's card now has the eval
    assert [(r.task_name, r.metric_type) for r in card.data.eval_results] == [("gen", "exact_match")]


def test_lora_job_logs_to_trackio_locally(tiny_model_dir, tmp_path, tmp_workspace, clean_tracker_env):
    """trackio's local store (a SQLite file per project under TRACKIO_DIR): the run is named after the job,
    its config carries the frozen recipe and its metrics are the job's own losses. The job runs in its own
    child process, as every job does: trackio reads TRACKIO_DIR once, when first imported (TRL imports it
    too), so the child must point it at the workspace before any library loads it."""
    import importlib.util
    import os
    import sqlite3
    import subprocess
    import sys

    if importlib.util.find_spec("trackio") is None:
        pytest.skip("trackio is not installed (pip install trackio)")

    plan = plan_train("lora", model=str(tiny_model_dir), data=str(_data(tmp_path)),
                      overrides=['log.report_to=["trackio"]', "train.max_steps=3", "train.batch_size=2",
                                 "log.every_steps=1", "lora.r=4"])
    job = plan.create()
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # trackio's default store: the test fails if the job writes there
    child = subprocess.run([sys.executable, "-m", "tuneterm.workers.run", str(job.dir)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    record = json.loads((job.dir / "tracking.json").read_text())["trackio"]
    assert record["name"] == job.id and Path(record["dir"]) == tmp_workspace.root / "trackio"
    assert not (tmp_path / "hf-home" / "trackio").exists()
    with sqlite3.connect(Path(record["dir"]) / f"{record['project']}.db") as db:
        metrics = [json.loads(m) for run, m in db.execute("SELECT run_name, metrics FROM metrics ORDER BY step")
                   if run == job.id]
        [config] = [json.loads(c) for (c,) in db.execute("SELECT config FROM configs WHERE run_name = ?", (job.id,))]
    assert config["tuneterm.lora.r"] == "4" and config["tuneterm.method"] == "lora"
    losses = [m["train/loss"] for m in metrics if "train/loss" in m]
    events = [json.loads(x) for x in (job.dir / "events.jsonl").read_text().splitlines()]
    assert [round(v, 4) for v in losses] == [round(e["loss"], 4) for e in events if e.get("type") == "train"]


def _dpo_job(tiny_model_dir, tmp_path, report_to):
    from test_method_dpo import _config, _pairs

    from tuneterm.core import jobs

    config = _config(tiny_model_dir, _pairs(tmp_path, 8), max_steps=3)
    config["log"]["report_to"] = report_to
    return jobs.create_job("train", config)


def _distill_job(tiny_model_dir, tmp_path, report_to):
    from tuneterm.core import jobs

    return jobs.create_job("distill", {"teacher": str(tiny_model_dir), "keep_layers": [0],
                                       "data": str(_data(tmp_path, 8)), "steps": 3, "lr": 1e-3, "batch_size": 4,
                                       "log": {"report_to": report_to, "every_steps": 1}})


def _cls_head_job(tiny_model_dir, tmp_path, report_to):
    from classifier_jobs import SYSTEM, write_examples

    data = write_examples(tmp_path / "heads.jsonl", 16, 1, SYSTEM)
    return plan_train("cls_head", model=str(tiny_model_dir), data=str(data),
                      overrides=[f"log.report_to={json.dumps(report_to)}", "train.max_steps=3", "train.batch_size=4",
                                 "log.every_steps=1", "checkpoint.every_steps=1000"]).create()


@pytest.mark.parametrize("kind,make", [("train", _dpo_job), ("distill", _distill_job), ("cls_head", _cls_head_job)],
                         ids=["dpo", "distill", "cls_head"])
def test_the_other_trainer_kinds_log_to_mlflow(tiny_model_dir, tmp_path, tmp_workspace, clean_tracker_env, kind, make):
    """DPO, distillation and the classification head report through Trainer's MLflow integration like LoRA:
    one run named after the job, its losses by step, the frozen config as parameters, finished."""
    mlflow = pytest.importorskip("mlflow")
    import importlib

    from tuneterm.workers.jobctx import JobContext

    job = make(tiny_model_dir, tmp_path, ["mlflow"])
    importlib.import_module(f"tuneterm.workers.kinds.{kind}").run(JobContext(job.dir))
    record = json.loads((job.dir / "tracking.json").read_text())["mlflow"]
    assert record["tracking_uri"] == (tmp_workspace.root / "mlruns").as_uri()
    client = mlflow.MlflowClient(record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.run_name == job.id and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    assert any(k.startswith("tuneterm.") for k in run.data.params)
    assert len(client.search_runs([record["experiment_id"]])) == 1
