"""The jobs of a sweep's trials (torch-free): every trial is an ordinary job made by the plan layer.

- a training trial (lora, full, freeze, the classification head, feature) is the job of
  ``tuneterm train --method M`` (:func:`tuneterm.core.jobs.plan.plan_train`), with the trial's
  settings as ``key.sub=value`` overrides and, on an early rung, ``train.max_steps``;
- each trial is then scored by an ``eval`` job (the eval harness) on the validation task;
- a few-shot trial has nothing to train: its eval job scores ``fewshot:K:POOL@MODEL``.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

from tuneterm.core.jobs.plan import JobPlan, plan_train
from tuneterm.core.sweep.data import SweepData
from tuneterm.core.sweep.space import Candidate

METRICS = {  # shape -> (eval metrics, the default ranking metric)
    "classification": (["exact_match", {"f1": {"average": "macro"}}], "exact_match"),
    "extraction": (["field_f1", "json_validity"], "field_f1"),
    "generation": (["chrf", "rouge_l"], "chrf"),
}


def default_metric(shape: str) -> str:
    return METRICS[shape][1]


def write_task(data: SweepData, split: str, folder: Path) -> Path:
    """The eval task (YAML) that scores a variant on ``split`` of the sweep's data."""
    import yaml

    metrics, _ = METRICS[data.shape]
    if data.shape == "classification":
        labels = "|".join(re.escape(label) for label in sorted(data.labels, key=len, reverse=True))
        extract = ["strip", {"regex": f"({labels})", "group": 1, "default": ""}]  # the first label named
        generation = {"max_new_tokens": 24, "temperature": 0}
    elif data.shape == "extraction":
        extract, generation = ["json"], {"max_new_tokens": 128, "temperature": 0}
    else:
        extract, generation = ["strip"], {"max_new_tokens": 128, "temperature": 0}
    task = {"name": f"sweep-{split}", "version": 1, "type": "generate",
            "description": f"the sweep's {split} split ({data.shape})",
            "data": {"path": str((data.folder / f"{split}.jsonl").resolve())},
            "prompt": {"chat_template": True}, "generation": generation, "extract": extract, "metrics": metrics}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.yaml"
    path.write_text(f"# written by tuneterm sweep: scores a variant on the {split} split\n"
                    + yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    return path


def fewshot_ref(cand: Candidate, model: str, pool: Path, seed: int) -> str:
    s = cand.settings()
    how = "similar" if s.get("sampler") == "similar" else f"seed={seed}"
    return f"fewshot:{int(s.get('k', 4))}:{how}:{pool}@{model}"


def _recipe_keys(method: str) -> set[str]:
    from tuneterm.core import recipes

    return set(recipes.flatten(recipes.default_recipe(method)))


def _value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(f'"{x}"' for x in v) + "]"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def train_plan(cand: Candidate, model: str, data: SweepData, *, steps: int | None, seed: int,
               name: str) -> JobPlan:
    """The job that trains ``cand`` (``steps``: the rung's ``train.max_steps``, None = the full recipe)."""
    if cand.method == "feature":
        overrides = trial_overrides(cand) + [f"seed={seed}"]
        return plan_train("feature", model=model, data=str(data.folder), overrides=overrides, name=name)
    keys = _recipe_keys(cand.method)
    overrides = trial_overrides(cand)
    if "train.seed" in keys:
        overrides.append(f"train.seed={seed}")
    if steps is not None and "train.max_steps" in keys:
        overrides.append(f"train.max_steps={steps}")
    return plan_train(cand.method, model=model, data=str(data.train), overrides=overrides, name=name)


def trial_overrides(cand: Candidate) -> list[str]:
    """The trial's settings as ``key.sub=value`` overrides of its method's recipe."""
    return [f"{k}={_value(v)}" for k, v in cand.params]


def check(cand: Candidate, source: str) -> dict | None:
    """The trial's resolved recipe (None for few-shot); a ConfigError naming the space file and the
    trial when the recipe rejects a value, so a bad space fails before any job starts."""
    from tuneterm.core import recipes
    from tuneterm.core.errors import ConfigError

    if cand.method == "fewshot":
        return None
    try:
        return recipes.resolve(cand.method, None, trial_overrides(cand))
    except ConfigError as exc:
        raise ConfigError(f"search space: trial {cand.label!r}: {exc.title}",
                          [("file", source)] + list(exc.facts), exc.hint) from None


def full_steps(config: dict | None, n_train: int) -> int | None:
    """Optimizer steps of a resolved training recipe (None for methods without steps)."""
    from tuneterm.core import recipes

    if not config:
        return None
    flat = recipes.flatten(config)
    if "train.epochs" not in flat or "train.batch_size" not in flat:
        return None
    per_step = max(1, int(flat["train.batch_size"]) * int(flat.get("train.grad_accum", 1)))
    steps = -(-n_train // per_step) * float(flat["train.epochs"])
    if int(flat.get("train.max_steps", -1)) > 0:
        steps = min(steps, int(flat["train.max_steps"]))
    return max(1, int(steps))


def eval_plan(models: list[str], task: Path, *, name: str, baseline: str | None = None,
              batch_size: int = 16) -> JobPlan:
    """An ``eval`` job: the eval harness scores ``models`` on ``task``."""
    config = {"spec": str(task), "models": list(models), "batch_size": batch_size, "cwd": str(task.parent)}
    if baseline:
        config["baseline"] = baseline
    return JobPlan("eval", MappingProxyType(config), name, f"eval of {', '.join(models)} on {task.stem}")
