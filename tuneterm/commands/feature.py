"""``tuneterm feature --model REF --data DATASET [key=value ...]``: an alias of
``tuneterm train --method feature`` (frozen hidden states + logistic regression, recipes/feature.toml);
the same checks, through tuneterm.core.jobs.plan."""

from __future__ import annotations

import argparse

ORDER = 36


def register(sub: argparse._SubParsersAction) -> None:
    from tuneterm.core.jobs.placement import add_slot_options

    p = sub.add_parser("feature", help="train a classifier on a frozen model's hidden states (= train --method feature)",
                       description="Feature-based fine-tuning: extract (and cache) hidden states, fit a "
                                   "logistic regression on the assistant answers as labels. The same job as "
                                   "`tuneterm train --method feature`.",
                       epilog="example: tuneterm feature --model smollm2-135m-instruct --data sample_data/tickets")
    p.add_argument("--model", default=None, help="model reference (default: the recipe's)")
    p.add_argument("--data", required=True, help="dataset name, folder with train/val/test.jsonl, or a file")
    p.add_argument("--foreground", action="store_true", help="run attached and print the log")
    add_slot_options(p)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="layer=-4 pooling=last c=0.5 seed=1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuneterm.commands import train

    return train.run(train.as_train_args(args, "feature", model=args.model, name=f"feature {args.data}"))
