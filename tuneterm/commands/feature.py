"""``tuneterm feature --model REF --data DATASET [key=value ...]``: a feature-based classifier job.

Runs job kind ``feature`` (tuneterm.workers.classifier): frozen hidden states + logistic regression.
Settings come from recipes/feature.toml, overridden as ``key=value``.
"""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 36


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feature", help="train a classifier on a frozen model's hidden states",
                       description="Feature-based fine-tuning: extract (and cache) hidden states, fit a "
                                   "logistic regression on the assistant answers as labels.",
                       epilog="example: tuneterm feature --model smollm2-135m-instruct --data sample_data/tickets")
    p.add_argument("--model", default=None, help="model reference (default: the recipe's)")
    p.add_argument("--data", required=True, help="dataset name, folder with train/val/test.jsonl, or a file")
    p.add_argument("--foreground", action="store_true", help="run attached and print the log")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="layer=-4 pooling=last c=0.5 seed=1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import jobs, recipes
    from tuneterm.core.errors import ConfigError

    config = recipes.read_toml(recipes.RECIPES_DIR / "feature.toml")
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in config:
            raise ConfigError(f"unknown setting {item!r}", [("settings", ", ".join(config))],
                              "see recipes/feature.toml")
        like = config[key]
        try:
            config[key] = type(like)(value) if not isinstance(like, str) else value
        except ValueError as exc:
            raise ConfigError(f"{key} must be a {type(like).__name__}", [("value", value)]) from exc
    if config.get("pooling") not in ("mean", "last"):
        raise ConfigError("pooling must be mean or last", [("pooling", config.get("pooling"))])
    if args.model:
        config["model"] = args.model
    from pathlib import Path

    data = Path(args.data).expanduser()
    if data.exists():  # the job's child runs elsewhere: store an absolute path
        config["dataset"] = str(data.resolve())
    else:
        from tuneterm.core.datasets import store

        store.resolve_path(args.data, "train")  # fails here, with a hint, for an unknown name
        config["dataset"] = args.data
    model = Path(config["model"]).expanduser()
    if model.exists():
        config["model"] = str(model.resolve())
    job = jobs.create_job("feature", config, name=f"feature {args.data}")
    if args.foreground:
        from tuneterm.commands.train import foreground

        code = foreground(job)
        metrics = job.dir / "output" / "metrics.json"
        if metrics.is_file():
            print(metrics.read_text(), end="")
        return code
    job = jobs.launch(job.id)
    if args.json:
        print(json.dumps(job.to_dict(), default=str))
        return 0
    print(f"started job {job.id}: feature classifier on {config['model']}")
    print(f"  when done:  tuneterm chat job:{job.id} \"ticket text\"", file=sys.stdout)
    return 0
