"""Validate + stats of a generated 100,000-example chat file (~50 MB), streaming.

    .venv/bin/python benchmarks/validate_stats.py [--examples N]

Prints one JSON line: {"examples", "seconds", "peak_rss_mb", ...}. ``seconds`` covers one
``stats.analyze_file`` pass (every validation rule, duplicates, stats and token counts,
streaming). The anchor is one plain ``json.loads`` pass over the same file, the floor for any
line-by-line reader.

Token counts use the default tokenizer: the settings' ``default_model``, i.e. the HF tokenizer
of the embedded SmolLM2-135M-Instruct (converted once beforehand if needed, outside the timing;
its first load, which imports transformers, is timed apart as ``tokenizer_first_load_seconds``).
The same pass with tiktoken (``--model gpt-4o-mini``) is timed too. Memory: ``peak_rss_mb`` is
the process peak (transformers and torch included); ``rss_growth_during_pass_mb`` is what the
pass itself added (digests for duplicate detection, 4 bytes per example for token counts).
Goal: under 15 s on the 2-core build machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("the order account refund login error deploy invoice shipping password payment server region "
         "queue ticket customer urgent please help thanks broken timeout latency label warehouse").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def generate(path: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    system = "You route customer support tickets. Answer with one queue name."
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            turns = [{"role": "system", "content": system}]
            for _ in range(rng.choice((1, 1, 2))):
                turns.append({"role": "user", "content": _sentence(rng, rng.randint(15, 34)) + f" #{i}"})
                turns.append({"role": "assistant", "content": _sentence(rng, rng.randint(4, 16))})
            fh.write(json.dumps({"messages": turns}) + "\n")
    return path.stat().st_size


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=100_000)
    args = parser.parse_args()
    from tuneterm.core.datasets import stats

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chat.jsonl"
        size = generate(path, args.examples)
        # One-time setup outside the timing: convert the embedded model if this machine never did.
        from tuneterm.core import modelref
        from tuneterm.core.workspace import workspace

        gguf = modelref.embedded_gguf_path()
        if not modelref.is_converted(modelref.gguf_cache_dir(gguf, workspace().models_dir)):
            from tuneterm.workers.loading import ensure_converted

            ensure_converted(gguf)
        rss_start = rss_mb()

        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            for line in fh:
                json.loads(line)
        anchor = time.perf_counter() - t0

        # The first tokenizer load imports transformers (seconds on a busy box): timed apart.
        from tuneterm.core.datasets.tokens import counter_for

        t0 = time.perf_counter()
        counter_for(None)
        t_import = time.perf_counter() - t0
        rss_ready = rss_mb()

        t0 = time.perf_counter()
        report, result = stats.analyze_file(path)  # one streaming pass: every rule + stats + tokens
        seconds = time.perf_counter() - t0
        rss_peak = rss_mb()
        assert report.n_examples == args.examples == result["n_examples"], (report.counts, result["n_examples"])

        t0 = time.perf_counter()
        _r2, result2 = stats.analyze_file(path, model="gpt-4o-mini")
        seconds_tiktoken = time.perf_counter() - t0
        print(json.dumps({
            "examples": report.n_examples, "seconds": round(seconds, 2), "peak_rss_mb": round(rss_peak, 1),
            "file_mb": round(size / 1e6, 1), "tokenizer": result["tokens"]["tokenizer"],
            "tokens_total": result["tokens"]["total"], "problems": sum(report.counts.values()),
            "tokenizer_first_load_seconds": round(t_import, 2),
            "rss_start_mb": round(rss_start, 1), "rss_after_tokenizer_load_mb": round(rss_ready, 1),
            "rss_growth_during_pass_mb": round(rss_peak - rss_ready, 1),
            "anchor_json_loads_seconds": round(anchor, 2),
            "ratio_vs_json_loads": round(seconds / anchor, 1) if anchor else None,
            "seconds_tiktoken_gpt_4o_mini": round(seconds_tiktoken, 2),
            "tokenizer_tiktoken": result2["tokens"]["tokenizer"],
            "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1),
        }))


if __name__ == "__main__":
    main()
