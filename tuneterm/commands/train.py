"""``tuneterm train``: validate a recipe, write a job and start it in the background."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="fine-tune a model locally as a background job (full, freeze, lora, qlora)",
        description="Validate the recipe and data, write jobs/<id>/ and start the training process detached "
                    "from this terminal. Follow it with `tuneterm jobs logs ID --follow`.",
        epilog="example: tuneterm train --model smollm2-135m-instruct --data tickets --method lora lora.r=8",
    )
    p.add_argument("--model", required=True, metavar="REF", help="base model reference (see `tuneterm chat -h`)")
    p.add_argument("--data", required=True, metavar="DATASET",
                   help="workspace dataset name (its train split; val split used for evaluation) or a JSONL path")
    p.add_argument("--method", required=True, choices=("full", "freeze", "lora", "qlora"))
    p.add_argument("--recipe", metavar="FILE", help="a recipe TOML (default: recipes/METHOD.toml)")
    p.add_argument("--val", metavar="DATASET", help="validation data (default: the dataset's val split if any)")
    p.add_argument("--name", help="a label for the job")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="processes (GPUs) for data-parallel training through torchrun/accelerate")
    p.add_argument("--foreground", action="store_true",
                   help="stay attached and stream the log (Ctrl-C cancels and keeps a checkpoint)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides, e.g. train.lr=1e-4")
    p.set_defaults(func=run)


def resolve_data(data: str, val: str | None) -> tuple[Path, Path | None]:
    """Training file and validation file (or None) for a dataset name or a path."""
    from tuneterm.core.datasets import store
    from tuneterm.core.errors import NotFoundError

    train = store.resolve_path(data, "train").resolve()
    if val:
        return train, store.resolve_path(val, "val").resolve()
    path = Path(data).expanduser()
    if path.is_file():  # a file: use a val.jsonl beside train.jsonl
        sibling = path.with_name("val" + path.suffix)
        if path.stem == "train" and sibling.is_file():
            return train, sibling.resolve()
        return train, None
    try:
        found = store.resolve_path(data, "val").resolve()
    except (NotFoundError, KeyError, ValueError):
        return train, None
    except Exception as exc:  # a dataset without a val split raises its own error class
        if getattr(exc, "exit_code", None) is None:
            raise
        return train, None
    return train, (found if found != train else None)


def _check_data(path: Path, label: str) -> int:
    from tuneterm.core.datasets.validate import validate_file
    from tuneterm.core.errors import DatasetError

    report = validate_file(path)
    errors = [p for p in report.problems if p.severity == "error"]
    if errors:
        facts = [("file", str(path))] + [(f"line {p.line}", p.message) for p in errors[:5]]
        raise DatasetError(f"the {label} data has {len(errors)} error(s)", facts,
                           f"see `tuneterm data validate {path}`")
    return report.n_examples


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import jobs, modelref, recipes
    from tuneterm.core.errors import UsageError

    config = recipes.resolve(args.method, args.recipe, args.overrides)
    ref = modelref.parse(args.model)
    if ref.is_remote:
        raise UsageError("remote models cannot be trained locally", [("model", args.model)],
                         "use `tuneterm openai finetune` for OpenAI models")
    if args.nproc < 1:
        raise UsageError("--nproc must be at least 1", [("got", str(args.nproc))])
    train_path, val_path = resolve_data(args.data, args.val)
    n_train = _check_data(train_path, "training")
    n_val = _check_data(val_path, "validation") if val_path else 0
    model = args.model
    if ref.kind == "dir":
        model = ref.target  # absolute, so the job does not depend on the current folder
    config.update(model=model, data=str(train_path), dataset=args.data)
    if val_path:
        config["eval_data"] = str(val_path)
    if args.dry_run:
        import tomli_w

        print(tomli_w.dumps(config))
        return 0
    job = jobs.create_job("train", config, name=args.name or f"{args.method} {Path(str(args.data)).stem}",
                          nproc=args.nproc)
    if args.foreground:
        return _foreground(job)
    job = jobs.launch(job.id)
    if args.json:
        print(json.dumps(job.to_dict(), default=str))
        return 0
    print(f"started job {job.id}: {args.method} on {args.model} with {n_train} examples"
          + (f" ({n_val} for validation)" if n_val else ""))
    print(f"  follow it:  tuneterm jobs logs {job.id} --follow")
    print(f"  state:      tuneterm jobs show {job.id}")
    print(f"  when done:  tuneterm chat job:{job.id} \"...\"")
    return 0


def _foreground(job) -> int:
    """Run the child attached: stream log.txt; Ctrl-C sends SIGTERM (checkpoint, then cancelled)."""
    import time

    from tuneterm.core import jobs

    proc = jobs.launch(job.id, foreground=True)
    log = job.dir / "log.txt"
    offset = 0
    print(f"job {job.id} (foreground; Ctrl-C cancels and keeps a checkpoint)", file=sys.stderr)
    while True:
        try:
            with open(log, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
            if data:
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
                offset += len(data)
            if proc.poll() is not None:
                break
            time.sleep(0.3)
        except KeyboardInterrupt:  # the child got SIGINT too and is saving a checkpoint
            continue
    info = jobs.get_job(job.id)
    print(f"job {job.id} {info.state}" + (f": {info.error}" if info.error else ""), file=sys.stderr)
    return 0 if info.state == "succeeded" else 1
