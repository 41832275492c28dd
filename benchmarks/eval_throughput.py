"""Eval throughput: the ticket suite on the embedded model, batched vs batch size 1, one process.

    .venv/bin/python benchmarks/eval_throughput.py [--limit 80] [--batch-size 16]

Times only the scoring loop (the model is loaded before each timed run; the cache is off), after
a short warm-up. Prints one JSON line: batched_items_s, unbatched_items_s, ratio (goal >= 3) and
scores_equal (the per-item outputs and the exact-match score of both runs are identical).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=80)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
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


if __name__ == "__main__":
    raise SystemExit(main())
