"""``tuneterm eval SPEC|SUITE --models REF,REF,...``: score variants on eval tasks, headless.

Specs are validated (torch-free) before any model loads; the runner is imported only when the
command runs. Exit codes: 0 ok, 1 with --fail-on-regression when a variant is significantly
worse than its baseline, 2-5 as for every command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score models on eval tasks (YAML specs under evals/)",
        description="Run eval tasks on model variants and write report.json, samples.jsonl and report.md. "
        "Variants: model references (smollm2-135m-instruct, job:ID for adapters, quantized models and "
        "classifiers, ./dir, hf:ORG/NAME, openai:MODEL, http://HOST:PORT/v1#MODEL) and few-shot variants "
        "fewshot:K[:similar|:seed=N]:POOL@REF (REF prompted with K examples from POOL; it shares REF's model).",
        epilog="examples:\n  tuneterm eval evals/tickets --models smollm2-135m-instruct,job:abc123 --limit 40\n"
        "  tuneterm eval evals/tickets.yaml --models job:abc123,"
        "fewshot:4:sample_data/fewshot/pool.jsonl@smollm2-135m-instruct\n"
        "  tuneterm eval votes --json                 (blind votes: win rates, Bradley-Terry ranking)\n"
        "  tuneterm eval votes export --dpo prefs     (votes as DPO preference pairs; --sft NAME: the chosen answers)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", metavar="SPEC|SUITE", help="a task .yaml, a suite .yaml or a folder of task files; "
                   "or `votes` for the blind-vote win rates (`eval votes export --dpo NAME` turns them into data)")
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)  # `eval votes export`
    p.add_argument("--models", "-m", default=None, help="comma-separated variants; the first is the default baseline")
    p.add_argument("--out", "-o", default=None, help="report folder (default: <workspace>/evals/<run-id>)")
    p.add_argument("--limit", "-n", type=int, default=None, help="first N items of each task")
    p.add_argument("--batch-size", "-b", type=int, default=16)
    p.add_argument("--baseline", default=None, help="compare every variant with this one (one of --models)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when a variant is significantly worse than its baseline")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the per-item cache")
    p.add_argument("--check", action="store_true", help="validate the specs and data only; load no model")
    p.add_argument("--json", action="store_true", help="print report.json to stdout instead of the table")
    p.add_argument("--device", default="auto", help="auto (CUDA when visible, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bf16/fp16 on a GPU, float32 on the CPU), float32, bfloat16 "
                                                   "or float16")
    from tuneterm.commands._eval_votes import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core.errors import EXIT_FAILURE, UsageError
    from tuneterm.core.evals import report as report_mod
    from tuneterm.core.evals.items import build_items
    from tuneterm.core.evals.spec import load_suite
    from tuneterm.core.evals.variants import parse_variants, split_models

    if args.spec == "votes":
        from tuneterm.commands._eval_votes import run_votes

        return run_votes(args)
    if args.rest:
        raise UsageError("unexpected arguments after the spec", [("given", " ".join(args.rest))])
    if not args.models:
        raise UsageError("eval needs --models", [("spec", args.spec)],
                         "tuneterm eval SPEC --models smollm2-135m-instruct,job:ID")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1", [("batch size", str(args.batch_size))])
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1", [("limit", str(args.limit))])
    tasks = load_suite(args.spec)
    variants = parse_variants(split_models(args.models))
    if args.check:
        from tuneterm.core.fewshot import load_pool

        for pool in sorted({v.fewshot.pool for v in variants if v.fewshot is not None}):
            print(f"few-shot pool {pool}: {len(load_pool(pool))} examples")
        for spec in tasks:
            items = build_items(spec, limit=args.limit)
            dups = sum(it.duplicate_of is not None for it in items)
            print(f"{spec.name}: {spec.type}, version {spec.version}, {len(items)} items, metrics "
                  f"{', '.join(m.name for m in spec.metrics)}"
                  + (f"; {dups} duplicate row(s), each scored as an item of its own" if dups else ""))
        return 0
    from tuneterm.core.workspace import workspace

    out = Path(args.out) if args.out else workspace().evals_dir / time.strftime("%Y%m%d-%H%M%S")
    from tuneterm.workers.evals.runner import RunOptions, run_eval  # heavy: torch & co.

    opts = RunOptions(out_dir=out, limit=args.limit, batch_size=args.batch_size, baseline=args.baseline,
                      use_cache=not args.no_cache, dtype=args.dtype, device=args.device)
    report = run_eval(tasks, variants, opts)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(report_mod.render_table(report), end="")
        print(f"report: {out / 'report.json'}")
    bad = report_mod.regressions(report)
    if args.fail_on_regression and bad:
        for r in bad:
            print(f"regression: {r['task']}: {r['variant']} vs {r['baseline']} ({r['metric']}) "
                  f"delta {r['delta']:+.4f}, p={r['p_value']:.3g}", file=sys.stderr)
        return EXIT_FAILURE
    return 0
