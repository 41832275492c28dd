"""Streaming through `tuneterm serve` + the openai client vs transformers' generate, directly.

    .venv/bin/python benchmarks/chat_stream.py [--tokens 64] [--runs 3] [--busy N]

``--busy 1`` keeps one other process spinning on a core for the whole run (the loaded condition).

The embedded model (SmolLM2-135M-Instruct, fp32), greedy, the same prompt and settings on both
paths; the server runs as a `tuneterm serve` child (as the TUI runs it) and the direct path in
this process, one after the other, runs interleaved, medians reported. Both processes run with
the OpenMP settings tuneterm gives its inference processes (tuneterm.core.generation:
OMP_WAIT_POLICY=PASSIVE, unless set in the environment), so the anchor and the server compare
like with like. Then two columns of one base (the base and a LoRA adapter over it, served by
one process, decoded in one batch) stream at once vs one after another. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuneterm.core.generation import apply_inference_thread_env  # noqa: E402  (before torch loads)

apply_inference_thread_env()

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper who finds a message in a bottle."}]


def direct_run(model, tokenizer, max_new_tokens: int) -> dict:
    """transformers generate with a streamer that stamps the first and last token."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Stamp(BaseStreamer):
        def __init__(self) -> None:
            self.first = None
            self.last = None
            self.n = 0
            self.prompt_seen = False

        def put(self, value) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            now = time.perf_counter()
            self.first = self.first or now
            self.last = now
            self.n += value.numel()

        def end(self) -> None:
            pass

    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    stamp = Stamp()
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                       do_sample=False, temperature=None, top_p=None, top_k=None, streamer=stamp,
                       pad_token_id=tokenizer.eos_token_id)
    return {"ttft_ms": (stamp.first - started) * 1000, "tok_s": (stamp.n - 1) / (stamp.last - stamp.first),
            "tokens": stamp.n}


def serve_run(ref: str, max_new_tokens: int) -> dict:
    from tuneterm.core.chat_client import ChatStats, stream_chat

    stats = ChatStats()
    for _ in stream_chat(ref, PROMPT, {"temperature": 0, "max_tokens": max_new_tokens}, stats):
        pass
    return {"ttft_ms": stats.ttft_s * 1000, "tok_s": stats.tokens_per_s, "tokens": stats.completion_tokens}


def pair(refs: list[str], max_new_tokens: int, parallel: bool) -> dict:
    from tuneterm.core.chat_client import ChatStats, stream_chat

    counts: dict[str, int] = {}

    def one(ref: str) -> None:
        stats = ChatStats()
        for _ in stream_chat(ref, PROMPT, {"temperature": 0, "max_tokens": max_new_tokens}, stats):
            pass
        counts[ref] = stats.completion_tokens

    started = time.perf_counter()
    if parallel:
        threads = [threading.Thread(target=one, args=(r,)) for r in refs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for r in refs:
            one(r)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "tokens": sum(counts.values()), "tok_s": sum(counts.values()) / wall}


def main() -> None:
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0,
                    help="keep N other processes busy (one core each) for the whole run: the loaded condition")
    args = ap.parse_args()
    import subprocess

    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"  # ends with this process
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(args.busy)]

    import torch
    from peft import LoraConfig, get_peft_model

    from tuneterm.core.chat_client import LocalServers
    from tuneterm.workers.loading import load, local_path

    base_dir, _ = local_path("smollm2-135m-instruct")
    loaded = load("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory(prefix="tuneterm-bench-") as tmp:
        # a LoRA adapter over the embedded model (r=16 on the attention projections)
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                                    LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        adapter = Path(tmp) / "adapter"
        peft_model.save_pretrained(adapter)
        del peft_model
        with LocalServers(log_dir=Path(tmp)) as servers:
            t0 = time.perf_counter()
            routes = servers.ensure(["smollm2-135m-instruct", str(adapter)])
            server_start_s = time.perf_counter() - t0
            base_ref, adapter_ref = routes["smollm2-135m-instruct"], routes[str(adapter)]
            direct_run(loaded.model, loaded.tokenizer, 8)  # warm-up both paths
            serve_run(base_ref, 8)
            direct, served = [], []
            for _ in range(args.runs):
                direct.append(direct_run(loaded.model, loaded.tokenizer, args.tokens))
                served.append(serve_run(base_ref, args.tokens))
            serial = pair([base_ref, adapter_ref], args.tokens, parallel=False)
            together = pair([base_ref, adapter_ref], args.tokens, parallel=True)

    def med(rows, key):
        return round(statistics.median(r[key] for r in rows), 2)

    for proc in spinners:
        proc.kill()
    serve_tok_s, direct_tok_s = med(served, "tok_s"), med(direct, "tok_s")
    print(json.dumps({
        "benchmark": "chat_stream", "model": "smollm2-135m-instruct", "dtype": "float32", "greedy": True,
        "max_new_tokens": args.tokens, "runs": args.runs, "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_avg_1m": round(os.getloadavg()[0], 2),
        "busy_processes": args.busy,
        "serve_tok_s": serve_tok_s, "direct_tok_s": direct_tok_s,
        "ratio": round(serve_tok_s / direct_tok_s, 3) if direct_tok_s else None,
        "serve_ttft_ms": med(served, "ttft_ms"), "direct_ttft_ms": med(direct, "ttft_ms"),
        "serve_tokens": [r["tokens"] for r in served], "direct_tokens": [r["tokens"] for r in direct],
        "server_start_s": round(server_start_s, 2),
        "two_columns_one_after_another_tok_s": round(serial["tok_s"], 2),
        "two_columns_at_once_tok_s": round(together["tok_s"], 2),
        "two_columns_ratio": round(together["tok_s"] / serial["tok_s"], 3),
        "two_columns_note": "base + LoRA adapter in one serve process, decoded in one batch (per-row adapters)",
    }))


if __name__ == "__main__":
    main()
