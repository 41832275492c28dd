"""``tuneterm distill --teacher REF --data D [key=value ...]``: a distillation job (recipes/distill.toml)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 37


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distil a teacher model into a smaller student",
                       description="KL on temperature-softened token distributions mixed with CE.")
    p.add_argument("--teacher", required=True, help="model reference, e.g. job:ID")
    p.add_argument("--data", required=True, help="training chat JSONL (file or dataset name)")
    p.add_argument("--val-data", default=None, help="validation chat JSONL (default: the training data)")
    p.add_argument("--foreground", action="store_true", help="run attached and print the log")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="steps=50 alpha=0.9 keep_layers=[0,2]")
    p.set_defaults(func=run)


def _path(value: str | None, split: str) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    if p.exists():
        return str(p.resolve())
    from tuneterm.core.datasets import store

    return str(store.resolve_path(value, split))


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import jobs, recipes
    from tuneterm.core.errors import ConfigError

    config = recipes.read_toml(recipes.RECIPES_DIR / "distill.toml")
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in config:
            raise ConfigError(f"unknown setting {item!r}", [("settings", ", ".join(config))], "see recipes/distill.toml")
        like = config[key]
        try:
            config[key] = json.loads(value) if isinstance(like, list) else (
                value if isinstance(like, str) else type(like)(value))
        except ValueError as exc:
            raise ConfigError(f"{key} must be a {type(like).__name__}", [("value", value)]) from exc
    config["teacher"] = str(Path(args.teacher).resolve()) if Path(args.teacher).exists() else args.teacher
    config["data"] = _path(args.data, "train")
    if args.val_data or not Path(args.data).is_file():
        val = args.val_data or args.data
        config["val_data"] = _path(val, "val")
    job = jobs.create_job("distill", config, name=f"distill {args.teacher}")
    if args.foreground:
        from tuneterm.commands.train import foreground

        return foreground(job)
    jobs.launch(job.id)
    print(f"started job {job.id}: distil {args.teacher}; then: tuneterm jobs show {job.id}")
    return 0
