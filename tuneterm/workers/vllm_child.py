"""``tuneterm serve --engine vllm``: vLLM's own OpenAI-compatible server as a child process.

tuneterm resolves the references (the base to a folder or a Hub id, each ``job:ID`` adapter to its
folder), starts ``vllm serve`` with the base and the adapters as LoRA modules, tensor parallel over
the visible GPUs, waits until ``GET /health`` answers, prints the model names clients use, and stops
the child on Ctrl-C or SIGTERM. Every tuneterm client reaches it as ``http://HOST:PORT/v1#NAME``.
A model trained with a system prompt gets it as with tuneterm's own engine: vLLM then listens on a
private port behind ``tuneterm.workers.vllm_front``, which adds the prompt to requests without one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm.core import modelref, trained_prompt
from tuneterm.core.errors import InputError, RuntimeFailure, UsageError


@dataclass
class VLLMPlan:
    base_ref: str
    base: str  # a folder or a Hub id, as vLLM takes it
    adapters: dict[str, Path] = field(default_factory=dict)  # served name -> adapter folder
    max_lora_rank: int = 0
    trained: dict = field(default_factory=dict)  # served name -> the TrainedPrompt its job was trained with


def plan(refs: list[str]) -> VLLMPlan:
    """One base and any number of LoRA adapters over it (vLLM serves one base per process)."""
    from tuneterm.workers.loading import local_path

    base_ref, base, adapters, rank = None, None, {}, 0
    for ref in refs:
        parsed = modelref.parse(ref)
        if parsed.kind in ("fewshot", "openai", "http"):
            raise UsageError(f"{ref} cannot be served by vLLM", [("reference", ref)],
                             "give a base model and job:ID adapters over it")
        if parsed.kind == "hf":
            path, facts = parsed.target, {}
        else:
            path, facts = local_path(parsed)
        if facts.get("artifact") == "classifier":
            raise UsageError(f"{ref} is a classifier (it answers with a label); vLLM serves generative models",
                             [("reference", ref)], "serve it with --engine tuneterm (the default)")
        if facts.get("quant"):
            raise UsageError(f"{ref} is a tuneterm-quantized model; vLLM loads its own formats",
                             [("reference", ref)], "serve the unquantized model, or use --engine tuneterm")
        if facts.get("adapter"):
            cfg = json.loads((Path(path) / "adapter_config.json").read_text())
            rank = max(rank, int(cfg.get("r", 16)))
            adapters[ref] = Path(path)
            facts_base = facts.get("base")
            if base_ref is None and facts_base:
                base_ref = facts_base
                b = modelref.parse(facts_base)
                base = b.target if b.kind == "hf" else str(local_path(b)[0])
            continue
        if base_ref is not None and base is not None and str(path) != str(base):
            raise UsageError("vLLM serves one base model per server", [("bases", f"{base_ref}, {ref}")],
                             "start one `tuneterm serve --engine vllm` per base")
        base_ref, base = ref, str(path)
    if base is None:
        raise UsageError("no base model to serve", [("references", ", ".join(refs))])
    trained = {name: found for name in [base_ref, *adapters] if (found := trained_prompt.for_ref(name))}
    return VLLMPlan(base_ref, base, adapters, rank, trained)


def command(p: VLLMPlan, *, executable: str, host: str, port: int, api_key: str | None,
            tensor_parallel: int, dtype: str) -> list[str]:
    cmd = [*shlex.split(executable), "serve", p.base, "--host", host, "--port", str(port),
           "--served-model-name", p.base_ref, "--tensor-parallel-size", str(tensor_parallel)]
    if dtype and dtype != "auto":
        cmd += ["--dtype", dtype]
    if api_key:
        cmd += ["--api-key", api_key]
    if p.adapters:
        cmd += ["--enable-lora", "--max-lora-rank", str(_vllm_rank(p.max_lora_rank)), "--lora-modules",
                *[f"{name}={path}" for name, path in p.adapters.items()]]
    return cmd


def _vllm_rank(r: int) -> int:
    """vLLM accepts a few maximum LoRA ranks: the smallest that holds ``r``."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if r <= allowed:
            return allowed
    return r


def visible_gpus() -> int:
    shown = os.environ.get("CUDA_VISIBLE_DEVICES")
    if shown is not None:
        return max(1, len([d for d in shown.split(",") if d.strip()]))
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except ImportError:
        return 1


def wait_ready(proc: subprocess.Popen, url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
            raise RuntimeFailure("vLLM exited before it was ready", [("exit code", str(proc.returncode)),
                                                                      ("log", str(log))], tail.strip() or None)
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeFailure("vLLM did not become ready in time", [("waited", f"{timeout:.0f} s"), ("log", str(log))],
                         "large models take minutes to load: raise --ready-timeout")


def serve(args) -> int:
    """The ``serve --engine vllm`` command: start, announce, wait for Ctrl-C/SIGTERM, stop."""
    executable = args.vllm or os.environ.get("TUNETERM_VLLM") or "vllm"
    if not shutil.which(shlex.split(executable)[0]):
        raise InputError("vLLM is not installed here", [("looked for", executable)],
                         "pip install vllm (on a CUDA box), or pass --vllm PATH to its executable")
    p = plan(args.models)
    port = args.port or _free_port(args.host)
    # A model with a trained system prompt: vLLM listens privately, behind a front that adds the prompt
    vllm_host, vllm_port = ("127.0.0.1", _free_port("127.0.0.1")) if p.trained else (args.host, port)
    tp = args.tensor_parallel_size or visible_gpus()
    cmd = command(p, executable=executable, host=vllm_host, port=vllm_port, api_key=args.api_key,
                  tensor_parallel=tp, dtype=args.dtype)
    log = Path(args.vllm_log or f"vllm-{port}.log").resolve()
    print(f"starting vLLM: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    stop = {"now": False}

    def _on_term(signum, frame):
        stop["now"] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _on_term)
    front = None
    try:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        url = f"http://{host}:{port}"
        wait_ready(proc, f"http://127.0.0.1:{vllm_port}" if p.trained else url, args.ready_timeout, log)
        if p.trained:
            from tuneterm.workers.vllm_front import PromptFront

            front = PromptFront(args.host, port, f"http://127.0.0.1:{vllm_port}", p.trained)
            front.start()
        print(f"tuneterm serve (vLLM): {url}/v1", flush=True)
        for name in [p.base_ref, *p.adapters]:
            kind = "base" if name == p.base_ref else f"LoRA adapter over {p.base_ref}"
            print(f"  model: {name}  ({kind})  -> tuneterm chat '{url}/v1#{name}' PROMPT", flush=True)
            if name in p.trained:
                print(f"    {p.trained[name].announce('a request with a system message of its own overrides it')}",
                      flush=True)
        print(f"  tensor parallel over {tp} GPU(s); vLLM's log: {log}", flush=True)
        while proc.poll() is None:
            time.sleep(0.5)
        raise RuntimeFailure("vLLM stopped", [("exit code", str(proc.returncode)), ("log", str(log))])
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if front is not None:
            front.stop()
        _stop(proc)


def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host if host not in ("0.0.0.0", "::") else "127.0.0.1", 0))
        return s.getsockname()[1]
