"""``tuneterm quantize MODEL_REF --method M [--recipe FILE] [key=value ...] [--foreground]``.

Validates the config here (torch-free, in a second), then starts a ``quantize`` job: a detached
child by default, or attached with ``--foreground`` (its log streams here and the quality
report is printed at the end). The finished artifact is ``job:ID``.
"""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    from tuneterm.core.jobs.placement import add_slot_options

    p = sub.add_parser(
        "quantize",
        help="quantize a model (bnb int8/nf4/fp4, int8 CPU, GGUF) and gate it against its parent",
        description=(
            "Quantize MODEL_REF and measure the result against it: size, memory, load time, TTFT, "
            "tokens/s, perplexity, KL, top-1 agreement and exact match. A failed threshold "
            "(e.g. gate.max_ppl_increase=0.05) fails the job. The artifact becomes job:ID."
        ),
    )
    p.add_argument("model", metavar="MODEL_REF", help="e.g. smollm2-135m-instruct, job:ID (an adapter is merged first), ./dir")
    p.add_argument("--method", "-m", default=None,
                   help="bnb-int8 | bnb-nf4 | bnb-fp4 | int8-dynamic | int8-weight-only | gguf (default: the recipe's, else int8-dynamic)")
    p.add_argument("--recipe", "-r", default=None, metavar="FILE", help="a recipe TOML (recipes/<method>.toml, or a name)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="settings, e.g. quant.outtype=f16 gate.max_ppl_increase=0.02 gate.data=tickets")
    p.add_argument("--foreground", "-f", action="store_true", help="run attached and print the quality report")
    p.add_argument("--name", default=None, help="a name for the job")
    add_slot_options(p)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit (nothing is written)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)
    _collect_overrides(p)


def _collect_overrides(parser: argparse.ArgumentParser) -> None:
    """``key=value`` items may come before or after options (``MODEL --method M a=b --foreground``):
    argparse leaves the late ones over, so they are moved into ``overrides`` here."""
    base = type(parser).parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = base(parser, args, namespace)
        moved = [e for e in extras if "=" in e and not e.startswith("-")]
        ns.overrides = list(getattr(ns, "overrides", None) or []) + moved
        return ns, [e for e in extras if e not in moved]

    parser.parse_known_args = parse_known_args


def plan(args: argparse.Namespace):
    """The checked, frozen job of these arguments (tuneterm.core.jobs.plan); nothing is written."""
    from tuneterm.core.jobs.plan import plan_quantize

    return plan_quantize(args.model, method=args.method, recipe=args.recipe, overrides=args.overrides,
                         name=args.name)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import jobs

    job_plan = plan(args)
    config = job_plan.config
    if args.dry_run:
        from tuneterm.core.jobs.store import config_toml

        print(f"# tuneterm quantize {args.model} --method {config['method']}")
        print(config_toml(job_plan.spec()))
        return 0
    from tuneterm.core.jobs.placement import place

    info = place(job_plan, args).create()
    if not args.foreground:
        jobs.launch(info.id)
        if args.json:
            print(json.dumps({"job": info.id, "state": "started", "model_ref": f"job:{info.id}"}))
        else:
            print(f"started quantize job {info.id} ({config['method']} of {config['model']})")
            print(f"  follow: tuneterm jobs logs {info.id} -f")
            print(f"  when it succeeds, use it as job:{info.id}")
        return 0
    return _foreground(info, args.json)


def _foreground(info, as_json: bool) -> int:
    from tuneterm.core import jobs
    from tuneterm.core.errors import EXIT_FAILURE, EXIT_INTERRUPTED, JobError

    final = jobs.run_attached(info, stream=sys.stderr if as_json else sys.stdout)
    quality_md = info.dir / "output" / "quality.md"
    quality_json = info.dir / "output" / "quality.json"
    if as_json:
        report = json.loads(quality_json.read_text()) if quality_json.is_file() else None
        print(json.dumps({"job": info.id, "state": final.state, "error": final.error,
                          "model_ref": f"job:{info.id}" if final.state == "succeeded" else None,
                          "quality": report}, default=str))
    elif quality_md.is_file():
        print()
        print(quality_md.read_text())
    if final.state == "succeeded":
        if not as_json:
            print(f"use it as job:{info.id}")
        return 0
    if final.state == "cancelled":
        return EXIT_INTERRUPTED
    if quality_json.is_file() and not json.loads(quality_json.read_text()).get("passed", True):
        print(f"error: job {info.id} failed the quality gate: {final.error}", file=sys.stderr)
        return EXIT_FAILURE
    raise JobError(f"quantize job {info.id} {final.state}", [("error", str(final.error))],
                   f"see `tuneterm jobs logs {info.id}`")
