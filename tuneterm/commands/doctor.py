"""``tuneterm doctor``: what a person on a new box wants to know, on one screen."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import shutil

ORDER = 90

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "evaluate",
            "textual", "openai", "tiktoken", "trl", "gguf")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the environment: Python, torch, CUDA, GPUs, model, workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def collect() -> dict:
    from tuneterm.core import modelref
    from tuneterm.core.errors import TunetermError
    from tuneterm.core.workspace import workspace

    report: dict = {"python": platform.python_version(), "platform": platform.platform(), "problems": []}
    report["packages"] = {p: _version(p) for p in PACKAGES}
    missing = [p for p, v in report["packages"].items() if v is None]
    if missing:
        report["problems"].append(f"missing packages: {', '.join(missing)} (run `make install`)")

    gpu: dict = {"cuda_available": False, "devices": []}
    if importlib.util.find_spec("torch"):
        import torch  # doctor is a heavy command on purpose: it inspects the GPU stack

        gpu["torch_cuda"] = torch.version.cuda
        gpu["cuda_available"] = torch.cuda.is_available()
        if gpu["cuda_available"]:
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                gpu["devices"].append({
                    "index": i, "name": torch.cuda.get_device_name(i),
                    "free_gib": round(free / 2**30, 1), "total_gib": round(total / 2**30, 1),
                })
        gpu["threads"] = torch.get_num_threads()
    report["gpu"] = gpu
    report["bitsandbytes"] = _bnb_status(gpu["cuda_available"])
    from tuneterm.workers import llamacpp

    report["llamacpp"] = llamacpp.status()
    from tuneterm.core.quantize_config import llama_quantize_path

    report["llama_quantize"] = llama_quantize_path()

    model: dict = {"reference": modelref.EMBEDDED_NAME}
    ws = workspace(create=False)
    try:
        gguf = modelref.embedded_gguf_path()
        model["installed"] = True
        model["gguf"] = str(gguf)
        cache = modelref.gguf_cache_dir(gguf, ws.models_dir) if ws.models_dir.is_dir() else None
        model["converted"] = bool(cache and modelref.is_converted(cache))
        model["cache"] = str(cache) if cache else None
    except TunetermError as err:
        model["installed"] = False
        model["converted"] = False
        report["problems"].append(f"{err.title} ({err.hint})")
    report["embedded_model"] = model

    report["workspace"] = {
        "path": str(ws.root), "exists": ws.root.is_dir(),
        "size_mb": round(ws.size_bytes() / 1e6, 1) if ws.root.is_dir() else 0.0,
        "free_gb": round(shutil.disk_usage(ws.root if ws.root.is_dir() else ws.root.parent if ws.root.parent.is_dir() else "/").free / 1e9, 1),
    }
    report["openai"] = {
        "api_key_set": bool(os.environ.get("OPENAI_API_KEY")),
        "base_url": os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1 (default)",
    }
    report["usable"] = not missing and model["installed"]
    return report


def _bnb_status(cuda: bool) -> dict:
    if not importlib.util.find_spec("bitsandbytes"):
        return {"installed": False, "usable": False, "note": "pip install bitsandbytes"}
    import contextlib
    import io

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import bitsandbytes as bnb  # noqa: F401
            import torch

            layer = bnb.nn.Linear8bitLt(8, 8, has_fp16_weights=False)
            layer = layer.to("cuda" if cuda else "cpu")
            layer(torch.zeros(1, 8, device="cuda" if cuda else "cpu", dtype=torch.float16 if cuda else torch.float32))
        return {"installed": True, "usable": True, "backend": "cuda" if cuda else "cpu"}
    except Exception as exc:  # any failure here means "cannot run", which is what we report
        return {"installed": True, "usable": False, "note": f"{type(exc).__name__}: {str(exc)[:120]}"}


def run(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["usable"] else 1
    ok, bad = "ok ", "!! "
    lines = [f"tuneterm doctor — Python {report['python']} on {report['platform']}", ""]
    pk = report["packages"]
    lines.append("packages:  " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in pk.items()))
    g = report["gpu"]
    if g["cuda_available"]:
        lines.append(f"{ok}CUDA {g.get('torch_cuda')}: " + "; ".join(
            f"[{d['index']}] {d['name']} {d['free_gib']}/{d['total_gib']} GiB free" for d in g["devices"]))
    else:
        lines.append(f"   no CUDA GPU: training and inference run on the CPU ({g.get('threads', '?')} threads)")
    b = report["bitsandbytes"]
    lines.append(f"{ok if b['usable'] else bad}bitsandbytes: " + (
        f"runs on {b['backend']}" if b["usable"] else b.get("note", "not usable")))
    lc = report["llamacpp"]
    lines.append(f"{ok if lc['usable'] else '   '}llama.cpp (GGUF engine): " + (
        f"llama-cpp-python {lc['version']}; {lc['system_info']}" if lc["usable"] else lc["note"]))
    lq = report["llama_quantize"]
    lines.append(f"{ok if lq else '   '}llama-quantize (llama.cpp's quantizer program): " + (
        lq if lq else "not found (optional with llama-cpp-python; scripts/build_llama_quantize.sh builds it into .venv/bin)"))
    m = report["embedded_model"]
    if m["installed"]:
        state = "converted and cached" if m["converted"] else "installed; converted on first use (~20 s)"
        lines.append(f"{ok}embedded model {m['reference']}: {state}")
    else:
        lines.append(f"{bad}embedded model {m['reference']}: not installed")
    w = report["workspace"]
    lines.append(f"{ok}workspace: {w['path']} ({w['size_mb']} MB used, {w['free_gb']} GB free on disk)"
                 + ("" if w["exists"] else " — created on first use"))
    o = report["openai"]
    lines.append(f"   OPENAI_API_KEY: {'set' if o['api_key_set'] else 'not set'}; base URL {o['base_url']}")
    for problem in report["problems"]:
        lines.append(f"{bad}{problem}")
    lines.append("")
    lines.append("usable" if report["usable"] else "NOT usable: fix the lines marked !!")
    print("\n".join(lines))
    return 0 if report["usable"] else 1
