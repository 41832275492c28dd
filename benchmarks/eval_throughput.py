"""Eval throughput: the ticket suite on the embedded model, one process.

    .venv/bin/python benchmarks/eval_throughput.py [--limit 80] [--batch-size 16]
    .venv/bin/python benchmarks/eval_throughput.py --case shared-prefix [--limit 48] [--batch-size 16]

Times only the scoring loop (the model is loaded before each timed run; the cache is off), after
a short warm-up. Prints one JSON line.

- ``batching`` (default): batched vs batch size 1: batched_items_s, unbatched_items_s, ratio (goal >= 3)
  and scores_equal (the per-item outputs and the exact-match score of both runs are identical).
- ``shared-prefix``: the tickets with a ~600-token system prompt (a queue list with routing rules),
  scored as a generate task and as a choice task (log-likelihood of each queue), with the shared
  prefix's key/value cache reused vs computed for every row: ratio (goal >= 3), outputs_equal (the
  generated texts and the chosen queues are identical) and max_logprob_diff.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, help="items (default 80; 48 for shared-prefix)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--case", choices=("batching", "shared-prefix"), default="batching")
    args = ap.parse_args()
    if args.case == "shared-prefix":
        return shared_prefix(args.limit or 48, args.batch_size)
    args.limit = args.limit or 80
    import torch

    from tuneterm.core.evals.spec import load_task
    from tuneterm.core.evals.variants import parse_variants
    from tuneterm.workers.evals.runner import RunOptions, collect, predictions
    from tuneterm.workers.evals.scoring import score

    spec = load_task(REPO / "evals" / "tickets" / "tickets.yaml")
    ref = "smollm2-135m-instruct"
    variants = parse_variants([ref])

    def run(batch_size: int, limit: int) -> tuple[float, list[str], float]:
        outcomes, _ = collect([spec], variants, RunOptions(batch_size=batch_size, limit=limit, use_cache=False,
                                                           progress=False))
        out = outcomes[spec.name][ref]
        preds, refs, _ = predictions(spec, out)
        em = score(spec.metrics[0], spec, preds, refs).value
        return out.speed["seconds"], [r["output"] for r in out.records], em

    run(args.batch_size, 4)  # warm-up: kernels, tokenizer caches
    b_s, b_out, b_em = run(args.batch_size, args.limit)
    u_s, u_out, u_em = run(1, args.limit)
    n = len(b_out)
    print(json.dumps({
        "benchmark": "eval_throughput", "task": spec.name, "model": ref, "items": n,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "batched_s": round(b_s, 2), "unbatched_s": round(u_s, 2),
        "batched_items_s": round(n / b_s, 3), "unbatched_items_s": round(n / u_s, 3),
        "ratio": round(u_s / b_s, 2),
        "scores_equal": b_out == u_out and b_em == u_em,
        "exact_match": {"batched": b_em, "unbatched": u_em},
        "outputs_differing": sum(1 for a, b in zip(b_out, u_out) if a != b),
    }))
    return 0


QUEUES = {"payments-ops": "charges, refunds, invoices, proration, cards, payouts and tax documents",
          "platform-eng": "APIs, webhooks, SDKs, outages, latency, rate limits and integrations",
          "identity-team": "logins, passwords, SSO, two-factor codes, account locks and permissions",
          "logistics": "parcels, deliveries, couriers, returns, warehouses and shipping labels"}


def long_system_prompt() -> str:
    """About 600 tokens: the queues, what each handles, and routing rules, as real routing prompts read."""
    parts = ["You route customer support tickets to exactly one queue. Answer with the queue name only."]
    for name, topics in QUEUES.items():
        parts.append(f"Queue {name} handles {topics}. Send a ticket to {name} when its main problem is about "
                     f"{topics.split(',')[0]}, even if the customer also mentions other topics in passing.")
    rules = ["a ticket that mentions money and a login goes where the customer's actual request is",
             "a ticket about a failed payment caused by an outage goes to the team that can fix the cause",
             "a refund for a lost parcel is a payments question once the parcel is confirmed lost",
             "a locked account after too many payment attempts is an identity question",
             "a webhook that reports wrong invoice totals is a platform question unless the totals are wrong",
             "an angry tone, urgency words or capital letters never change the queue",
             "greetings, signatures and ticket numbers carry no routing information",
             "if two queues fit equally, prefer the one named first in this list"]
    for i, rule in enumerate(rules * 3, 1):
        parts.append(f"Rule {i}: {rule}.")
    return " ".join(parts)


def shared_prefix(limit: int, batch_size: int) -> int:
    """Reuse vs no reuse of the shared system prompt's key/value cache, generate and choice tasks."""
    import tempfile

    import torch

    from tuneterm.core import resources
    from tuneterm.core.evals.spec import load_task
    from tuneterm.core.evals.variants import parse_variants
    from tuneterm.workers.evals.runner import RunOptions, collect, predictions

    system = long_system_prompt()
    rows = [json.loads(line) for line in (resources.data_dir() / "sample_data" / "tickets" / "test.jsonl")
            .read_text().splitlines() if line.strip()][:limit]
    folder = Path(tempfile.mkdtemp(prefix="eval-prefix-"))
    with open(folder / "items.jsonl", "w") as fh:
        for i, row in enumerate(rows):
            msgs = [{"role": "system", "content": system}] + [m for m in row["messages"] if m["role"] != "system"]
            fh.write(json.dumps({"id": f"t{i}", "messages": msgs, "queues": list(QUEUES),
                                 "answer": list(QUEUES).index(msgs[-1]["content"])}) + "\n")
    (folder / "gen.yaml").write_text("name: route_gen\nversion: 1\ntype: generate\ndata: {path: items.jsonl}\n"
                                     "generation: {max_new_tokens: 8, temperature: 0, stop: [\"\\n\"]}\n"
                                     "extract: [strip, first_word, lowercase]\nmetrics: [exact_match]\n")
    (folder / "choice.yaml").write_text("name: route_choice\nversion: 1\ntype: choice\ndata: {path: items.jsonl}\n"
                                        "prompt: {chat_template: true}\nchoices: queues\ntarget: '{{answer}}'\n"
                                        "metrics: [accuracy]\n")
    specs = [load_task(folder / "gen.yaml"), load_task(folder / "choice.yaml")]
    ref = "smollm2-135m-instruct"
    variants = parse_variants([ref])
    from tuneterm.workers import loading

    tokens = len(loading.load_tokenizer(ref)(system)["input_ids"])

    def run(share: bool, n: int) -> tuple[dict, dict, dict]:
        cpu = time.process_time()
        outcomes, _ = collect(specs, variants, RunOptions(batch_size=batch_size, limit=n, use_cache=False,
                                                          progress=False, share_prefix=share))
        seconds = {s.name: outcomes[s.name][ref].speed["seconds"] for s in specs}
        outputs = {s.name: predictions(s, outcomes[s.name][ref])[0] for s in specs}
        logprobs = [r["logprobs"] for r in outcomes["route_choice"][ref].records]
        return seconds, outputs, {"logprobs": logprobs, "cpu_s": time.process_time() - cpu}

    run(True, 4)  # warm-up
    on_s, on_out, on_lp = run(True, limit)
    off_s, off_out, off_lp = run(False, limit)
    diff = max(abs(a - b) for x, y in zip(on_lp["logprobs"], off_lp["logprobs"]) for a, b in zip(x, y))
    print(json.dumps({
        "benchmark": "eval_throughput", "case": "shared-prefix", "model": ref, "items": len(rows[:limit]),
        "system_prompt_tokens": tokens, "batch_size": batch_size, "threads": torch.get_num_threads(),
        "reuse_s": {k: round(v, 2) for k, v in on_s.items()}, "no_reuse_s": {k: round(v, 2) for k, v in off_s.items()},
        "ratio": {k: round(off_s[k] / on_s[k], 2) for k in on_s},
        "ratio_total": round(sum(off_s.values()) / sum(on_s.values()), 2),
        # CPU seconds of this process (loads included): steadier than wall time on a shared machine
        "cpu_s": {"reuse": round(on_lp["cpu_s"], 2), "no_reuse": round(off_lp["cpu_s"], 2)},
        "cpu_ratio": round(off_lp["cpu_s"] / on_lp["cpu_s"], 2),
        "outputs_equal": on_out == off_out, "max_logprob_diff": diff,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
