"""LoRA training throughput: tuneterm's trainer vs TRL's SFTTrainer, same work, one JSON line.

    .venv/bin/python benchmarks/train_throughput.py [--steps 10]

    .venv/bin/python benchmarks/train_throughput.py --same-settings   # TRL's precision and checkpointing for both

Both fine-tune the embedded SmolLM2-135M-Instruct with LoRA r=16 (alpha 32, dropout 0.05) on all
linear layers, batch 8, max length 256, lr 3e-4 (linear decay, AdamW, seed 42), loss on the assistant
tokens only, over the same ``steps x 8`` sample tickets (one epoch, so the same examples and tokens).
Each side runs with its own documented defaults for this setup: TRL's ``SFTConfig`` turns on
gradient checkpointing and bf16 autocast and pads each batch (no packing, no padding-free);
tuneterm's lora recipe trains in fp32 on CPU without checkpointing, on padding-free packed batches
whose shared prefix (the system prompt) is computed once. ``--same-settings`` gives tuneterm TRL's
precision and checkpointing. Each runs in its own subprocess so peak RSS is its own. Reported:
non-padding tokens (the examples' tokens) per second of training time, peak RSS, the mean training
loss of the last 3 steps, and the loss of the trained adapter on the validation split measured by
the same code for both; also tokens per CPU-second of ``Trainer.train`` (all threads), steadier than
wall time on a shared machine, and the load average when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


def _val_loss(model, tokenizer, rows) -> float:
    """Mean assistant-token loss on ``rows`` (identical code for both sides)."""
    import torch

    from tuneterm.workers.train.data import IGNORE, tokenize_example

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            item = tokenize_example(tokenizer, row, 256)
            ids = torch.tensor([item["input_ids"]])
            labels = torch.tensor([item["labels"]])
            out = model(input_ids=ids)
            logits = out.logits[:, :-1]
            target = labels[:, 1:]
            keep = target != IGNORE
            total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


def _time_train() -> dict:
    """Wrap ``Trainer.train`` (both sides use it) to record its wall and CPU seconds (all threads): on a
    shared, loaded machine CPU seconds per token are the steadier figure of the work each side does."""
    from transformers import Trainer

    seconds: dict = {}
    original = Trainer.train

    def train(self, *args, **kwargs):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            seconds.update(cpu=time.process_time() - cpu, wall=time.perf_counter() - wall)

    Trainer.train = train
    return seconds


def _last_losses(history) -> float:
    losses = [e["loss"] for e in history if "loss" in e]
    return sum(losses[-3:]) / len(losses[-3:])


def run_tuneterm(model_dir: str, train: str, val_rows: list, same: bool) -> dict:
    from tuneterm.core import jobs, recipes
    from tuneterm.workers.kinds import train as train_kind
    from tuneterm.workers.jobctx import JobContext

    config = recipes.resolve("lora", overrides=[
        "train.epochs=1", "train.batch_size=8", "train.max_length=256", "train.lr=3e-4", "log.every_steps=1",
        "checkpoint.every_steps=100000", f"lora.r={LORA['r']}", f"lora.alpha={LORA['alpha']}",
        f"lora.dropout={LORA['dropout']}",
        *(["train.precision=bf16", "train.gradient_checkpointing=true"] if same else [])])
    config.update(model=model_dir, data=train)
    job = jobs.create_job("train", config)
    ctx = JobContext(job.dir)
    trainer = train_kind.run(ctx)
    metrics = json.loads((job.dir / "output" / "metrics.json").read_text())
    return {"tok_s": trainer.tokens_seen / metrics["train_runtime"], "tokens": trainer.tokens_seen,
            "train_seconds": metrics["train_runtime"], "steps": trainer.state.global_step,
            "loss": _last_losses(trainer.state.log_history),
            "val_loss": _val_loss(trainer.model, trainer.processing_class, val_rows),
            "settings": {"bf16": trainer.args.bf16, "gradient_checkpointing": trainer.args.gradient_checkpointing,
                         "packing": config["train"].get("packing", True),
                         "share_prefix": config["train"].get("share_prefix", True)}}


def run_trl(model_dir: str, train: str, val_rows: list, same: bool) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in Path(train).read_text().splitlines() if line.strip()]
    # prompt/completion form: TRL masks the prompt, i.e. trains on the assistant reply only
    ds = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    out = tempfile.mkdtemp(prefix="trl-bench-")
    args = SFTConfig(output_dir=out, per_device_train_batch_size=8, max_length=256, num_train_epochs=1,
                     learning_rate=3e-4, lr_scheduler_type="linear", logging_steps=1, save_strategy="no",
                     report_to="none", packing=False, completion_only_loss=True, use_cpu=True,
                     disable_tqdm=True, seed=42)  # gradient checkpointing, bf16: SFTConfig's defaults
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                             target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                         peft_config=peft_config)
    tokens = sum(min(len(x), 256) for x in trainer.train_dataset["input_ids"])
    result = trainer.train()
    seconds = result.metrics["train_runtime"]
    return {"tok_s": tokens / seconds, "tokens": tokens, "train_seconds": seconds,
            "steps": trainer.state.global_step, "loss": _last_losses(trainer.state.log_history),
            "val_loss": _val_loss(trainer.model, tokenizer, val_rows),
            "settings": {"bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing,
                         "packing": args.packing, "padding_free": args.padding_free}}


def child(which: str, model_dir: str, train: str, val: str, same: str) -> None:
    val_rows = [json.loads(line) for line in Path(val).read_text().splitlines() if line.strip()][:40]
    seconds = _time_train()
    result = (run_tuneterm if which == "tuneterm" else run_trl)(model_dir, train, val_rows, same == "same")
    result["cpu_tok_s"] = result["tokens"] / seconds["cpu"]
    result["cpu_seconds"] = seconds["cpu"]
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(result))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--same-settings", action="store_true",
                    help="tuneterm with TRL's defaults too: bf16 autocast and gradient checkpointing")
    ap.add_argument("--child", nargs=5, metavar=("WHICH", "MODEL", "TRAIN", "VAL", "SAME"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0

    from tuneterm.core import modelref
    from tuneterm.workers.loading import ensure_converted

    model_dir = str(ensure_converted(modelref.embedded_gguf_path()))
    tickets = REPO / "sample_data" / "tickets"
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    rows = (tickets / "train.jsonl").read_text().splitlines()[: args.steps * 8]
    train = work / "train.jsonl"
    train.write_text("\n".join(rows) + "\n")
    env = dict(os.environ, TUNETERM_HOME=str(work / "ws"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),  # same for both sides
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    results = {}
    for which in ("trl", "tuneterm"):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", which, model_dir, str(train),
                               str(tickets / "val.jsonl"), "same" if args.same_settings else "own"], capture_output=True, text=True, env=env)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            print(json.dumps({"error": f"{which} run failed", "stderr": proc.stderr[-2000:]}))
            return 1
        results[which] = json.loads(line[0][7:])
        results[which]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    t, r = results["tuneterm"], results["trl"]
    print(json.dumps({
        "benchmark": "train_throughput", "model": "SmolLM2-135M-Instruct", "lora_r": LORA["r"],
        "batch": 8, "max_length": 256, "examples": len(rows),
        "tuneterm_settings": t["settings"], "trl_settings": r["settings"],
        "tuneterm_tok_s": round(t["tok_s"], 1), "trl_tok_s": round(r["tok_s"], 1),
        "ratio": round(t["tok_s"] / r["tok_s"], 2),
        "tuneterm_cpu_tok_s": round(t["cpu_tok_s"], 1), "trl_cpu_tok_s": round(r["cpu_tok_s"], 1),
        "cpu_ratio": round(t["cpu_tok_s"] / r["cpu_tok_s"], 2),
        "load_avg_1m": round(os.getloadavg()[0], 1), "cores": os.cpu_count(),
        "tuneterm_peak_rss_mb": t["peak_rss_mb"], "trl_peak_rss_mb": r["peak_rss_mb"],
        "tuneterm_loss": round(t["loss"], 4), "trl_loss": round(r["loss"], 4),
        "tuneterm_val_loss": round(t["val_loss"], 4), "trl_val_loss": round(r["val_loss"], 4),
        "tuneterm_tokens": t["tokens"], "trl_tokens": r["tokens"],
        "tuneterm_train_seconds": round(t["train_seconds"], 1), "trl_train_seconds": round(r["train_seconds"], 1),
        "tuneterm_cpu_seconds": round(t["cpu_seconds"], 1), "trl_cpu_seconds": round(r["cpu_seconds"], 1),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
