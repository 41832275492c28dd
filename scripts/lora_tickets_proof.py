"""Proof that local LoRA works: route support tickets with the embedded SmolLM2-135M.

    .venv/bin/python scripts/lora_tickets_proof.py [--data sample_data/tickets] [key=value ...]

Scores the base model's greedy first word on the test split (exact match with the queue name),
fine-tunes it with the built-in LoRA recipe through a real tuneterm job (detached child,
events, checkpoints), scores the tuned model (job:ID) the same way, and prints one JSON line.
Goal (issue 5): +30 points within 10 minutes of training on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def first_word(text: str) -> str:
    words = text.strip().split()
    return re.sub(r"^[^\w]+|[^\w-]+$", "", words[0]).lower() if words else ""


def score(ref: str, rows: list[dict], batch: int = 16) -> tuple[float, list[str]]:
    import torch

    from tuneterm.workers.loading import load

    loaded = load(ref)
    tok, model = loaded.tokenizer, loaded.model
    tok.padding_side = "left"
    answers = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        prompts = [tok.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True)
                   for r in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    hits = sum(first_word(a) == r["messages"][-1]["content"].strip().lower() for a, r in zip(answers, rows))
    return 100.0 * hits / len(rows), answers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO / "sample_data" / "tickets"))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from tuneterm.core import jobs, recipes

    data = Path(args.data)
    test_rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines() if line.strip()]
    started = time.perf_counter()
    before, _ = score(args.model, test_rows)
    base_seconds = time.perf_counter() - started

    config = recipes.resolve("lora", overrides=args.overrides)
    config.update(model=args.model, data=str((data / "train.jsonl").resolve()),
                  eval_data=str((data / "val.jsonl").resolve()))
    job = jobs.create_job("train", config, name="lora tickets proof")
    t0 = time.perf_counter()
    jobs.launch(job.id)
    info = jobs.wait_for(job.id, timeout=3600)
    job_seconds = time.perf_counter() - t0
    if info.state != "succeeded":
        print(json.dumps({"error": f"job {job.id} {info.state}: {info.error}", "log": jobs.tail_log(job.id, 20)}))
        return 1
    metrics = json.loads((info.dir / "output" / "metrics.json").read_text())
    after, answers = score(f"job:{job.id}", test_rows)
    print(json.dumps({
        "job": job.id, "test_examples": len(test_rows),
        "base_exact_match": round(before, 1), "tuned_exact_match": round(after, 1),
        "gain_points": round(after - before, 1),
        "train_seconds": metrics.get("train_seconds"), "job_wall_seconds": round(job_seconds, 1),
        "steps": metrics.get("global_step") or metrics.get("train_steps"),
        "final_loss": metrics.get("final_loss"), "eval_loss": metrics.get("eval_loss"),
        "tokens_per_s": round(metrics["tokens"] / metrics["train_seconds"], 1) if metrics.get("train_seconds") else None,
        "base_eval_seconds": round(base_seconds, 1), "sample_answers": answers[:3],
        "recipe": {"r": config["lora"]["r"], "lr": config["train"]["lr"], "batch": config["train"]["batch_size"],
                   "epochs": config["train"]["epochs"], "targets": config["lora"]["target_modules"]},
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
