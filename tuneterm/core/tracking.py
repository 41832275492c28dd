"""Experiment trackers (torch-free): which ones a recipe asks for, whether they are installed, where
their local stores live, and the record a job leaves of its runs.

A training recipe's ``log.report_to`` lists any of TensorBoard, MLflow, Weights & Biases and
trackio (none by default). The plan checks the list before a job is written, so a tracker that is
not installed fails in a second with the extra that installs it. Each tracker works offline by
default: TensorBoard event files in the job folder, MLflow's file store in the workspace
(``<workspace>/mlruns``), W&B in offline mode and trackio's local store in the workspace; a user's
own ``MLFLOW_TRACKING_URI``, ``WANDB_MODE``, ``TRACKIO_DIR`` ... win over these defaults.

A job that logged to trackers writes ``tracking.json`` into its folder (the run of each tracker);
quantize and eval jobs made from it log their gate results and eval scores into the same runs.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path

from tuneterm.core.errors import ConfigError, UsageError

TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio")
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}
EXTRA = "tracking"
IN_EXTRA = ("tensorboard", "mlflow", "wandb")  # what ``tuneterm[tracking]`` installs; trackio is installed on its own
RECORD = "tracking.json"
PROJECT = "tuneterm"  # the MLflow experiment, W&B and trackio project, unless the environment names one


def requested(config: dict) -> list[str]:
    """The trackers ``config`` asks for (``log.report_to``), a sequential pipeline's stages included."""
    names = list((config.get("log") or {}).get("report_to") or [])
    for stage in config.get("stages") or []:
        names += [n for n in (stage.get("log") or {}).get("report_to") or [] if n not in names]
    return names


def check_trackers(config: dict) -> list[str]:
    """``log.report_to`` checked: known names, each installed. Returns the list (duplicates removed)."""
    names = requested(config)
    seen: list[str] = []
    for name in names:
        if not isinstance(name, str) or name not in TRACKERS:
            close = difflib.get_close_matches(str(name), TRACKERS, n=1, cutoff=0.5)
            raise ConfigError(f"log.report_to names an unknown tracker {name!r}",
                              [("known", ", ".join(TRACKERS))],
                              f"did you mean {close[0]}?" if close else "e.g. log.report_to=[\"tensorboard\"]")
        if name not in seen:
            seen.append(name)
    missing = [n for n in seen if importlib.util.find_spec(MODULES[n]) is None]
    if missing:
        steps = [f"pip install 'tuneterm[{EXTRA}]'"] if any(n in IN_EXTRA for n in missing) else []
        steps += ["pip install trackio"] if "trackio" in missing else []
        raise UsageError(f"log.report_to asks for {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
                         " not installed", [("report_to", ", ".join(seen)), ("missing", ", ".join(missing))],
                         " and ".join(steps) + ", or drop them from log.report_to")
    return seen


def workspace_of(job_dir: Path) -> Path:
    """A job folder is ``<workspace>/jobs/<id>``."""
    return Path(job_dir).resolve().parent.parent


def tensorboard_dir(job_dir: Path) -> Path:
    return Path(job_dir) / "tracking" / "tensorboard"


ENV_OF = {"tensorboard": "TENSORBOARD_", "mlflow": "MLFLOW_", "wandb": "WANDB_", "trackio": "TRACKIO_"}


def tracking_env(job_dir: Path, environ: dict, names=TRACKERS) -> dict[str, str]:
    """Environment variables that point each tracker in ``names`` at its offline store, for those the
    user's environment (``environ``) does not already set. Only the trackers asked for: transformers
    prints "Running in WANDB offline mode" on import whenever ``WANDB_MODE`` is offline."""
    job_dir = Path(job_dir).resolve()
    ws = workspace_of(job_dir)
    env = {
        "TENSORBOARD_LOGGING_DIR": str(tensorboard_dir(job_dir)),
        "MLFLOW_TRACKING_URI": (ws / "mlruns").as_uri(),
        "MLFLOW_EXPERIMENT_NAME": PROJECT,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(job_dir / "tracking"),
        "WANDB_PROJECT": PROJECT,
        "TRACKIO_DIR": str(ws / "trackio"),
    }
    prefixes = tuple(ENV_OF[n] for n in names if n in ENV_OF)
    out = {k: v for k, v in env.items() if not environ.get(k) and k.startswith(prefixes)}
    uri = environ.get("MLFLOW_TRACKING_URI") or out.get("MLFLOW_TRACKING_URI", "")
    if "mlflow" in names and (uri.startswith("file:") or "://" not in uri):
        out["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 refuses its file store unless asked
    return out


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """The frozen config as flat ``section.key -> text`` run parameters (MLflow caps values at 250 chars)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value, 1):
                out.update(flat_params(item, f"{name}.{i}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
            out[name] = text[:250]
    return out


def read_record(job_dir: Path) -> dict:
    """``tracking.json`` of a job: ``{tracker: {run fields}}``; empty when it logged nowhere."""
    path = Path(job_dir) / RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def source_job_dir(ref: str, jobs_dir: Path) -> Path | None:
    """The job folder behind a ``job:ID`` reference (followed through quantize jobs to the training
    job that has a tracking record), or None."""
    seen = set()
    while isinstance(ref, str) and ref.startswith("job:") and ref not in seen:
        seen.add(ref)
        folder = Path(jobs_dir) / ref[4:].split("@")[0]
        if (folder / RECORD).is_file():
            return folder
        try:
            import tomllib

            spec = tomllib.loads((folder / "spec.toml").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        config = spec.get("config", {})
        ref = config.get("model") or config.get("teacher") or ""
    return None
