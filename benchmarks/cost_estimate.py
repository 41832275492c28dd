"""Estimate the OpenAI fine-tuning cost of a generated 100,000-example file.

    .venv/bin/python benchmarks/cost_estimate.py [--examples N] [--model M]

Goal: under 10 s on the 2-core build machine, with memory that does not grow with the file
(the estimator streams). Prints one JSON line: {"examples", "seconds", "peak_rss_mb", ...}.
``rss_before_mb`` is the peak RSS after the encoder is loaded and before the file is read, so
``peak_rss_mb - rss_before_mb`` is what the pass over the file itself costs.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUEUES = ["payments-ops", "platform-eng", "identity-team", "logistics"]
WORDS = ("card charged twice refund invoice order parcel delayed courier login password reset token "
         "deploy pipeline failed build server timeout account locked address warehouse shipment").split()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def generate(path: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    system = "Route the support ticket to one of: " + ", ".join(QUEUES) + ". Answer with the queue name only."
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60)))
            example = {"messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"Ticket #{i}: {text}"},
                {"role": "assistant", "content": rng.choice(QUEUES)},
            ]}
            fh.write(json.dumps(example) + "\n")
    return path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--model", default="gpt-4o-mini-2024-07-18")
    args = parser.parse_args()

    from tuneterm.core import cost
    from tuneterm.core.openai_tokens import encoding_for_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generated.jsonl"
        size = generate(path, args.examples)
        encoding_for_model(args.model)  # the encoder load is not the thing measured
        before = _rss_mb()
        start = time.perf_counter()
        result = cost.estimate(path, args.model, "auto")
        seconds = time.perf_counter() - start
        assert result["n_examples"] == args.examples, result["n_examples"]
    print(json.dumps({
        "examples": result["n_examples"], "seconds": round(seconds, 2), "peak_rss_mb": round(_rss_mb(), 1),
        "rss_before_mb": round(before, 1), "file_mb": round(size / 1e6, 1), "total_tokens": result["total_tokens"],
        "examples_per_s": round(result["n_examples"] / seconds), "goal_seconds": 10,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
