"""``tuneterm train --method M``: validate a recipe, write a job and start it in the background.

One entry point for every way of adapting a model: full | freeze | lora | qlora | dpo (job kind
``train``), sequential (kind ``sequential``: a pipeline of stages), distill (kind ``distill``) and
feature (kind ``feature``). ``--recipe FILE`` and ``key=value`` overrides are checked against the
method's recipe (tuneterm.core.recipes) before anything is created; ``--dry-run`` prints the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORDER = 30

METHOD_CHOICES = ("full", "freeze", "lora", "qlora", "dpo", "sequential", "distill", "feature")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="fine-tune a model as a background job (full, freeze, lora, qlora, dpo, sequential, "
                      "distill, feature)",
        description="Validate the recipe and data, write jobs/<id>/ and start the job's process detached "
                    "from this terminal. Follow it with `tuneterm jobs logs ID --follow`. Methods: "
                    "full, freeze, lora, qlora, dpo (kind train); sequential (a pipeline of [[stages]] from "
                    "recipes/sequential.toml); distill (--model is the teacher); feature (a classifier on "
                    "frozen hidden states).",
        epilog="examples: tuneterm train --model smollm2-135m-instruct --data tickets --method lora lora.r=8\n"
               "          tuneterm train --model smollm2-135m-instruct --method sequential train.max_steps=20",
    )
    p.add_argument("--model", metavar="REF",
                   help="base model reference (see `tuneterm chat -h`); the teacher for distill; "
                        "optional for feature (the recipe's model)")
    p.add_argument("--data", metavar="DATASET",
                   help="workspace dataset name (its train split; val split used for evaluation) or a JSONL path "
                        "(sequential: the recipe's stages name their data)")
    p.add_argument("--method", required=True, choices=METHOD_CHOICES)
    p.add_argument("--recipe", metavar="FILE", help="a recipe TOML (default: recipes/METHOD.toml)")
    p.add_argument("--val", metavar="DATASET", help="validation data (default: the dataset's val split if any)")
    p.add_argument("--name", help="a label for the job")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="processes (GPUs) for data-parallel training through torchrun/accelerate (kind train)")
    multi = p.add_argument_group("several nodes (torchrun rendezvous; the workspace on a shared filesystem)")
    multi.add_argument("--nnodes", type=int, default=1, metavar="N", help="nodes taking part (default 1)")
    multi.add_argument("--node-rank", type=int, default=0, metavar="R", help="this node's rank, 0 .. N-1")
    multi.add_argument("--master-addr", metavar="HOST", help="node 0's address")
    multi.add_argument("--master-port", type=int, metavar="PORT", help="node 0's rendezvous port (default 29500)")
    p.add_argument("--print-launch", action="store_true",
                   help="create the job but do not start it: print the torchrun command (and a Slurm script) "
                        "that runs it, for a cluster's batch system")
    p.add_argument("--foreground", action="store_true",
                   help="stay attached and stream the log (Ctrl-C cancels and keeps a checkpoint)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="recipe overrides, e.g. train.lr=1e-4; sequential: stages.NAME.key=value for one stage")
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


def _local_model(value: str | None, what: str = "--model") -> str:
    """A local model reference as the job should store it (folders made absolute)."""
    from tuneterm.core import modelref
    from tuneterm.core.errors import UsageError

    ref = modelref.parse(value)
    if ref.is_remote:
        raise UsageError("remote models cannot be trained locally", [(what, value)],
                         "use `tuneterm openai finetune` for OpenAI models")
    return ref.target if ref.kind == "dir" else value


def _need(value, flag: str, method: str) -> str:
    from tuneterm.core.errors import UsageError

    if not value:
        raise UsageError(f"{flag} is required for --method {method}", hint="see `tuneterm train -h`")
    return value


def _refuse(value, flag: str, method: str, hint: str) -> None:
    from tuneterm.core.errors import UsageError

    if value:
        raise UsageError(f"--method {method} does not take {flag}", [(flag, str(value))], hint)


def prepare(args: argparse.Namespace) -> tuple[str, dict, str]:
    """(job kind, resolved config, summary line) for the method; nothing is written."""
    from tuneterm.core import recipes
    from tuneterm.core.errors import UsageError

    method = args.method
    kind = recipes.kind_of(method)
    config = recipes.resolve(method, args.recipe, args.overrides)
    if args.nproc < 1:
        raise UsageError("--nproc must be at least 1", [("got", str(args.nproc))])
    if args.nproc > 1 and kind != "train":
        raise UsageError(f"--nproc applies to full, freeze, lora, qlora and dpo, not {method}",
                         [("--nproc", str(args.nproc))])
    if kind == "train":
        model = _local_model(_need(args.model, "--model", method))
        train_path, val_path = resolve_data(_need(args.data, "--data", method), args.val)
        n_train = _check_data(train_path, "training")
        n_val = _check_data(val_path, "validation") if val_path else 0
        config.update(model=model, data=str(train_path), dataset=args.data)
        if val_path:
            config["eval_data"] = str(val_path)
        summary = f"{method} on {args.model} with {n_train} examples" + (f" ({n_val} for validation)" if n_val else "")
    elif kind == "sequential":
        _refuse(args.data, "--data", method, "each stage names its data: stages.NAME.data=DATASET")
        _refuse(args.val, "--val", method, "each stage names its validation data: stages.NAME.val=DATASET")
        config["model"] = _local_model(_need(args.model, "--model", method))
        for index, stage in enumerate(config["stages"], 1):
            _stage_data(index, stage)
        summary = (f"sequential on {args.model}: "
                   + " -> ".join(f"{s['name']} ({s['method']}, {s['n_train']} examples)" for s in config["stages"]))
    elif kind == "distill":
        config["teacher"] = _local_model(_need(args.model, "--model", method))
        train_path, val_path = resolve_data(_need(args.data, "--data", method), args.val)
        _check_data(train_path, "training")
        config["data"] = str(train_path)
        if val_path:
            _check_data(val_path, "validation")
            config["val_data"] = str(val_path)
        summary = f"distil {args.model} on {args.data}"
    else:  # feature
        _refuse(args.val, "--val", method, "the dataset's val/test splits are used")
        if args.model:
            config["model"] = args.model
        config["model"] = _local_model(config["model"])
        data = Path(_need(args.data, "--data", method)).expanduser()
        if data.exists():  # the job's child runs elsewhere: store an absolute path
            config["dataset"] = str(data.resolve())
        else:
            from tuneterm.core.datasets import store

            store.resolve_path(args.data, "train")  # fails here, with a hint, for an unknown name
            config["dataset"] = args.data
        summary = f"feature classifier on {config['model']}"
    return kind, config, summary


def _stage_data(index: int, stage: dict) -> None:
    """Resolve a stage's data and validation files in place; errors name the stage."""
    from tuneterm.core.errors import TunetermError

    try:
        train_path, val_path = resolve_data(stage["data"], stage.get("val") or None)
        stage["n_train"] = _check_data(train_path, "training")
        if val_path:
            _check_data(val_path, "validation")
    except TunetermError as exc:
        hint = exc.hint
        if stage["data"] in ("general", "domain_qa") and "no dataset" in exc.title:
            hint = "run `tuneterm setup` to import the sample datasets, or set stages.NAME.data=PATH"
        raise type(exc)(f"stage {index} ({stage['name']}): {exc.title}",
                        [("stage", f"{index} ({stage['name']})")] + list(exc.facts), hint) from exc
    stage["dataset"] = stage["data"]
    stage["data"] = str(train_path)
    if val_path:
        stage["eval_data"] = str(val_path)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import jobs

    kind, config, summary = prepare(args)
    if args.dry_run:
        from tuneterm.core.jobs.store import config_toml

        print(f"# tuneterm train --method {args.method}: job kind {kind}")
        print(config_toml(config))
        return 0
    if kind == "train" and config.get("model"):
        from tuneterm.workers.train import fit  # light: torch is imported only when a GPU is visible

        note = fit.launch_note(config, config["model"], args.nproc) if fit.gpu_visible() else None
        if note:
            print(note, file=sys.stderr)
    label = Path(str(args.data)).stem if args.data else "-".join(s["name"] for s in config.get("stages", []))
    job = jobs.create_job(kind, config, name=args.name or f"{args.method} {label}".strip(),
                          nproc=args.nproc, rendezvous=_rendezvous(args))
    if args.print_launch:
        from tuneterm.core.jobs import distributed

        print(distributed.printable(jobs.read_spec(job.dir), job.dir), end="")
        return 0
    if args.foreground:
        return foreground(job)
    job = jobs.launch(job.id)
    if args.json:
        print(json.dumps(job.to_dict(), default=str))
        return 0
    print(f"started job {job.id}: {summary}")
    print(f"  follow it:  tuneterm jobs logs {job.id} --follow")
    print(f"  state:      tuneterm jobs show {job.id}")
    print(f"  when done:  tuneterm chat job:{job.id} \"...\"")
    return 0


def _rendezvous(args: argparse.Namespace) -> dict | None:
    from tuneterm.core.errors import UsageError

    if args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        raise UsageError("--node-rank must be between 0 and --nnodes - 1",
                         [("--nnodes", str(args.nnodes)), ("--node-rank", str(args.node_rank))])
    if args.nnodes == 1:
        return None
    if not args.master_addr and not args.print_launch:
        raise UsageError("several nodes need --master-addr (node 0's address)", [("--nnodes", str(args.nnodes))],
                         "or use --print-launch to get a command for your batch system")
    return {"nnodes": args.nnodes, "node_rank": args.node_rank, "master_addr": args.master_addr,
            "master_port": args.master_port}


def foreground(job) -> int:
    """Run the job attached to this terminal, printing its log (Ctrl-C cancels and keeps a
    checkpoint). 0 when it succeeded, else 1. Used by every command that offers ``--foreground``."""
    from tuneterm.core import jobs

    info = jobs.run_attached(job)
    print(f"job {job.id} {info.state}" + (f": {info.error}" if info.error else ""), file=sys.stderr)
    return 0 if info.state == "succeeded" else 1
