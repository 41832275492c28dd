"""tuneterm.core.jobs.plan: every entry point gets the same checks and the same frozen spec
(torch-free, in-process). Model references are frozen to full ids, any importable file trains,
a dataset without splits trains on all its rows, and Ctrl-C on an attached job exits 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tuneterm.core import jobs
from tuneterm.core.jobs.plan import freeze_ref, plan_train

REPO = Path(__file__).resolve().parents[1]
TICKETS = REPO / "sample_data" / "tickets" / "train.jsonl"


def _no_jobs(ws) -> bool:
    return not ws.jobs_dir.exists() or not list(ws.jobs_dir.iterdir())


def test_distill_alias_and_train_method_distill_give_the_same_error(cli, tmp_workspace):
    alias = cli("distill", "--teacher", "smollm2", "--data", str(TICKETS), "alpha=5")
    train = cli("train", "--method", "distill", "--model", "smollm2", "--data", str(TICKETS), "alpha=5")
    assert alias[0] == train[0] == 2
    assert alias[2] == train[2] and "alpha must be between 0 and 1" in alias[2]
    assert _no_jobs(tmp_workspace)


def test_feature_alias_checks_like_train_method_feature(cli, tmp_workspace):
    data = str(REPO / "sample_data" / "tickets")
    alias = cli("feature", "--data", data, "pooling=maximum")
    train = cli("train", "--method", "feature", "--data", data, "pooling=maximum")
    assert alias[0] == train[0] == 2 and alias[2] == train[2]
    assert "pooling must be one of mean, last" in alias[2]
    code, out, err = cli("feature", "--data", data, "layer=-2", "--dry-run")
    assert code == 0, err
    assert tomllib.loads(out)["layer"] == -2
    assert _no_jobs(tmp_workspace)


def _finished_job_with_artifact() -> str:
    job = jobs.create_job("sleep", {"steps": 1, "step_seconds": 0.01, "artifact": True})
    jobs.launch(job.id)
    assert jobs.wait_for(job.id, 30).state == "succeeded", jobs.tail_log(job.id)
    return job.id


def test_quantize_job_last_is_frozen_to_the_job_before_it(cli, tmp_workspace):
    source = _finished_job_with_artifact()
    code, out, err = cli("quantize", "job:last", "--method", "int8-dynamic", "--json")
    assert code == 0, err
    started = json.loads(out)["job"]
    spec = jobs.read_spec(jobs.get_job(started).dir)
    assert spec["config"]["model"] == f"job:{source}"  # not job:last, which is now the quantize job itself
    suffix = source.rsplit("-", 1)[1]
    assert jobs.get_job(started).name == f"int8-dynamic job:{suffix}"  # jobs ls NAME: the job it froze to
    assert freeze_ref(f"job:{suffix}") == f"job:{source}"
    assert freeze_ref(f"fewshot:2:{TICKETS}@job:{source[:-2]}", artifact=False).endswith(f"@job:{source}")
    jobs.cancel(started)


def test_train_accepts_any_file_data_import_accepts(tmp_workspace, tmp_path):
    csv = tmp_path / "tickets.csv"
    rows = ["text,label"] + [f"my card was charged twice ({i}),payments" for i in range(6)] + \
           [f"where is my parcel ({i}),logistics" for i in range(6)]
    csv.write_text("\n".join(rows) + "\n")
    plan = plan_train("lora", model="smollm2", data=str(csv))
    train = Path(plan.config["data"])
    assert train.suffix == ".jsonl" and train != csv
    examples = [json.loads(line) for line in train.read_text().splitlines()]
    assert len(examples) == 12
    assert examples[0]["messages"][-1] == {"role": "assistant", "content": "payments"}
    assert "no validation split" in plan.notes[0]


def test_a_dataset_without_splits_trains_on_all_rows(cli, tmp_workspace, tmp_path):
    src = tmp_path / "few.jsonl"
    src.write_text("".join(TICKETS.read_text().splitlines(keepends=True)[:10]))
    assert cli("data", "import", str(src), "--name", "few")[0] == 0
    code, out, err = cli("train", "--method", "lora", "--model", "smollm2", "--data", "few", "--dry-run")
    assert code == 0, err
    assert "no validation split: training on all 10 examples" in out
    config = tomllib.loads(out)
    assert "eval_data" not in config and Path(config["data"]).is_file()


def test_plans_are_frozen():
    plan = plan_train("lora", model="smollm2", data=str(TICKETS))
    with pytest.raises(TypeError):
        plan.config["model"] = "other"  # type: ignore[index]
    spec = plan.spec()
    spec["lora"]["r"] = 99
    assert plan.config["lora"]["r"] != 99


def test_ctrl_c_on_an_attached_job_exits_130(tmp_workspace):
    code = ("import sys\nfrom tuneterm.core import jobs\nfrom tuneterm.commands.train import foreground\n"
            "job = jobs.create_job('sleep', {'steps': 400, 'step_seconds': 0.05})\n"
            "print(job.id, flush=True)\nsys.exit(foreground(job))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy(), start_new_session=True)
    job_id = proc.stdout.readline().strip()
    deadline = time.monotonic() + 30
    while not [e for e in jobs.read_events(job_id)[0] if e.get("type") == "train"]:
        assert time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the whole group
    assert proc.wait(30) == 130
    assert jobs.get_job(job_id).state == "cancelled"


def test_resume_without_a_checkpoint_says_it_starts_over(cli, tmp_workspace):
    job = jobs.create_job("sleep", {"steps": 2, "step_seconds": 0.01, "crash_at": 0})
    jobs.launch(job.id)
    assert jobs.wait_for(job.id, 30).state == "failed"
    code, out, err = cli("jobs", "resume", job.id)
    assert code == 0, err
    assert "has no checkpoint: it starts over" in out and "resumed from its last checkpoint" not in out
    jobs.wait_for(job.id, 30)


def test_recipes_and_quantize_configs_share_one_settings_mechanism(cli, tmp_workspace):
    code, _, err = cli("train", "--method", "lora", "--model", "smollm2", "--data", str(TICKETS),
                       "train.lr_scheduler=cosin", "--dry-run")
    assert code == 2 and "train.lr_scheduler must be one of linear, cosine" in err and "did you mean cosine" in err
    code, _, err = cli("quantize", "smollm2", "--method", "gguf", "quant.outtype=q8", "--dry-run")
    assert code == 2 and "quant.outtype must be one of f32, f16, q8_0" in err and "did you mean q8_0" in err
    code, _, err = cli("train", "--method", "lora", "--model", "smollm2", "--data", str(TICKETS), "lora.r=0")
    assert code == 2 and "lora.r must be at least 1" in err
    code, _, err = cli("quantize", "smollm2", "gate.max_texts=0")
    assert code == 2 and "gate.max_texts must be at least 1" in err
    assert _no_jobs(tmp_workspace)


def _many_labels(path: Path, n_rows: int = 12) -> Path:
    labels = [f"queue-{i:02d}-{word}" for i, word in enumerate(["billing", "shipping", "platform", "security",
                                                                "returns", "accounts"] * 10)]
    system = "Route the ticket to exactly one queue. Queues: " + ", ".join(labels) + "."
    rows = [{"messages": [{"role": "system", "content": system},
                          {"role": "user", "content": f"ticket number {i}: my parcel is late"},
                          {"role": "assistant", "content": labels[i % len(labels)]}]} for i in range(n_rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_max_length_follows_the_data_and_empty_examples_fail_before_a_job(cli, tmp_workspace, tmp_path,
                                                                         embedded_model_dir):
    data = str(_many_labels(tmp_path / "labels.jsonl"))
    code, out, err = cli("train", "--method", "lora", "--model", "smollm2-135m-instruct", "--data", data, "--dry-run")
    assert code == 0, err
    chosen = tomllib.loads(out)["train"]["max_length"]
    assert chosen > 256 and f"train.max_length = {chosen}: the longest example has about" in out
    code, _, err = cli("train", "--method", "lora", "--model", "smollm2-135m-instruct", "--data", data,
                       "train.max_length=256")
    assert code == 3 and "no example has trainable tokens after truncation" in err and "max_length: 256" in err
    assert _no_jobs(tmp_workspace)


def test_an_eval_job_freezes_its_model_references(tmp_workspace):
    from tuneterm.core.evals.views import check_and_config

    source = _finished_job_with_artifact()
    config, command = check_and_config(str(REPO / "evals" / "tickets"), ["smollm2-135m-instruct", "job:last"],
                                       limit=2)
    assert config["models"] == ["smollm2-135m-instruct", f"job:{source}"]
    assert f"job:{source}" in command


def test_dpo_dry_run_reads_the_pairs_as_the_job_will(cli, tmp_workspace, tmp_path, embedded_model_dir):
    def dry_run(data):
        return cli("train", "--method", "dpo", "--model", "smollm2-135m-instruct", "--data", str(data), "--dry-run")

    # a valid chat file is not a preference file: the DPO worker would stop at its first row
    code, _, err = dry_run(TICKETS)
    assert code == 3, err
    assert f"{TICKETS.name} line 1" in err and str(TICKETS.resolve()) in err and "field: input" in err

    pairs = (REPO / "sample_data" / "preferences" / "train.jsonl").read_text().splitlines()[:3]
    rows = [json.loads(x) for x in pairs]
    del rows[1]["non_preferred_output"]
    broken = tmp_path / "pairs.jsonl"
    broken.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = dry_run(broken)
    assert code == 3 and "pairs.jsonl" in err and "line 2" in err and "non_preferred_output" in err, err

    # TRL's prompt/chosen/rejected rows, which `data validate` accepts, are read by the job too
    trl = tmp_path / "trl.jsonl"
    trl.write_text("".join(json.dumps({"prompt": f"Say {w}.", "chosen": w, "rejected": "no"}) + "\n"
                           for w in ("yes", "ok", "sure")))
    code, out, err = dry_run(trl)
    assert code == 0, err
    from tuneterm.core.datasets.pairs import read_pairs  # what the DPO job reads its data with

    first = read_pairs(tomllib.loads(out)["data"])[0]
    assert first == {"prompt": [{"role": "user", "content": "Say yes."}],
                     "chosen": [{"role": "assistant", "content": "yes"}],
                     "rejected": [{"role": "assistant", "content": "no"}]}
    assert _no_jobs(tmp_workspace)
