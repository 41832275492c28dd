"""Experiment trackers on the ML side: TensorBoard, MLflow, W&B and trackio.

Kinds built on ``transformers.Trainer`` (train, dpo, sequential stages, distill) use Trainer's own
integrations: :func:`trainer_setup` points them at their offline stores, names the run after the job
and returns a callback that adds the frozen config as the run's parameters and writes the job's
``tracking.json``. Work without a Trainer (the feature classifier, a quantize gate, an eval report)
logs through :class:`TrackerRun`, which opens new runs or reopens the runs of a job's record.
Every tracker package is imported only when a recipe asks for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import TrainerCallback

from tuneterm.core import tracking
from tuneterm.core.fsutil import atomic_write_json


def run_name(ctx) -> str:
    """The job id; a sequential stage's run adds the stage (``ID-stage2-domain_qa``)."""
    index = getattr(ctx, "index", None)
    return f"{ctx.id}-stage{index}-{ctx.name}" if isinstance(index, int) else ctx.id


_OURS: dict[str, str] = {}  # tracker variables this process set (the rest of the environment is the user's)


def use_offline_stores(job_dir: Path, names, run: str | None = None) -> None:
    """The offline store of each tracker in ``names`` for this process, where the user's environment
    names none. ``run`` (a sequential stage): its own TensorBoard folder, so the stages' curves do not
    overlap."""
    user = {k: v for k, v in os.environ.items() if _OURS.get(k) != v}
    env = tracking.tracking_env(Path(job_dir), user, tuple(names))
    if run and "TENSORBOARD_LOGGING_DIR" in env:
        env["TENSORBOARD_LOGGING_DIR"] = str(Path(env["TENSORBOARD_LOGGING_DIR"]) / run)
    os.environ.update(env)
    _OURS.update(env)


def trainer_setup(ctx, config: dict) -> tuple[list[str], list]:
    """(``report_to`` for TrainingArguments, callbacks to add) for a Trainer-based kind."""
    names = tracking.check_trackers(config)
    if not names:
        return [], []
    use_offline_stores(ctx.job_dir, names, run_name(ctx) if run_name(ctx) != ctx.id else None)
    if _OURS.get("MLFLOW_RUN_ID") == os.environ.get("MLFLOW_RUN_ID"):
        os.environ.pop("MLFLOW_RUN_ID", None)  # a run this process reopened before (an earlier stage) is not this one's
    if "mlflow" in names:  # the process may have pointed MLflow elsewhere before (tests, a pipeline)
        import mlflow

        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    record = tracking.read_record(ctx.job_dir)
    if ctx.resume and "mlflow" in names and record.get("mlflow", {}).get("name") == run_name(ctx):
        os.environ["MLFLOW_RUN_ID"] = _OURS["MLFLOW_RUN_ID"] = record["mlflow"]["run_id"]  # a resumed job: same run
    return names, [RunRecordCallback(ctx, config, names)]


def trainer_args(ctx, config: dict) -> dict:
    """TrainingArguments fields: the trackers and the run name."""
    names = tracking.check_trackers(config)
    return {"report_to": names or "none", "run_name": run_name(ctx), "project": tracking.PROJECT}


class RunRecordCallback(TrainerCallback):
    """After Trainer's integrations opened their runs (they run first): the frozen config as run
    parameters, and the job's ``tracking.json`` naming each run."""

    def __init__(self, ctx, config: dict, names: list[str]):
        self.ctx, self.config, self.names = ctx, config, names

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        params = tracking.flat_params(self.config, "tuneterm.")
        record = {}
        for name in self.names:
            record[name] = _describe_and_tag(name, run_name(self.ctx), params, self.config)
        write_record(self.ctx.job_dir, record)

    def on_train_end(self, args, state, control, **kw):
        if state.is_world_process_zero and "wandb" in self.names:  # Trainer leaves the W&B run open
            import wandb

            if wandb.run is not None:
                wandb.finish()


def write_record(job_dir: Path, record: dict) -> None:
    merged = {**tracking.read_record(job_dir), **record}
    atomic_write_json(Path(job_dir) / tracking.RECORD, merged)


def _describe_and_tag(name: str, run: str, params: dict, config: dict) -> dict:
    """Logs ``params`` into the run Trainer's integration ``name`` has open; returns how to find it again."""
    if name == "tensorboard":
        logdir = os.environ["TENSORBOARD_LOGGING_DIR"]
        writer = _tb_writer(logdir)
        writer.add_text("tuneterm_config", "```json\n" + json.dumps(config, indent=2, default=str) + "\n```")
        writer.close()
        return {"logdir": logdir, "name": run}
    if name == "mlflow":
        import mlflow

        active = mlflow.active_run()
        items = list(params.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i:i + 100]))
        return {"run_id": active.info.run_id, "experiment_id": active.info.experiment_id,
                "tracking_uri": mlflow.get_tracking_uri(), "name": run}
    if name == "wandb":
        import wandb

        wandb.run.config.update(params, allow_val_change=True)
        return {"run_id": wandb.run.id, "project": wandb.run.project, "dir": os.environ.get("WANDB_DIR"),
                "mode": os.environ.get("WANDB_MODE"), "name": run}
    if name == "trackio":
        import trackio

        trackio.config.update(params, allow_val_change=True)
        return {"project": os.environ.get("TRACKIO_PROJECT", tracking.PROJECT), "name": run, "dir": _trackio_dir()}
    raise ValueError(name)


def _trackio_dir() -> str:
    """Where trackio writes: the folder it read from ``TRACKIO_DIR`` when first imported in this process
    (the job child sets the variable before anything imports it), so the record names the real store."""
    from trackio import utils

    return str(utils.TRACKIO_DIR)


def _tb_writer(logdir: str):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=logdir)


class TrackerRun:
    """Runs of several trackers as one: ``params``, ``metrics`` (with a step) and ``text``."""

    def __init__(self, record: dict, started: bool = False):
        self.record = record
        self.started = started  # runs this object began (closed as finished), not reopened ones
        self._open: dict = {}
        for name, info in record.items():
            self._open[name] = _open(name, info)

    @classmethod
    def start(cls, ctx, config: dict) -> "TrackerRun | None":
        """New runs for a kind without a Trainer (named after the job, the frozen config as
        parameters); None when the recipe asks for no tracker."""
        names = tracking.check_trackers(config)
        if not names:
            return None
        use_offline_stores(ctx.job_dir, names)
        record = {name: _new_run(name, run_name(ctx)) for name in names}
        write_record(ctx.job_dir, record)
        run = cls(record, started=True)
        run.params(tracking.flat_params(config, "tuneterm."))
        return run

    @classmethod
    def of_job(cls, job_dir: Path) -> "TrackerRun | None":
        """The runs a job logged to (its ``tracking.json``), reopened; None when it logged nowhere."""
        record = tracking.read_record(job_dir)
        if not record:
            return None
        use_offline_stores(job_dir, list(record))
        return cls(record)

    def params(self, params: dict) -> None:
        for name, handle in self._open.items():
            if name == "tensorboard":
                handle.add_text("params", "\n".join(f"- {k}: {v}" for k, v in params.items()))
            elif name == "mlflow":
                from mlflow.entities import Param

                client, run_id = handle
                items = [Param(k, str(v)[:250]) for k, v in params.items()]
                for i in range(0, len(items), 100):
                    client.log_batch(run_id, params=items[i:i + 100])
            else:
                handle.config.update(params, allow_val_change=True)

    def metrics(self, metrics: dict, step: int = 0) -> None:
        values = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
        for name, handle in self._open.items():
            if name == "tensorboard":
                for key, value in values.items():
                    handle.add_scalar(key, value, step)
                handle.flush()
            elif name == "mlflow":
                client, run_id = handle
                for key, value in values.items():
                    client.log_metric(run_id, key, value, step=step)
            else:
                handle.log({**values, "step": step})

    def text(self, key: str, body: str) -> None:
        for name, handle in self._open.items():
            if name == "tensorboard":
                handle.add_text(key, body)
            elif name == "mlflow":
                client, run_id = handle
                client.log_text(run_id, body, f"{key}.md")

    def close(self) -> None:
        for name, handle in self._open.items():
            if name == "tensorboard":
                handle.close()
            elif name == "mlflow" and self.started:
                client, run_id = handle
                client.set_terminated(run_id)
            elif name in ("wandb", "trackio"):
                handle.finish()
        self._open = {}


def _new_run(name: str, run: str) -> dict:
    if name == "tensorboard":
        return {"logdir": os.environ["TENSORBOARD_LOGGING_DIR"], "name": run}
    if name == "mlflow":
        import mlflow

        client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        experiment = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
        exp_id = experiment.experiment_id if experiment else client.create_experiment(
            os.environ["MLFLOW_EXPERIMENT_NAME"])
        created = client.create_run(exp_id, run_name=run)
        return {"run_id": created.info.run_id, "experiment_id": exp_id,
                "tracking_uri": os.environ["MLFLOW_TRACKING_URI"], "name": run}
    if name == "wandb":
        import wandb

        started = wandb.init(project=os.environ.get("WANDB_PROJECT"), name=run, dir=os.environ.get("WANDB_DIR"),
                             mode=os.environ.get("WANDB_MODE"))
        info = {"run_id": started.id, "project": started.project, "dir": os.environ.get("WANDB_DIR"),
                "mode": os.environ.get("WANDB_MODE"), "name": run}
        started.finish()
        return info
    if name == "trackio":
        return {"project": os.environ.get("TRACKIO_PROJECT", tracking.PROJECT), "name": run, "dir": _trackio_dir()}
    raise ValueError(name)


def _open(name: str, info: dict):
    if name == "tensorboard":
        return _tb_writer(info["logdir"])
    if name == "mlflow":
        import mlflow

        if str(info["tracking_uri"]).startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return mlflow.MlflowClient(info["tracking_uri"]), info["run_id"]
    if name == "wandb":
        import wandb

        return wandb.init(project=info.get("project"), id=info["run_id"], resume="allow", dir=info.get("dir"),
                          mode=info.get("mode") or "offline")
    if name == "trackio":
        import trackio

        return trackio.init(project=info["project"], name=info["name"], resume="allow")
    raise ValueError(name)


def log_to_source(ref: str, jobs_dir: Path, metrics: dict, step: int = 0, text: tuple[str, str] | None = None,
                  log=None) -> bool:
    """Logs ``metrics`` (and a text) into the runs of the training job behind ``ref`` (``job:ID``),
    when it logged to trackers. Returns whether it did. A tracker that fails is logged, not fatal:
    the quantized model or the eval report is the job's work, the tracker a copy."""
    folder = tracking.source_job_dir(ref, jobs_dir)
    if folder is None:
        return False
    try:
        run = TrackerRun.of_job(folder)
        if run is None:
            return False
        run.metrics(metrics, step)
        if text:
            run.text(*text)
        run.close()
    except Exception as exc:  # noqa: BLE001 - a tracker's own error, reported in the job's log
        if log:
            log(f"could not log to the trackers of {ref}: {type(exc).__name__}: {exc}")
        return False
    if log:
        log(f"logged {len(metrics)} figures to the runs of {ref} ({', '.join(tracking.read_record(folder))})")
    return True


def log_eval_report(report: dict, log=None) -> list[str]:
    """Each ``job:ID`` variant's scores (value and 95% interval per task and metric) into the runs of
    the training job it came from. Returns the refs it logged to."""
    from tuneterm.core.errors import TunetermError
    from tuneterm.core.jobs import store

    done = []
    for variant in report.get("variants", []):
        ref = str(variant.get("ref", ""))
        if not ref.startswith("job:") or variant.get("shots"):
            continue
        try:
            ref = f"job:{store.resolve_id(ref)}"
        except TunetermError:
            continue
        figures: dict = {}
        for task, body in (report.get("tasks") or {}).items():
            cell = (body.get("variants") or {}).get(variant["id"]) or {}
            for name, m in (cell.get("metrics") or {}).items():
                figures[f"eval/{task}/{name}"] = m.get("value")
                ci = m.get("ci95")
                if isinstance(ci, (list, tuple)) and len(ci) == 2:
                    figures[f"eval/{task}/{name}_ci_low"], figures[f"eval/{task}/{name}_ci_high"] = ci
        if figures and log_to_source(ref, store.jobs_root(), figures, log=log):
            done.append(ref)
    return done


def refresh_cards(report: dict, report_path: Path | None) -> None:
    """The model cards of the ``job:ID`` variants an eval scored, rewritten with its results."""
    from tuneterm.core import modelcard
    from tuneterm.core.errors import TunetermError
    from tuneterm.core.jobs import store

    for variant in report.get("variants", []):
        ref = str(variant.get("ref", ""))
        if ref.startswith("job:") and not variant.get("shots"):
            try:
                modelcard.refresh(store.jobs_root() / store.resolve_id(ref),
                                  (report_path,) if report_path is not None else ())
            except (TunetermError, OSError):
                continue
