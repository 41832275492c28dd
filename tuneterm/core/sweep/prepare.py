"""Setting up a sweep: its id, folder, data splits, search space and trials (torch-free).

The id comes from the model, the dataset and the search space, so running the same command again
finds the sweep's folder and resumes it, reusing its finished trials (``fresh=True`` starts over).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from tuneterm.core.sweep import runner
from tuneterm.core.sweep.data import SweepData, prepare as prepare_data
from tuneterm.core.sweep.plan import default_metric
from tuneterm.core.sweep.space import default_space_path, load_space


@dataclass
class Prepared:
    folder: Path
    state: dict
    data: SweepData
    resumed: bool


def available_methods(job_kinds) -> set[str]:
    """Methods a sweep may use: few-shot, and every training method whose job kind is registered
    (``job_kinds``: the worker's KINDS table, so the classification head counts only where it exists)."""
    from tuneterm.core import recipes

    out = {"fewshot"}
    out.update(method for method, kind in recipes.KINDS.items() if kind in job_kinds)
    return out


def sweep_id(model: str, dataset: str, val: str | None, space_text: str) -> str:
    digest = hashlib.sha256("\n".join([model, dataset, val or "", space_text]).encode()).hexdigest()
    return f"sw-{digest[:10]}"


def model_shape(model: str) -> tuple[int | None, int | None]:
    """(parameters, layers) of a local model read from its checkpoint headers; (None, None) if unknown."""
    from tuneterm.core import memory

    try:
        folder = memory.model_folder(model)
        shape = memory.inspect_checkpoint(folder) if folder else None
    except Exception:  # noqa: BLE001 - the size is advice here, not a requirement
        shape = None
    return (shape.n_params, shape.n_layers) if shape else (None, None)


def prepare(model: str, dataset: str, *, val: str | None = None, space: str | None = None,
            job_kinds=(), fresh: bool = False) -> Prepared:
    from tuneterm.core.jobs.plan import freeze_ref
    from tuneterm.core.sweep.data import detect_shape

    model = freeze_ref(model, local=True)
    # the shape decides the default space; read it from the training rows before anything is written
    from tuneterm.core.jobs.plan import as_chat_jsonl, resolve_data

    train, _ = resolve_data(dataset, val)
    shape, _ = detect_shape(as_chat_jsonl(train))
    space_file = Path(space).expanduser() if space else default_space_path(shape)
    loaded = load_space(space_file, shape)
    text = space_file.read_text(encoding="utf-8")
    sid = sweep_id(model, str(Path(dataset).resolve()) if Path(dataset).exists() else dataset, val, text)
    folder = runner.sweeps_root() / sid
    if fresh and folder.exists():
        shutil.rmtree(folder)
    state = runner.load_state(folder)
    data = prepare_data(dataset, val, folder / "data", seed=loaded.seed)
    if state is not None:
        return Prepared(folder, state, data, True)
    n_params, n_layers = model_shape(model)
    candidates, notes = loaded.candidates(available_methods(job_kinds), n_params, n_layers)
    metric = loaded.metric or default_metric(data.shape)
    if not space:
        notes.insert(0, f"search space: the built-in {data.shape} space ({space_file.name})")
    state = runner.new_state(sid, model, dataset, data, loaded, candidates, metric, notes)
    runner.save_state(folder, state)
    return Prepared(folder, state, data, False)
