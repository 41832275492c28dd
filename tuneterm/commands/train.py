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

ORDER = 30

METHOD_CHOICES = ("full", "freeze", "lora", "qlora", "dpo", "sequential", "distill", "feature", "cls_head")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="fine-tune a model as a background job (full, freeze, lora, qlora, dpo, sequential, "
                      "distill, feature, cls_head)",
        description="Validate the recipe and data, write jobs/<id>/ and start the job's process detached "
                    "from this terminal. Follow it with `tuneterm jobs logs ID --follow`. Methods: "
                    "full, freeze, lora, qlora, dpo (kind train); sequential (a pipeline of [[stages]] from "
                    "recipes/sequential.toml); distill (--model is the teacher); feature (a classifier on "
                    "frozen hidden states); cls_head (a sequence-classification head over the labels, LoRA or full).",
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
    p.add_argument("--gpus", metavar="0,1",
                   help="the GPUs to run on (default: any free one); the job waits queued while they are busy")
    p.add_argument("--force", action="store_true",
                   help="start even when the disk looks too small for the checkpoints and the output")
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


def plan(args: argparse.Namespace):
    """The checked, frozen job of these arguments (tuneterm.core.jobs.plan); nothing is written."""
    from tuneterm.core.jobs.plan import plan_train

    return plan_train(args.method, model=args.model, data=args.data, val=args.val, recipe=args.recipe,
                      overrides=args.overrides, nproc=args.nproc, name=args.name)


def as_train_args(args: argparse.Namespace, method: str, **given) -> argparse.Namespace:
    """The ``train`` arguments of an alias command (``distill``, ``feature``)."""
    values = dict(method=method, model=None, data=None, val=None, recipe=None, name=None, nproc=1,
                  foreground=False, dry_run=False, json=False, overrides=[], gpus=None, force=False,
                  nnodes=1, node_rank=0, master_addr=None, master_port=None, print_launch=False)
    values.update({k: v for k, v in vars(args).items() if k in values})
    values.update(given)
    return argparse.Namespace(**values)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import jobs

    job_plan = plan(args)
    if args.dry_run:
        from tuneterm.core.jobs.store import config_toml

        print(f"# tuneterm train --method {args.method}: job kind {job_plan.kind}")
        for note in job_plan.notes:
            print(f"# {note}")
        print(config_toml(job_plan.spec()))
        return 0
    from dataclasses import replace

    from tuneterm.core.jobs import disk, slots, store

    devices, nproc = slots.devices_for(args.gpus, job_plan.nproc, job_plan.kind)
    job_plan = replace(job_plan, devices=tuple(devices) or job_plan.devices, nproc=nproc)
    disk.check_space(job_plan.kind, job_plan.spec(), store.jobs_root(), force=args.force)
    if job_plan.kind == "train" and job_plan.config.get("model"):
        from tuneterm.workers.train import fit  # light: torch is imported only when a GPU is visible

        note = fit.launch_note(job_plan.spec(), job_plan.config["model"], nproc) if fit.gpu_visible() else None
        if note:
            print(note, file=sys.stderr)
    job = job_plan.create(rendezvous=_rendezvous(args))
    if not args.json:
        for note in job_plan.notes:
            print(f"note: {note}", file=sys.stderr)
    if args.print_launch:
        from tuneterm.core.jobs import distributed

        print(distributed.printable(jobs.read_spec(job.dir), job.dir), end="")
        return 0
    if args.foreground:
        code = foreground(job)
        metrics = job.dir / "output" / "metrics.json"
        if job_plan.kind in ("feature", "cls_head") and metrics.is_file():
            print(metrics.read_text(), end="")
        return code
    job = jobs.launch(job.id)
    if args.json:
        print(json.dumps(job.to_dict(), default=str))
        return 0
    print(f"started job {job.id}: {job_plan.summary}")
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
    checkpoint). 0 when it succeeded, 130 when it was cancelled (Ctrl-C), else 1."""
    from tuneterm.core import jobs
    from tuneterm.core.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK

    info = jobs.run_attached(job)
    print(f"job {job.id} {info.state}" + (f": {info.error}" if info.error else ""), file=sys.stderr)
    if info.state == "cancelled":
        return EXIT_INTERRUPTED
    return EXIT_OK if info.state == "succeeded" else EXIT_FAILURE
