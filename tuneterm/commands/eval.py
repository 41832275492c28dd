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
    p.add_argument("--json", action="store_true", help="print report.json to stdout instead of the table "
                                                       "(with --job: the job as JSON)")
    p.add_argument("--job", action="store_true",
                   help="run as a background job (follow it with `tuneterm jobs logs ID -f`; the workbench's "
                        "Evals screen shows its report); it takes a device slot like a training job")
    p.add_argument("--gpus", metavar="0",
                   help="with --job: the GPU to run on (default: any free one); the job waits queued while it is busy")
    p.add_argument("--device", default="auto", help="auto (CUDA when visible, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bf16/fp16 on a GPU, float32 on the CPU), float32, bfloat16 "
                                                   "or float16")
    from tuneterm.commands._eval_votes import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core.errors import EXIT_FAILURE, UsageError
    from tuneterm.core.evals import report as report_mod
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
    if args.check:
        return _check(args)
    if args.job:
        return _as_job(args)
    if args.gpus:
        raise UsageError("--gpus places a job on a GPU", [("--gpus", args.gpus)],
                         "add --job to run the eval as a job, or use --device cuda:N to run it in this terminal")
    tasks = load_suite(args.spec)
    variants = parse_variants(split_models(args.models))
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


def _check(args: argparse.Namespace) -> int:
    """``--check``: every spec, metric, data file, few-shot pool and model reference, without loading a
    model; each problem is printed (not only the first) and the exit code is the first problem's."""
    from tuneterm.core.errors import TunetermError, UsageError
    from tuneterm.core.evals.items import build_items
    from tuneterm.core.evals.metrics import check_metrics
    from tuneterm.core.evals.spec import flatten, load_suite
    from tuneterm.core.evals.variants import parse_variant, split_models
    from tuneterm.core.fewshot import load_pool
    from tuneterm.core.jobs.plan import freeze_ref

    errors: list[TunetermError] = []

    def attempt(fn):
        try:
            return fn()
        except TunetermError as exc:
            errors.append(exc)
            return None

    tasks = attempt(lambda: load_suite(args.spec, errors)) or []
    models = split_models(args.models)
    if not models:
        errors.append(UsageError("no models given", hint="--models REF[,REF...], e.g. --models smollm2-135m-instruct"))
    for raw in sorted({m for m in models if models.count(m) > 1}):
        errors.append(UsageError("a model is listed twice", [("model", raw)], "list each variant once"))
    for raw in dict.fromkeys(models):  # parsed and resolved (job:last, prefixes) as a run would, no weights loaded
        variant = attempt(lambda raw=raw: parse_variant(raw))
        if variant is not None and attempt(lambda raw=raw: freeze_ref(raw, "--models")) is not None \
                and variant.fewshot is not None:
            pool = attempt(lambda v=variant: load_pool(v.fewshot.pool))
            if pool is not None:
                print(f"few-shot pool {variant.fewshot.pool}: {len(pool)} examples")
    for spec in tasks:
        before = len(errors)
        check_metrics(spec, errors)
        for m in spec.metrics:
            if m.module == "judge" and (m.judge or {}).get("model"):
                attempt(lambda m=m: freeze_ref(str(m.judge["model"]), f"{m.name}.judge.model"))
        items = attempt(lambda spec=spec: build_items(spec, limit=args.limit))
        if items is None or len(errors) > before:
            continue
        dups = sum(it.duplicate_of is not None for it in items)
        print(f"{spec.name}: {spec.type}, version {spec.version}, {len(items)} items, metrics "
              f"{', '.join(m.name for m in spec.metrics)}"
              + (f"; {dups} duplicate row(s), each scored as an item of its own" if dups else ""))
    errors = flatten(errors)
    if not errors:
        return 0
    sys.stdout.flush()
    for err in errors:
        print(err.render(), file=sys.stderr)
    print(f"eval --check: {len(errors)} problem{'s' if len(errors) != 1 else ''} found", file=sys.stderr)
    return errors[0].exit_code


def _as_job(args: argparse.Namespace) -> int:
    """``--job``: the same checks as a run, then an ``eval`` job in its device slot (like the Evals screen)."""
    from tuneterm.core import jobs
    from tuneterm.core.evals.variants import split_models
    from tuneterm.core.evals.views import check_and_config
    from tuneterm.core.jobs import slots

    config, command = check_and_config(args.spec, split_models(args.models), args.limit, args.batch_size)
    if args.baseline:
        config["baseline"] = args.baseline
    devices, _ = slots.devices_for(args.gpus, 1, "eval")
    job = jobs.create_job("eval", config, name=f"eval {Path(args.spec).stem}", devices=devices)
    job = jobs.launch(job.id)
    if args.json:
        print(json.dumps(job.to_dict(), default=str))
        return 0
    print(f"started eval job {job.id}: {command}")
    print(f"  follow it:  tuneterm jobs logs {job.id} --follow")
    print(f"  report:     {job.dir / 'output' / 'report.md'} when it succeeds")
    return 0
