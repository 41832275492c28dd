"""``tuneterm cost DATASET``: what an OpenAI fine-tune of DATASET will cost, offline.

Examples::

    tuneterm cost tickets --model gpt-4.1-mini                  # a workspace dataset, auto epochs
    tuneterm cost data.jsonl --epochs 2 --validation val.jsonl --json
    tuneterm cost tickets --compare                             # every fine-tunable model
    tuneterm cost tickets --savings --requests 100000 --few-shot 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 30
DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cost", help="estimate what an OpenAI fine-tune of a dataset costs (offline)",
        description="Count a dataset's tokens as OpenAI bills them and price the fine-tune. "
                    "Prices come from a dated table (see --prices).",
    )
    p.add_argument("dataset", metavar="DATASET", help="a JSONL file or a workspace dataset name")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL,
                   help=f"base or ft: model (default {DEFAULT_MODEL}); aliases such as gpt-4o-mini work")
    p.add_argument("--epochs", default="auto", help="a number (1-50) or 'auto' (OpenAI's heuristic, default)")
    p.add_argument("--validation", metavar="V", help="validation file or dataset name (counted, not billed)")
    p.add_argument("--compare", action="store_true", help="estimate every fine-tunable model side by side")
    p.add_argument("--savings", action="store_true",
                   help="compare K-shot prompts on the base model with zero-shot on the fine-tune")
    p.add_argument("--requests", type=int, default=10_000, metavar="N", help="requests to serve for --savings")
    p.add_argument("--few-shot", type=int, default=5, metavar="K", help="demonstrations per base-model prompt")
    p.add_argument("--prices", metavar="FILE", help="a TOML price table overriding the shipped one")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def resolve_dataset(name_or_path: str, split: str | None = None) -> Path:
    """A dataset file: via the workspace's dataset store when it is there, else a plain path."""
    try:
        from tuneterm.core.datasets import store
    except ImportError:
        store = None
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if store is not None and hasattr(store, "resolve_path"):
        from tuneterm.core.errors import NotFoundError

        try:
            return Path(store.resolve_path(name_or_path, split))
        except NotFoundError:
            if split is None:
                raise
            return Path(store.resolve_path(name_or_path, None))  # a dataset without splits: all rows
    if not path.is_file():
        from tuneterm.core.errors import NotFoundError

        raise NotFoundError("no such dataset file", [("dataset", name_or_path)],
                            "give a JSONL path or import it first with `tuneterm data import`")
    return path


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import cost

    train = resolve_dataset(args.dataset, "train")
    validation = resolve_dataset(args.validation, "val") if args.validation else None
    if args.savings:
        result = cost.savings(train, args.model, args.requests, args.few_shot, args.epochs, args.prices)
        if args.json:
            print(json.dumps(result))
        else:
            print_estimate(result["estimate"])
            print()
            print_savings(result)
        return 0
    result = cost.estimate(train, args.model, args.epochs, validation, args.compare, args.prices)
    if args.json:
        print(json.dumps(result))
    elif args.compare:
        print_compare(result)
    else:
        print_estimate(result)
    return 0


def _usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 0.1:
        return f"${value:,.2f}"
    if value == 0:
        return "$0"
    return "$" + f"{value:.8f}".rstrip("0")


def print_estimate(r: dict) -> None:
    print(f"dataset      {r['dataset']}")
    print(f"model        {r['model']}  ({r['encoding']})")
    print(f"examples     {r['n_examples']:,}" + (f"  ({r['n_preference_pairs']:,} DPO pairs)" if r["n_preference_pairs"] else ""))
    print(f"tokens       {r['total_tokens']:,} total; per example min {r['min_tokens']:,} / "
          f"mean {r['mean_tokens']:,.1f} / max {r['max_tokens']:,}")
    limit = r["max_example_tokens"]
    print(f"over limit   {r['n_over_limit']:,}" + (f" (limit {limit:,} tokens per example)" if limit else ""))
    print(f"epochs       {r['n_epochs']} ({r['epochs_source']})")
    if r["billed_tokens"] is not None:
        lo, hi = r["estimated_cost_range_usd"]
        print(f"billed       {r['billed_tokens']:,} tokens  (= {r['billable_tokens_per_epoch']:,} x {r['n_epochs']})")
        print(f"price        ${r['price_per_1m_usd']:g} per 1M training tokens")
        print(f"cost         ≈ {_usd(r['estimated_cost_usd'])}  (range {_usd(lo)}–{_usd(hi)})")
    else:
        print("cost         n/a")
    print(f"prices       as of {r['prices_as_of']}; {r['prices_source']}")
    if r.get("validation"):
        v = r["validation"]
        print(f"validation   {v['n_examples']:,} examples, {v['total_tokens']:,} tokens (not billed)")
    for note in r["notes"]:
        print(f"note: {note}")
    for warning in r["warnings"]:
        print(f"warning: {warning}")
    if r["new_jobs_blocked"]:
        print("warning: no new fine-tuning job can be submitted for this model")


def print_compare(result: dict) -> None:
    rows = result["compare"]
    print(f"dataset {result['dataset']}: {result['n_examples']:,} examples")
    header = f"{'model':<26} {'enc':<11} {'tokens':>11} {'over':>5} {'ep':>3} {'billed':>12} {'$/1M':>7} {'cost':>10}  status"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["shut_down"]:
            status = f"shut down {r['shutdown_date']}"
        elif r["new_jobs_blocked"]:
            status = "no new jobs"
        elif r["shutdown_date"]:
            status = f"serves until {r['shutdown_date']}"
        else:
            status = ""
        billed = f"{r['billed_tokens']:,}" if r["billed_tokens"] is not None else "n/a"
        price = f"{r['price_per_1m_usd']:g}" if r["price_per_1m_usd"] is not None else "n/a"
        print(f"{r['model']:<26} {r['encoding'][:-5]:<11} {r['total_tokens']:>11,} {r['n_over_limit']:>5} "
              f"{r['n_epochs']:>3} {billed:>12} {price:>7} {_usd(r['estimated_cost_usd']):>10}  {status}")
    dates = sorted({r["prices_as_of"] for r in rows})
    print(f"prices as of {', '.join(dates)} (see --prices); costs are ≈ ±5 %")


def print_savings(s: dict) -> None:
    print(f"savings      {s['requests']:,} requests, {s['few_shot']}-shot base model vs zero-shot fine-tune")
    print(f"prompt       {s['mean_prompt_tokens_few_shot']:,.1f} tokens few-shot, "
          f"{s['mean_prompt_tokens_zero_shot']:,.1f} zero-shot; reply {s['mean_output_tokens']:,.1f}")
    print(f"per request  base {_usd(s['base_cost_per_request_usd'])}, fine-tuned "
          f"{_usd(s['finetuned_cost_per_request_usd'])}: saves {_usd(s['savings_per_request_usd'])} "
          f"({s['prompt_tokens_saved_per_request']:,.1f} prompt tokens)")
    print(f"training     {_usd(s['training_cost_usd'])}")
    if s["break_even_requests"] is None:
        print("break-even   never: the fine-tuned model costs more per request than the few-shot base model")
    else:
        print(f"break-even   after {s['break_even_requests']:,} requests")
    print(f"total        base {_usd(s['total_base_usd'])} vs fine-tuned {_usd(s['total_finetuned_usd'])} "
          f"(net {_usd(s['net_savings_usd'])})")
    print(f"prices       as of {s['prices_as_of']}")
