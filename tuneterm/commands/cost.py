"""``tuneterm cost DATASET``: what a hosted fine-tune of DATASET will cost, offline, on any provider.

Examples::

    tuneterm cost tickets --model gpt-4.1-mini                  # a workspace dataset, auto epochs
    tuneterm cost data.jsonl --epochs 2 --validation val.jsonl --json
    tuneterm cost tickets --compare                             # every provider's fine-tunable models
    tuneterm cost tickets --provider mistral --model open-mistral-7b
    tuneterm cost tickets --savings --requests 100000 --few-shot 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 30
DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
PROVIDERS = ("openai", "azure", "together", "fireworks", "mistral")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cost", help="estimate what a hosted fine-tune of a dataset costs (offline)",
        description="Count a dataset's tokens as the provider bills them and price the fine-tune. "
                    "Prices come from a dated table per provider (see --prices); unverified or unknown "
                    "prices print as such.",
    )
    p.add_argument("dataset", metavar="DATASET", help="a JSONL file or a workspace dataset name")
    p.add_argument("--provider", "-p", choices=PROVIDERS, default=None,
                   help="openai (default), azure, together, fireworks or mistral; --compare without it lists all")
    p.add_argument("--model", "-m", default=None,
                   help=f"base or ft: model (default: the provider's, {DEFAULT_MODEL} for OpenAI)")
    p.add_argument("--epochs", default="auto", help="a number (1-50) or 'auto' (OpenAI's heuristic, default)")
    p.add_argument("--validation", metavar="V", help="validation file or dataset name (counted, not billed)")
    p.add_argument("--compare", action="store_true",
                   help="every fine-tunable model side by side (every provider's unless --provider is given)")
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
    provider = args.provider or "openai"
    if args.compare and args.provider is None:
        result = cost.compare_providers(train, args.epochs, validation)
        if args.json:
            print(json.dumps(result))
        else:
            print_compare(result)
        return 0
    if args.savings:
        result = cost.savings(train, args.model, args.requests, args.few_shot, args.epochs, args.prices,
                              provider=provider)
        if args.json:
            print(json.dumps(result))
        else:
            print_estimate(result["estimate"])
            print()
            print_savings(result)
        return 0
    result = cost.estimate(train, args.model, args.epochs, validation, args.compare, args.prices, provider=provider)
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


def _cost_text(r: dict) -> str:
    """The cost as a number only when the price is known; unverified and unknown say so."""
    if r["estimated_cost_usd"] is None:
        if r.get("minimum_total_usd"):
            return f"unknown (at least {_usd(r['minimum_total_usd'])} in fees)"
        return "unknown"
    text = f"≈ {_usd(r['estimated_cost_usd'])}"
    if r.get("price_status") == "unverified":
        text += " (unverified price)"
    if r.get("minimum_fee_applied"):
        text += " (the minimum fee)"
    return text


def print_estimate(r: dict) -> None:
    print(f"dataset      {r['dataset']}")
    if r.get("provider", "openai") != "openai":
        print(f"provider     {r['provider']}")
    band = "" if r.get("tokens_exact", True) else f", estimate ±{r['token_band']:.0%}"
    print(f"model        {r['model']}  ({r['encoding']}{band})")
    print(f"examples     {r['n_examples']:,}" + (f"  ({r['n_preference_pairs']:,} DPO pairs)" if r["n_preference_pairs"] else ""))
    print(f"tokens       {r['total_tokens']:,} total; per example min {r['min_tokens']:,} / "
          f"mean {r['mean_tokens']:,.1f} / max {r['max_tokens']:,}")
    limit = r["max_example_tokens"]
    print(f"over limit   {r['n_over_limit']:,}" + (f" (limit {limit:,} tokens per example)" if limit else ""))
    print(f"epochs       {r['n_epochs']} ({r['epochs_source']})")
    if r["billed_tokens"] is not None:
        print(f"billed       {r['billed_tokens']:,} tokens  (= {r['billable_tokens_per_epoch']:,} x {r['n_epochs']})")
        if r["price_per_1m_usd"] is not None:
            status = "" if r.get("price_status", "verified") == "verified" else " (unverified)"
            print(f"price        ${r['price_per_1m_usd']:g} per 1M training tokens{status}")
        else:
            print("price        unknown: no verified per-token rate")
        if r["estimated_cost_range_usd"]:
            lo, hi = r["estimated_cost_range_usd"]
            print(f"cost         {_cost_text(r)}  (range {_usd(lo)}–{_usd(hi)})")
        else:
            print(f"cost         {_cost_text(r)}")
    else:
        print("cost         n/a")
    for item in r.get("extras", []):
        print(f"fee          {item['item']}: {_usd(item['usd'])}")
    if r.get("extras") and r.get("total_usd") is not None:
        print(f"total        ≈ {_usd(r['total_usd'])}")
    print(f"prices       as of {r['prices_as_of']}; {r['prices_source']}")
    if r.get("prices_caution") and r.get("provider", "openai") != "openai":
        print(f"caution      {r['prices_caution']}")
    if r.get("validation"):
        v = r["validation"]
        print(f"validation   {v['n_examples']:,} examples, {v['total_tokens']:,} tokens (not billed)")
    for note in r["notes"]:
        print(f"note: {note}")
    for warning in r["warnings"]:
        print(f"warning: {warning}")
    if r["new_jobs_blocked"]:
        print("warning: no new fine-tuning job can be submitted for this model")


def _status(r: dict) -> str:
    if r["shut_down"]:
        return f"shut down {r['shutdown_date']}"
    if r["new_jobs_blocked"]:
        return "no new jobs"
    if r.get("training_until"):
        return f"trains until {r['training_until']}*"
    if r.get("no_new_jobs_after"):
        return f"no new jobs from {r['no_new_jobs_after']}"
    if r["shutdown_date"]:
        return f"serves until {r['shutdown_date']}"
    return ""


def _tokens(r: dict) -> str:
    return f"{r['total_tokens']:,}" + ("" if r.get("tokens_exact", True) else f" ±{r['token_band']:.0%}")


def _compare_cost(r: dict) -> str:
    if r["estimated_cost_usd"] is None:
        return f"≥${r['minimum_total_usd']:,.2f}+?" if r.get("minimum_total_usd") else "unknown"
    total = r.get("total_usd") if r.get("total_usd") is not None else r["estimated_cost_usd"]
    text = f"${total:,.2f}" if total >= 0.01 else f"${total:.4f}"
    return text + ("?" if r.get("price_status") == "unverified" else "")


def print_compare(result: dict) -> None:
    rows = result["compare"]
    print(f"dataset {result['dataset']}: {result['n_examples']:,} examples")
    header = (f"{'provider':<9} {'model':<48} {'tokenizer':<9} {'tokens':>13} {'ep':>3} {'billed':>11} "
              f"{'$/1M':>6} {'total':>9}  status")
    print(header)
    print("-" * len(header))
    for r in rows:
        billed = f"{r['billed_tokens']:,}" if r["billed_tokens"] is not None else "n/a"
        price = f"{r['price_per_1m_usd']:g}" if r["price_per_1m_usd"] is not None else "?"
        enc = r["encoding"].removesuffix("_base").split(":")[0].split(".")[0]
        print(f"{r.get('provider', 'openai'):<9} {r['model']:<48} {enc:<9} {_tokens(r):>13} {r['n_epochs']:>3} "
              f"{billed:>11} {price:>6} {_compare_cost(r):>9}  {_status(r)}")
    dates = sorted({r["prices_as_of"] for r in rows})
    print(f"prices as of {', '.join(dates)} (see --prices); costs are ≈ ±5 % (± the token band); '?' = unverified "
          "price; 'unknown' = no verified price, '≥$X+?' = known fees plus an unknown training price (the "
          "provider's own estimate is shown at submit)")
    if any(r.get("training_until") for r in rows):
        print("* Azure: for existing fine-tuning customers, no earlier than that date; new customers lost training "
              "when the base model retired")
    for provider, caution in (result.get("cautions") or {}).items():
        print(f"{provider}: {caution}")


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
