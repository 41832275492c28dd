"""The GPU check: everything that needs CUDA, in a few minutes, into one JSON file.

    python scripts/gpu_check.py [--out gpu-check.json] [--skip-throughput]
    make gpu-check

Runs the `gpu` tests (training with lora/full/qlora on CUDA, packed = padded loss for a Gemma 2 with
eager attention, peak memory against the estimate, inference straight onto the GPU, DDP over two
GPUs when there are two), `tuneterm serve --device cuda` answering one request, and LoRA tokens/s
against TRL's SFTTrainer in the same run (benchmarks/train_throughput.py). What cannot run here
(no bitsandbytes, no TRL, one GPU) is recorded as skipped with its reason. Without CUDA it says so
and exits 0.

Made for a bare GPU machine with no network: Python, torch, transformers, peft and accelerate are
enough; the rest of tuneterm's dependencies that the tests import travel as wheels (see docs/gpu.md,
"On a GPU box").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _cuda() -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": torch.cuda.device_count(),
            "name": torch.cuda.get_device_name(0),
            "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported()}


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("transformers", "peft", "accelerate", "bitsandbytes", "trl", "textual", "datasets"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            out[name] = None
    return out


def run_gpu_tests(out_dir: Path, timeout: int) -> dict:
    xml = out_dir / "gpu-tests.xml"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           f"--junitxml={xml}", "tests/test_gpu_cuda.py", "tests/test_gpu_paths.py",
                           "tests/test_train_methods.py", "tests/test_quant_cpu.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    cases = []
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome, detail = "passed", None
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    detail = (node.get("message") or "")[:400]
            cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "seconds": float(case.get("time") or 0), **({"detail": detail} if detail else {})})
    return {"exit_code": proc.returncode, "seconds": round(time.perf_counter() - started, 1),
            "passed": sum(c["outcome"] == "passed" for c in cases),
            "failed": sum(c["outcome"] in ("failed", "error") for c in cases),
            "skipped": sum(c["outcome"] == "skipped" for c in cases), "cases": cases,
            "tail": proc.stdout[-2000:] if proc.returncode not in (0, 5) else ""}


def serve_on_cuda(timeout: int) -> dict:
    """`tuneterm serve --device cuda` on the embedded model, one chat completion over HTTP."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tuneterm.cli", "serve", "smollm2-135m-instruct", "--device", "cuda",
                             "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    started = time.perf_counter()
    try:
        body = json.dumps({"model": "smollm2-135m-instruct", "max_tokens": 16, "temperature": 0,
                           "messages": [{"role": "user", "content": "Say hello."}]}).encode()
        while time.perf_counter() - started < timeout:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=60) as resp:
                    answer = json.loads(resp.read())
                return {"ok": True, "seconds": round(time.perf_counter() - started, 1),
                        "text": answer["choices"][0]["message"]["content"][:80]}
            except (ConnectionError, OSError):
                if proc.poll() is not None:
                    break
                time.sleep(1)
        return {"ok": False, "log": (proc.stdout.read() if proc.poll() is not None else "timed out")[-1500:]}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def throughput(timeout: int) -> dict:
    try:
        import trl  # noqa: F401
    except ImportError:
        return {"skipped": "trl is not installed here (bring its wheel to compare against SFTTrainer)"}
    proc = subprocess.run([sys.executable, "benchmarks/train_throughput.py", "--steps", "20"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"failed": proc.stderr[-1500:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-check.json", help="where the JSON goes")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args(argv)
    cuda = _cuda()
    report: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cuda": cuda, "versions": _versions()}
    if cuda is None:
        report["skipped"] = "needs CUDA: no GPU is visible to torch here (nothing was run)"
        print("gpu-check: needs CUDA; no GPU is visible here, nothing to check.")
    else:
        out = Path(args.out).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        report["tests"] = run_gpu_tests(out.parent, timeout=330)
        report["serve_cuda"] = serve_on_cuda(timeout=120)
        report["lora_vs_trl"] = (
            {"skipped": "--skip-throughput"} if args.skip_throughput else throughput(timeout=150))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "tests"} | (
        {"tests": {k: report["tests"][k] for k in ("passed", "failed", "skipped")}} if "tests" in report else {}),
        indent=2))
    return 0 if cuda is None or report["tests"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
