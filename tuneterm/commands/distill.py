"""``tuneterm distill --teacher REF --data D [key=value ...]``: an alias of
``tuneterm train --method distill --model REF --data D`` (recipes/distill.toml); the same checks,
through tuneterm.core.jobs.plan."""

from __future__ import annotations

import argparse

ORDER = 37


def register(sub: argparse._SubParsersAction) -> None:
    from tuneterm.core.jobs.placement import add_slot_options

    p = sub.add_parser("distill", help="distil a teacher model into a smaller student (= train --method distill)",
                       description="KL on temperature-softened token distributions mixed with CE. The same job "
                                   "as `tuneterm train --method distill --model TEACHER`.")
    p.add_argument("--teacher", required=True, help="model reference, e.g. job:ID")
    p.add_argument("--data", required=True, help="training data (file or dataset name)")
    p.add_argument("--val-data", default=None, help="validation data (default: the dataset's val split if any)")
    p.add_argument("--foreground", action="store_true", help="run attached and print the log")
    add_slot_options(p)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="steps=50 alpha=0.9 keep_layers=[0,2]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuneterm.commands import train

    return train.run(train.as_train_args(args, "distill", model=args.teacher, val=args.val_data,
                                         name=f"distill {args.teacher}"))
