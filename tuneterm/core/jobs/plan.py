"""The launch plan of a job: what was asked (command-line or form values, recipe, overrides) turned
into a checked, frozen job spec, before anything is written (torch-free).

Every entry point that starts a job calls this module and holds no checks of its own:
``tuneterm train`` (every method), ``tuneterm distill``/``feature`` (aliases of ``train --method``),
``tuneterm quantize`` and the workbench's Train and Quantize screens. So the same bad value gives the
same error, with the same exit code, whichever way it came in.

What is frozen:
- model references: ``job:last``, an id prefix or suffix, ``fewshot:...@job:last`` become full ids,
  folders and GGUF files absolute paths (see :func:`freeze_ref`), so a spec never means another model
  later (``tuneterm quantize job:last`` once pointed at itself);
- data: a workspace dataset name or a path becomes absolute files; any file ``tuneterm data import``
  reads (CSV, TSV, Parquet, alpaca, ...) is converted once to canonical chat JSONL in the workspace's
  cache (see :func:`training_files`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from tuneterm.core.errors import TunetermError, UsageError


@dataclass(frozen=True)
class JobPlan:
    """A checked job spec: ``kind`` and ``config`` as ``spec.toml`` will hold them."""

    kind: str
    config: Mapping
    name: str
    summary: str
    devices: tuple[str, ...] = ()
    nproc: int = 1
    notes: tuple[str, ...] = field(default=())

    def spec(self) -> dict:
        """A deep copy of the config (the plan itself stays unchanged)."""
        return copy.deepcopy(dict(self.config))

    def create(self, rendezvous: dict | None = None):
        """Write the job folder (queued); nothing is started. ``rendezvous``: torchrun across nodes."""
        from tuneterm.core.jobs.store import create_job

        return create_job(self.kind, self.spec(), name=self.name, devices=list(self.devices), nproc=self.nproc,
                          rendezvous=rendezvous)


def _frozen(kind: str, config: dict, name: str, summary: str, **kw) -> JobPlan:
    return JobPlan(kind, MappingProxyType(copy.deepcopy(config)), name, summary, **kw)


# --- model references ------------------------------------------------------------------------------


def freeze_ref(value: str, what: str = "--model", *, local: bool = False, artifact: bool = True) -> str:
    """``value`` as a job should store it: ``job:`` references with the full id (``last``, prefixes and
    suffixes resolved now), folders and GGUF files as absolute paths, ``fewshot:...@REF`` with REF
    frozen the same way. ``local``: refuse remote models. ``artifact``: a job must have finished with
    a model (checked now, not after the job starts)."""
    from tuneterm.core import modelref

    ref = modelref.parse(value)
    if local and ref.is_remote:
        raise UsageError("remote models cannot be trained locally", [(what, value)],
                         "use `tuneterm openai finetune` for OpenAI models")
    if ref.kind == "job":
        from tuneterm.core.workspace import workspace

        jobs_dir = workspace().jobs_dir
        full = _job_id(ref.target, jobs_dir)
        if artifact:
            modelref.job_artifact(full, jobs_dir)
        return f"job:{full}"
    if ref.kind in ("dir", "gguf"):
        return ref.target
    if ref.kind == "fewshot":
        head, _, base = ref.raw.rpartition("@")
        return f"{head}@{freeze_ref(base, what, local=local, artifact=artifact)}"
    return ref.raw


def _job_id(text: str, jobs_dir: Path) -> str:
    from tuneterm.core.errors import ModelNotFoundError, NotFoundError
    from tuneterm.core.jobs.store import resolve_id

    try:
        return resolve_id(text, jobs_dir)
    except NotFoundError as exc:
        raise ModelNotFoundError(exc.title, exc.facts, exc.hint) from None


# --- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingFiles:
    train: Path
    val: Path | None
    n_train: int
    n_val: int
    notes: tuple[str, ...] = ()


def resolve_data(data: str, val: str | None) -> tuple[Path, Path | None]:
    """Training file and validation file (or None) for a dataset name or a path. A workspace dataset
    without splits is used whole (no validation file)."""
    from tuneterm.core.datasets import store
    from tuneterm.core.errors import NotFoundError

    path = Path(data).expanduser()
    if not path.exists() and store.NAME_RE.match(data) and store.exists(data):
        rec = store.get(data)
        train = rec.file("train" if "train" in rec.splits else None).resolve()
        if val:
            return train, store.resolve_path(val, "val").resolve()
        return train, (rec.file("val").resolve() if "val" in rec.splits else None)
    train = store.resolve_path(data, "train").resolve()
    if val:
        return train, store.resolve_path(val, "val").resolve()
    if path.is_file():  # a file: use a val.jsonl beside train.jsonl
        sibling = path.with_name("val" + path.suffix)
        if path.stem == "train" and sibling.is_file():
            return train, sibling.resolve()
        return train, None
    try:
        found = store.resolve_path(data, "val").resolve()
    except NotFoundError:
        return train, None
    return train, (found if found != train else None)


def check_data(path: Path, label: str) -> int:
    """The number of examples in ``path``; a DatasetError naming the first bad lines if any."""
    from tuneterm.core.datasets.validate import validate_file
    from tuneterm.core.errors import DatasetError

    report = validate_file(path)
    errors = [p for p in report.problems if p.severity == "error"]
    if errors:
        facts = [("file", str(path))] + [(f"line {p.line}", p.message) for p in errors[:5]]
        raise DatasetError(f"the {label} data has {len(errors)} error(s)", facts,
                           f"see `tuneterm data validate {path}`")
    return report.n_examples


def as_chat_jsonl(path: Path) -> Path:
    """``path`` itself when it is chat or preference JSONL; otherwise the same rows converted as
    ``tuneterm data import`` converts them, written once to the workspace cache (keyed by content)."""
    from tuneterm.core.datasets import formats
    from tuneterm.core.fsutil import atomic_write_text, sha256_file
    from tuneterm.core.workspace import workspace

    form = formats.detect(path)
    if form.container == "jsonl" and form.schema in ("chat", "dpo"):
        return path
    out = workspace().root / "cache" / "converted" / f"{sha256_file(path)[:24]}.jsonl"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(ex, ensure_ascii=False) for ex in formats.iter_examples(path, None)]
        atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def training_files(data: str, val: str | None) -> TrainingFiles:
    """Resolved, checked and (when needed) converted training and validation files."""
    train, val_path = resolve_data(data, val)
    n_train = check_data(train, "training")
    n_val = check_data(val_path, "validation") if val_path else 0
    notes = [] if val_path else [f"no validation split: training on all {n_train} examples, no evaluation"]
    return TrainingFiles(as_chat_jsonl(train), as_chat_jsonl(val_path) if val_path else None, n_train, n_val,
                         tuple(notes))


def check_pairs(files: TrainingFiles) -> None:
    """The DPO job's own reading of its files (``tuneterm.core.datasets.pairs``): a chat file, or a row
    without its prompt/chosen/rejected, fails here naming file, line and field, not after the launch."""
    from tuneterm.core.datasets.pairs import read_pairs

    for path in (files.train, files.val):
        if path is not None:
            read_pairs(path)


# --- train (every method) -------------------------------------------------------------------------


def _given(recipe, overrides, section: str, key: str) -> bool:
    """Whether the user set ``section.key`` (an override or their recipe file), not the built-in recipe."""
    from tuneterm.core import recipes

    if any(o.partition("=")[0].strip() == f"{section}.{key}" for o in overrides):
        return True
    return bool(recipe) and key in (recipes.read_toml(Path(recipe)).get(section) or {})


def _need(value, flag: str, method: str) -> str:
    if not value:
        raise UsageError(f"{flag} is required for --method {method}", hint="see `tuneterm train -h`")
    return value


def _refuse(value, flag: str, method: str, hint: str) -> None:
    if value:
        raise UsageError(f"--method {method} does not take {flag}", [(flag, str(value))], hint)


def plan_train(method: str, *, model: str | None = None, data: str | None = None, val: str | None = None,
               recipe: str | Path | None = None, overrides=(), nproc: int = 1, name: str | None = None) -> JobPlan:
    """The job of ``tuneterm train --method METHOD`` (and of the Train screen)."""
    from tuneterm.core import recipes

    kind = recipes.kind_of(method)
    config = recipes.resolve(method, recipe, list(overrides))
    if nproc < 1:
        raise UsageError("--nproc must be at least 1", [("got", str(nproc))])
    if nproc > 1 and kind != "train":
        raise UsageError(f"--nproc applies to full, freeze, lora, qlora and dpo, not {method}",
                         [("--nproc", str(nproc))])
    notes: tuple[str, ...] = ()
    if kind in ("train", "cls_head"):
        config["model"] = freeze_ref(_need(model, "--model", method), local=True)
        files = training_files(_need(data, "--data", method), val)
        if config.get("method") == "dpo":
            check_pairs(files)
        config.update(data=str(files.train), dataset=data)
        if files.val:
            config["eval_data"] = str(files.val)
        from tuneterm.core.jobs.plan_lengths import fit_max_length, fit_text_length

        explicit = _given(recipe, overrides, "train", "max_length")
        fit = fit_text_length if kind == "cls_head" else fit_max_length
        notes = files.notes + fit(config, config["model"], files.train, explicit)
        summary = f"{method} on {model} with {files.n_train} examples" + (
            f" ({files.n_val} for validation)" if files.n_val else "")
    elif kind == "sequential":
        _refuse(data, "--data", method, "each stage names its data: stages.NAME.data=DATASET")
        _refuse(val, "--val", method, "each stage names its validation data: stages.NAME.val=DATASET")
        config["model"] = freeze_ref(_need(model, "--model", method), local=True)
        for index, stage in enumerate(config["stages"], 1):
            _stage_data(index, stage)
        summary = (f"sequential on {model}: "
                   + " -> ".join(f"{s['name']} ({s['method']}, {s['n_train']} examples)" for s in config["stages"]))
    elif kind == "distill":
        config["teacher"] = freeze_ref(_need(model, "--model", method), local=True)
        if config.get("student"):
            config["student"] = freeze_ref(config["student"], "student", local=True)
        files = training_files(_need(data, "--data", method), val)
        config["data"] = str(files.train)
        if files.val:
            config["val_data"] = str(files.val)
        notes = files.notes
        summary = f"distil {model} on {data}"
    else:  # feature
        _refuse(val, "--val", method, "the dataset's val/test splits are used")
        config["model"] = freeze_ref(model or config["model"], local=True)
        path = Path(_need(data, "--data", method)).expanduser()
        if path.exists():  # the job's child runs elsewhere: store an absolute path
            config["dataset"] = str(path.resolve())
        else:
            from tuneterm.core.datasets import store

            store.resolve_path(data, "train")  # fails here, with a hint, for an unknown name
            config["dataset"] = data
        summary = f"feature classifier on {config['model']}"
    from tuneterm.core.tracking import check_trackers

    check_trackers(config)  # a tracker that is not installed fails here, not after a model load
    label = Path(str(data)).stem if data else "-".join(s["name"] for s in config.get("stages", []))
    return _frozen(kind, config, name or f"{method} {label}".strip(), summary, nproc=nproc, notes=notes)


def _stage_data(index: int, stage: dict) -> None:
    """Resolve a stage's data and validation files in place; errors name the stage."""
    try:
        files = training_files(stage["data"], stage.get("val") or None)
        if stage.get("method") == "dpo":
            check_pairs(files)
    except TunetermError as exc:
        hint = exc.hint
        if stage["data"] in ("general", "domain_qa") and "no dataset" in exc.title:
            hint = "run `tuneterm setup` to import the sample datasets, or set stages.NAME.data=PATH"
        raise type(exc)(f"stage {index} ({stage['name']}): {exc.title}",
                        [("stage", f"{index} ({stage['name']})")] + list(exc.facts), hint) from exc
    stage["n_train"] = files.n_train
    stage["dataset"] = stage["data"]
    stage["data"] = str(files.train)
    if files.val:
        stage["eval_data"] = str(files.val)


# --- quantize -----------------------------------------------------------------------------------


def plan_quantize(model: str, *, method: str | None = None, recipe: str | Path | None = None, overrides=(),
                  name: str | None = None) -> JobPlan:
    """The job of ``tuneterm quantize MODEL`` (and of the Quantize screen)."""
    from tuneterm.core import modelref
    from tuneterm.core import quantize_config as qconfig

    if modelref.parse(model).is_remote:
        raise UsageError("only local models can be quantized", [("reference", model)],
                         "use a local reference: the embedded model, a folder, a .gguf, hf:ORG/NAME or job:ID")
    frozen = freeze_ref(model)  # job:last means the last job before this one
    loaded, source = {}, "command line"
    if recipe:  # checked key by key against the settings, like training recipes
        loaded = qconfig.load_recipe(recipe)
        source = str(recipe)
    config = qconfig.resolve(frozen, method, loaded, list(overrides), source)
    data = config["gate"].get("data")
    if data and not Path(data).expanduser().is_file():
        from tuneterm.core.datasets import store  # fails here, not after a model load

        store.resolve_path(data, None)
    if config["method"] == "gguf":  # a K-quant needs llama.cpp's quantizer: say so before a job exists
        qconfig.check_gguf_tools(config["quant"]["outtype"], bool(config["quant"].get("imatrix")),
                                 config["quant"].get("embedding_type", "auto"))
    devices = ("cuda:0",) if config["method"].startswith("bnb-") and config["quant"]["device"] == "cuda" else ()
    # job:last would name another job tomorrow: the name keeps the job it froze to (its 4-digit suffix)
    shown = f"job:{frozen.rsplit('-', 1)[-1]}" if frozen.startswith("job:") else model
    return _frozen("quantize", config, name or f"{config['method']} {shown}",
                   f"{config['method']} of {config['model']}", devices=devices)
