"""`tuneterm serve` under many clients at once: outcomes, throughput, latency, server memory.

    .venv/bin/python benchmarks/serve_load.py --json [--clients 1,8,32,128,256] [--burst 1000]
                                              [--model smollm2-135m-instruct] [--adapter random|REF|none]

Starts `tuneterm serve MODEL ADAPTER` as a child (the adapter: a random-weight LoRA over the model
by default, so half the requests go through it), then, at each client count, that many clients at
once over plain HTTP (one connection each): half to the base, half to the adapter, every third
streaming, every seventh stream closed by its client after 3 chunks, max_tokens 24, temperature 0.
Reports outcomes by kind (ok, 429, dropped by the client, reset, server error, other), aggregate
output tok/s, p50/p99 time to first token (streams) and total latency (ok requests), and the
server's peak RSS during the level against its idle RSS; then the 32-client level's requests one
at a time, and a burst of --burst bare connections (every one must be answered, ok or 429).
Goals (issue 22): at 256 clients 0 resets and 0 server errors; tok/s at 32 clients >= 8x one
client's; RSS at 256 clients within 300 MB of idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_TOKENS = 24
PROMPTS = ["Write a haiku about the sea.", "What is the capital of France?", "Explain photosynthesis briefly.",
           "Give me three names for a cat.", "How do I boil an egg?", "Describe a sunset in one sentence."]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid))


def plan(n: int, models: list[str]) -> list[dict]:
    out, streams = [], 0
    for i in range(n):
        stream = i % 3 == 0
        drop = False
        if stream:
            drop = streams % 7 == 6
            streams += 1
        out.append({"model": models[i % len(models)], "stream": stream, "drop": drop,
                    "prompt": PROMPTS[i % len(PROMPTS)]})
    return out


async def one(host: str, port: int, job: dict) -> dict:
    body = {"model": job["model"], "max_tokens": MAX_TOKENS, "temperature": 0, "stream": job["stream"],
            "messages": [{"role": "user", "content": job["prompt"]}]}
    if job["stream"]:
        body["stream_options"] = {"include_usage": True}
    data = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    started = time.perf_counter()
    ttft = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(head + data)
        await writer.drain()
        raw = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            raw += chunk
            if job["stream"] and ttft is None and b'"content":"' in raw.split(b"\r\n\r\n", 1)[-1].replace(
                    b'"content":""', b""):
                ttft = time.perf_counter() - started
            if job["drop"] and raw.count(b"data: ") >= 4:  # the role chunk and 3 content chunks
                writer.close()
                return {"kind": "dropped"}
        writer.close()
    except (ConnectionResetError, BrokenPipeError, ConnectionRefusedError):
        return {"kind": "reset"}
    latency = time.perf_counter() - started
    head_raw, _, payload = raw.partition(b"\r\n\r\n")
    if not head_raw:
        return {"kind": "reset"}
    status = int(head_raw.split()[1])
    if status == 429:
        return {"kind": "429"}
    if status >= 500:
        return {"kind": "server_error", "status": status}
    if status != 200:
        return {"kind": "other", "status": status}
    if job["stream"]:
        events = re.findall(rb"data: (\{.*\})", payload)
        usage = [json.loads(e).get("usage") for e in events]
        usage = [u for u in usage if u]
        if not usage or any(b'"error"' in e[:12] for e in events):
            return {"kind": "server_error", "status": 200}
        tokens = usage[-1]["completion_tokens"]
    else:
        tokens = json.loads(payload)["usage"]["completion_tokens"]
    return {"kind": "ok", "tokens": tokens, "latency": latency, "ttft": ttft}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(1000 * values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 1)


def summarize(results: list[dict], wall: float) -> dict:
    kinds: dict[str, int] = {}
    for r in results:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    ok = [r for r in results if r["kind"] == "ok"]
    tokens = sum(r["tokens"] for r in ok)
    ttfts = [r["ttft"] for r in ok if r.get("ttft") is not None]
    lat = [r["latency"] for r in ok]
    return {"outcomes": kinds, "tokens": tokens, "wall_s": round(wall, 2), "tok_s": round(tokens / wall, 2),
            "ttft_p50_ms": pct(ttfts, 0.5), "ttft_p99_ms": pct(ttfts, 0.99),
            "latency_p50_ms": pct(lat, 0.5), "latency_p99_ms": pct(lat, 0.99)}


async def level(host: str, port: int, jobs: list[dict]) -> tuple[list[dict], float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(one(host, port, j) for j in jobs))
    return list(results), time.perf_counter() - started


async def sequential(host: str, port: int, jobs: list[dict]) -> tuple[list[dict], float]:
    started = time.perf_counter()
    results = [await one(host, port, j) for j in jobs]
    return results, time.perf_counter() - started


async def burst(host: str, port: int, n: int, model: str) -> dict:
    """n bare connections at once, each one small request: every one answered, none reset."""
    jobs = [{"model": model, "stream": False, "drop": False, "prompt": "Hi"} for _ in range(n)]
    results, wall = await level(host, port, jobs)
    return summarize(results, wall)


def make_adapter(base_ref: str, folder: Path) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneterm.workers.loading import local_path

    base_dir, _ = local_path(base_ref)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.save_pretrained(folder)
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--clients", default="1,8,32,128,256")
    ap.add_argument("--burst", type=int, default=1000, help="bare connections at once at the end (0: skip)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--adapter", default="random", help="random (a random LoRA), a model reference, or none")
    ap.add_argument("--serve-args", default="", help="more arguments for tuneterm serve")
    ap.add_argument("--repo", default=str(REPO), help="the checkout whose tuneterm serve runs (A/B against another)")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",") if c]
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="tuneterm-serve-load-") as tmp:
        refs = [args.model]
        if args.adapter == "random":
            refs.append(make_adapter(args.model, Path(tmp) / "adapter"))
        elif args.adapter != "none":
            refs.append(args.adapter)
        env = {**os.environ, "PYTHONPATH": args.repo, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "tuneterm", "serve", *refs, "--port", "0",
                                 *args.serve_args.split()], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=env, cwd=tmp)
        try:
            url = re.search(r"(http://\S+)/v1", proc.stdout.readline()).group(1)
            host, port = re.search(r"http://([^:/]+):(\d+)", url).groups()
            port = int(port)
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/health", timeout=5).status == 200:
                        break
                except Exception:  # noqa: BLE001 - 503 while loading
                    time.sleep(0.2)
            asyncio.run(level(host, port, plan(2, refs)))  # warm up both models
            idle = rss_mb(proc.pid)
            report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
                            "models": refs, "max_tokens": MAX_TOKENS, "idle_rss_mb": round(idle, 1), "levels": {}}
            for n in counts:
                sampler = Sampler(proc.pid)
                sampler.start()
                results, wall = asyncio.run(level(host, port, plan(n, refs)))
                sampler.stop.set()
                sampler.join()
                row = summarize(results, wall)
                row["peak_rss_mb"] = round(sampler.peak, 1)
                row["rss_over_idle_mb"] = round(sampler.peak - idle, 1)
                report["levels"][str(n)] = row
                if not args.json:
                    print(n, row, flush=True)
            anchor_n = 32 if 32 in counts else max(counts)
            results, wall = asyncio.run(sequential(host, port, plan(anchor_n, refs)))
            report["one_at_a_time"] = {"requests": anchor_n, **summarize(results, wall)}
            if args.burst:
                report["burst"] = {"connections": args.burst, **asyncio.run(burst(host, port, args.burst, refs[0]))}
            one = report["levels"].get("1", {}).get("tok_s")
            at32 = report["levels"].get("32", {}).get("tok_s")
            report["tok_s_32_over_1"] = round(at32 / one, 2) if one and at32 else None
            proc.terminate()
            report["exit_code_on_sigterm"] = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
