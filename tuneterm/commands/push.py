"""``tuneterm push job:ID ORG/NAME [--private] [--dry-run]``: a job's artifact and model card to the Hub."""

from __future__ import annotations

import argparse

ORDER = 46


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="upload a job's adapter, model or GGUF with its model card to the Hugging Face Hub",
                       description="Uploads the artifact of a finished job with a generated model card (base model, "
                                   "data hashes, recipe, eval results, quantization gate, licence). The token is "
                                   "HF_TOKEN from the environment; HF_ENDPOINT points at another Hub.")
    p.add_argument("job", metavar="job:ID", help="a finished train, quantize or feature job")
    p.add_argument("repo", metavar="ORG/NAME", help="the Hub repo (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--dry-run", action="store_true", help="show the files and the card; upload nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import hub

    plan = hub.plan_push(args.job, args.repo)
    if args.dry_run:
        print("\n".join(plan.describe()))
        print("\n--- README.md ---")
        print(plan.card)
        return 0
    result = hub.push(plan, private=args.private)
    print(f"pushed job:{plan.job_id} ({plan.kind}, {result['files']} files) to {result['repo_url']}")
    print(f"commit: {result['commit_url']}")
    return 0
