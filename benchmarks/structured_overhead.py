"""The grammar engine's cost per decoded token (xgrammar, in the serve decode loop).

    .venv/bin/python benchmarks/structured_overhead.py [--tokens 48] [--runs 3]

The embedded model through the same Batcher `tuneterm serve` uses: one answer with no constraint
and one under a JSON schema (a list of strings, so the answer runs to --tokens), interleaved,
medians; reports ms per token for both, their difference, and the mask step alone (fill the
bitmask + apply it to a logits row) timed on its own. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuneterm.core.generation import apply_inference_thread_env  # noqa: E402  (before torch loads)

apply_inference_thread_env()

SCHEMA = {"type": "object", "properties": {"names": {"type": "array", "items": {"type": "string"}}},
          "required": ["names"], "additionalProperties": False}
MESSAGES = [{"role": "user", "content": "List as many first names as you can."}]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    import torch

    from tuneterm.core.generation import GenerationParams, GenerationStats
    from tuneterm.workers.batcher import Batcher
    from tuneterm.workers.loading import load
    from tuneterm.workers.serve.structured import constraint_factory

    loaded = load("smollm2-135m-instruct")
    batcher = Batcher(loaded.model, loaded.tokenizer)
    make = constraint_factory(json.dumps(SCHEMA), loaded.tokenizer, loaded.model.config.vocab_size)

    def run(constraint) -> float:
        stats = GenerationStats()
        params = GenerationParams(max_new_tokens=args.tokens, temperature=0)
        started = time.perf_counter()
        "".join(batcher.stream(MESSAGES, params, stats, constraint=constraint))
        return (time.perf_counter() - started) * 1000 / max(1, stats.completion_tokens)

    run(None), run(make())  # warm up
    plain, constrained = [], []
    for _ in range(args.runs):
        plain.append(run(None))
        constrained.append(run(make()))
    c = make()
    logits = torch.randn(1, loaded.model.config.vocab_size)
    started = time.perf_counter()
    for _ in range(200):
        c.mask(logits)
    mask_ms = (time.perf_counter() - started) * 1000 / 200
    batcher.close()
    p, q = statistics.median(plain), statistics.median(constrained)
    print(json.dumps({"engine": "xgrammar", "tokens": args.tokens, "plain_ms_per_token": round(p, 2),
                      "constrained_ms_per_token": round(q, 2), "overhead_ms_per_token": round(q - p, 2),
                      "overhead_ratio": round(q / p, 3), "mask_step_ms": round(mask_ms, 3)}))


if __name__ == "__main__":
    main()
