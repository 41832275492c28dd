"""Decode speed, perplexity and size of tuneterm's CPU quantizations of the embedded model.

    .venv/bin/python benchmarks/quant_decode.py [--tokens 64] [--variants int8_dynamic,...] [--threads N] [--busy N]

``--busy 1`` keeps one other process spinning on a core for the whole run (the loaded condition of
issue 23: run once without and once with it).

In one run, with the same prompts (greedy, up to --tokens new tokens, after a warm-up; the median
over the prompts of (tokens - 1) / (time after the first token)):

- fp32 transformers ``generate`` at torch's default thread count (the anchor), and at every thread
  count worth trying (``fp32_threads``; the fastest is ``fp32_best``);
- each tuneterm torch variant, made with its recipe's settings as ``tuneterm quantize`` makes it,
  saved, reloaded the way ``job:ID`` loads it (the lean decode loop, which measures its own decode
  thread count: ``decode_threads``), and timed through ``model.generate`` as chat, serve and eval
  call it; ``*_hf`` variants time the same model through transformers' own ``generate``;
  ``gguf_q8_0_torch`` is tuneterm's q8_0 export de-quantized into the lean loop (the path without
  llama-cpp-python);
- with llama-cpp-python installed, for the embedded Q4_1 file and tuneterm's own q8_0 and q4_K_M
  exports: ``llamacpp_alone_*``, llama.cpp in a process of its own that imports no torch and
  inherits no tuneterm thread setting (the anchor), and ``gguf_engine_*``, the same file through
  tuneterm's llama.cpp engine (``workers/llamacpp.py``: what chat, serve, eval and the gate run),
  with its perplexity scored by llama.cpp. Without llama-cpp-python these rows are null.

Perplexity is on tuneterm's built-in held-out texts (the gate's default set). Prints ONE JSON line;
progress goes to stderr. The machine's load is recorded (``load_avg_*``): compare ratios within one
run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
# bitsandbytes logs one line per 8-bit matmul on CPU ("inputs will be cast to float16"): keep the log readable.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ALL = ["int8_dynamic", "int8_dynamic_hf", "int8_weight_only", "fp32_lean", "gguf_q8_0_torch", "bnb_int8", "bnb_nf4",
       "gguf_llamacpp"]
GGUF_FILES = ("q4_1", "q8_0", "q4_k_m")  # the embedded file, tuneterm's own exports


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prompt_ids(tokenizer, prompts):
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)["input_ids"] for p in prompts]


def hf_tok_s(model, all_ids, n: int) -> float:
    """transformers generate: decode rate from the time of n tokens minus the time of 1 token."""
    import torch

    def gen(ids, k):
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k,
                           do_sample=False, pad_token_id=0)
        return time.perf_counter() - started

    gen(all_ids[0], 8)  # warm-up
    rates = []
    for ids in all_ids:
        first = gen(ids, 1)
        total = gen(ids, n)
        rates.append((n - 1) / max(total - first, 1e-9))
    return statistics.median(rates)


def lean_tok_s(decoder, all_ids, n: int) -> float:
    decoder.generate(all_ids[0], 8, stop_at_eos=False)  # warm-up
    return statistics.median(decoder.generate(ids, n, stop_at_eos=False).decode_tok_s for ids in all_ids)


def perplexity(logits_fn, tokenizer, texts, max_length: int = 256) -> float:
    import math

    import torch
    import torch.nn.functional as F

    nll, count = 0.0, 0
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
            logits = logits_fn(ids)[0, :-1].float()
            nll += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    return math.exp(nll / count)


def dir_mb(path: Path) -> float:
    from tuneterm.workers.quantize.gate import weight_bytes_on_disk

    return round(weight_bytes_on_disk(path) / 1e6, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--variants", default=",".join(ALL))
    parser.add_argument("--texts", type=int, default=16, help="held-out texts for perplexity")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for every variant (0 = torch's default)")
    parser.add_argument("--busy", type=int, default=0,
                        help="keep N other processes busy (one core each) for the whole run: the loaded condition")
    parser.add_argument("--llamacpp-alone", metavar="FILE", help=argparse.SUPPRESS)  # the anchor's own process
    parser.add_argument("--prompts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.llamacpp_alone:
        print(json.dumps({"tok_s": llama_cpp_tok_s(Path(args.llamacpp_alone), json.loads(args.prompts), args.tokens)}))
        return 0
    user_policy = os.environ.get("OMP_WAIT_POLICY")
    # tuneterm's own default for its inference processes (core/generation.py), set before torch loads
    from tuneterm.core.generation import apply_inference_thread_env

    apply_inference_thread_env()
    wanted = [v for v in args.variants.split(",") if v]
    load_start = os.getloadavg()[0]
    import atexit
    import subprocess

    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"  # ends with this process
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(args.busy)]
    for proc in spinners:
        atexit.register(proc.kill)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from tuneterm.core import modelref
    from tuneterm.workers import threadplan
    from tuneterm.workers.quantize import gguf as gguf_export
    from tuneterm.workers.loading import load
    from tuneterm.workers.quantize.gate import default_prompts, heldout_texts
    from tuneterm.workers.quantize.load import load_quantized
    from tuneterm.core.quantize_config import resolve
    from tuneterm.workers.quantize.pipeline import Parent, quantize_int8
    from tuneterm.workers.quantize.fastdecode import FastDecoder

    n = args.tokens
    log("loading the embedded model (fp32)")
    parent = load(modelref.EMBEDDED_NAME)
    model, tok = parent.model, parent.tokenizer
    parent_obj = Parent(modelref.EMBEDDED_NAME, model, tok, parent.path, parent.load_seconds, 0, False, None)
    prompts = default_prompts()[:3]
    all_ids = prompt_ids(tok, prompts)
    texts, _ = heldout_texts("", tok, args.texts)
    result: dict = {}

    def plain(m):
        return lambda ids: m(ids).logits

    log("fp32 (transformers generate)")
    result["fp32"] = {"tok_s": round(hf_tok_s(model, all_ids, n), 2), "ppl": round(perplexity(plain(model), tok, texts), 4),
                      "size_mb": dir_mb(parent.path), "threads": torch.get_num_threads()}
    log(f"  {result['fp32']}")
    default_threads = torch.get_num_threads()
    per_count = {}
    for count in threadplan.candidate_counts():
        with threadplan.torch_threads(count):
            per_count[count] = round(hf_tok_s(model, all_ids, n), 2)
    result["fp32_threads"] = per_count
    best_count = max(per_count, key=per_count.get)
    result["fp32_best"] = {"tok_s": per_count[best_count], "threads": best_count}
    log(f"  fp32 by thread count: {per_count}")
    assert torch.get_num_threads() == default_threads
    scratch = Path(tempfile.mkdtemp(prefix="tuneterm-bench-"))

    def int8_variant(mode: str, fast: bool):
        if mode not in made:  # exactly what `tuneterm quantize --method MODE` makes (its recipe's settings)
            folder = scratch / mode
            made[mode] = (folder, quantize_int8(parent_obj, mode, resolve(modelref.EMBEDDED_NAME, mode)["quant"], folder))
        folder, facts = made[mode]
        return load_quantized(folder, facts, fast=fast), dir_mb(folder), facts  # reloaded as job:ID loads it

    def threads_of(m) -> dict:
        decoder = getattr(m, "_tuneterm_fast", None)
        choice = getattr(decoder, "thread_choice", None)
        return {"decode_threads": choice.threads, "decode_step_ms": choice.timings_ms} if choice else {}

    made: dict = {}
    for variant in wanted:
        log(variant)
        try:
            if variant in ("int8_dynamic", "int8_weight_only", "int8_dynamic_hf", "int8_weight_only_hf"):
                fast = not variant.endswith("_hf")
                m, size, facts = int8_variant(variant.removesuffix("_hf").replace("_", "-"), fast)
                entry = {"tok_s": hf_tok_s(m, all_ids, n), "ppl": perplexity(plain(m), tok, texts), "size_mb": size,
                         "runtime": "tuneterm lean loop (model.generate)" if getattr(m, "_tuneterm_fast", None)
                         else "transformers generate",
                         "kept_float": facts.get("kept_float", []) + [k["layer"] for k in facts.get("kept_sensitive", [])],
                         **threads_of(m)}
                del m
            elif variant == "fp32_lean":
                decoder = FastDecoder(model, max_len=1024)
                decoder.pick_threads()
                entry = {"tok_s": lean_tok_s(decoder, all_ids, n),
                         "ppl": perplexity(lambda ids: decoder.forward(ids, 0, all_logits=True), tok, texts),
                         "size_mb": result["fp32"]["size_mb"], "runtime": "tuneterm lean loop",
                         "decode_threads": decoder.threads, "decode_step_ms": decoder.thread_choice.timings_ms}
            elif variant in ("bnb_int8", "bnb_nf4"):
                from transformers import AutoModelForCausalLM, BitsAndBytesConfig

                cfg = (BitsAndBytesConfig(load_in_8bit=True) if variant == "bnb_int8" else
                       BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
                m = AutoModelForCausalLM.from_pretrained(parent.path, quantization_config=cfg, device_map="cpu").eval()
                m.save_pretrained(scratch / variant)
                entry = {"tok_s": hf_tok_s(m, all_ids, n), "ppl": perplexity(plain(m), tok, texts),
                         "size_mb": dir_mb(scratch / variant), "runtime": "transformers generate (bitsandbytes CPU)"}
                del m
            elif variant == "gguf_q8_0_torch":
                folder = scratch / "gguf"
                gguf_export.export(model, tok, folder / "model-q8_0.gguf", "q8_0")
                model.config.save_pretrained(folder)
                m = load_quantized(folder, {"method": "gguf", "file": "model-q8_0.gguf"})  # as job:ID loads it without llama.cpp
                entry = {"tok_s": hf_tok_s(m, all_ids, n), "ppl": perplexity(plain(m), tok, texts),
                         "size_mb": dir_mb(folder), "runtime": "tuneterm lean loop on the de-quantized q8_0 export",
                         **threads_of(m)}
                del m
            elif variant == "gguf_llamacpp":
                result.update(gguf_rows(parent_obj, scratch, prompts, texts, n, user_policy))
                continue
            else:
                log(f"  unknown variant {variant}, skipped")
                continue
        except Exception as exc:  # one broken variant must not hide the others
            entry = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        for key in ("tok_s", "ppl"):
            if isinstance(entry.get(key), float):
                entry[key] = round(entry[key], 4 if key == "ppl" else 2)
        result[variant] = entry
        log(f"  {entry}")

    shutil.rmtree(scratch, ignore_errors=True)  # the saved variants (up to ~1 GB)
    base, best_fp32 = result["fp32"], result["fp32_best"]
    anchors = {k for k in result if k.startswith(("fp32", "llamacpp_alone"))}
    scored = {k: v for k, v in result.items() if isinstance(v, dict) and v.get("tok_s") and v.get("ppl")
              and k not in anchors}
    for v in scored.values():
        v["speedup_vs_fp32"] = round(v["tok_s"] / base["tok_s"], 2)
        v["speedup_vs_fp32_best"] = round(v["tok_s"] / best_fp32["tok_s"], 2)
        v["ppl_increase"] = round(v["ppl"] / base["ppl"] - 1, 4)
    torch_rows = {k: v for k, v in scored.items() if not k.startswith("gguf_engine")}
    eligible = {k: v for k, v in torch_rows.items() if v["ppl_increase"] <= 0.02}
    best = max(eligible, key=lambda k: eligible[k]["tok_s"]) if eligible else None
    q41 = (result.get("llamacpp_alone_q4_1") or {}).get("tok_s")
    engine_ratios = {k.removeprefix("gguf_engine_"): v.get("vs_llamacpp_alone") for k, v in result.items()
                     if k.startswith("gguf_engine_") and isinstance(v, dict)}
    quantized = {k: v for k, v in scored.items() if v["ppl_increase"] <= 0.05}
    best_any = max(quantized, key=lambda k: quantized[k]["tok_s"]) if quantized else None
    result["summary"] = {
        "best_torch_variant": best,
        "best_speedup_vs_fp32": eligible[best]["speedup_vs_fp32"] if best else None,
        "goal_3x_at_2pct_ppl": bool(best and eligible[best]["speedup_vs_fp32"] >= 3.0),
        "best_vs_llamacpp_q4_1": round(eligible[best]["tok_s"] / q41, 3) if best and q41 else None,
        "gguf_engine_vs_llamacpp_alone": engine_ratios or None,
        "goal_engine_0_9x_llamacpp": (all(r is not None and r >= 0.9 for r in engine_ratios.values())
                                      if engine_ratios else None),
        "best_quantized_cpu_path": best_any,
        "best_quantized_vs_fp32_best": quantized[best_any]["speedup_vs_fp32_best"] if best_any else None,
        "tokens": n, "prompts": len(prompts), "threads": torch.get_num_threads(),
        "usable_cores": threadplan.usable_cores(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "omp_wait_policy_user": user_policy,
        "busy_processes": args.busy,
        "load_avg_start": round(load_start, 2), "load_avg_end": round(os.getloadavg()[0], 2),
    }
    for proc in spinners:
        proc.kill()
    print(json.dumps(result))
    return 0


def gguf_rows(parent, scratch: Path, prompts: list[str], texts: list[str], n: int, user_policy: str | None) -> dict:
    """llama.cpp alone (a process of its own) and tuneterm's llama.cpp engine on the same GGUF files."""
    from tuneterm.core import modelref
    from tuneterm.workers import llamacpp

    if not has_llama_cpp():
        log("  llama-cpp-python is not installed: the llama.cpp rows are null")
        return {f"{kind}_{f}": None for f in GGUF_FILES for kind in ("llamacpp_alone", "gguf_engine")}
    from tuneterm.workers.quantize import gguf as gguf_export
    from tuneterm.workers.quantize import kquant

    files: dict = {"q4_1": modelref.embedded_gguf_path()}
    folder = scratch / "gguf-files"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        files["q8_0"] = folder / "model-q8_0.gguf"
        gguf_export.export(parent.model, parent.tokenizer, files["q8_0"], "q8_0")
        gguf_export.export(parent.model, parent.tokenizer, folder / "model-f16.gguf", "f16")
        # as a quantize job makes it: q4_k_m gets an importance matrix from the calibration texts by default
        from tuneterm.workers.quantize.pipeline import calibration_texts

        imatrix = folder / "imatrix.dat"
        kquant.imatrix_file(parent.model, parent.tokenizer, calibration_texts(parent.tokenizer), imatrix,
                            "tuneterm calibration texts")
        kquant.quantize_file(folder / "model-f16.gguf", folder / "model-q4_k_m.gguf", "q4_k_m", imatrix=imatrix)
        files["q4_k_m"] = folder / "model-q4_k_m.gguf"
    except Exception as exc:
        log(f"  an export failed: {type(exc).__name__}: {str(exc)[:200]}")
    rows: dict = {}
    for label in GGUF_FILES:
        path = files.get(label)
        if path is None or not Path(path).is_file():
            rows[f"llamacpp_alone_{label}"] = rows[f"gguf_engine_{label}"] = None
            continue
        alone = llama_cpp_alone(path, prompts, n, user_policy)
        rows[f"llamacpp_alone_{label}"] = {"tok_s": alone, "size_mb": round(path.stat().st_size / 1e6, 1),
                                           "runtime": "llama.cpp in a process of its own (no torch)"}
        log(f"  llama.cpp alone, {label}: {alone}")
        try:
            engine = llamacpp.LlamaCppEngine(path)
            try:
                speed = engine_tok_s(engine, prompts, n)
                ppl = engine_perplexity(engine, parent.tokenizer, texts)
                info = engine.info
            finally:
                engine.close()
            rows[f"gguf_engine_{label}"] = {
                "tok_s": round(speed, 2), "ppl": round(ppl, 4), "size_mb": round(path.stat().st_size / 1e6, 1),
                "runtime": f"tuneterm llama.cpp engine ({info.get('n_threads')} threads, "
                           f"{engine.plan.wait_policy if engine.plan else '?'} wait policy)",
                "vs_llamacpp_alone": round(speed / alone, 3) if alone else None}
        except Exception as exc:
            rows[f"gguf_engine_{label}"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        log(f"  tuneterm engine, {label}: {rows[f'gguf_engine_{label}']}")
    return rows


def engine_tok_s(engine, prompts: list[str], n: int) -> float:
    from tuneterm.core.generation import GenerationParams, GenerationStats

    params = GenerationParams(max_new_tokens=n, temperature=0.0)

    def one(prompt: str) -> float:
        stats = GenerationStats()
        for _ in engine.stream([{"role": "user", "content": prompt}], params, stats):
            pass
        return stats.decode_tok_s

    one(prompts[0])  # warm-up
    return statistics.median(one(p) for p in prompts)


def engine_perplexity(engine, tokenizer, texts: list[str], max_length: int = 256) -> float:
    import math

    import numpy as np

    nll, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        rows = engine.logits(ids)[:-1].astype(np.float64)
        rows -= rows.max(-1, keepdims=True)
        logp = rows - np.log(np.exp(rows).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(len(ids) - 1), np.asarray(ids[1:])].sum())
        count += len(ids) - 1
    return math.exp(nll / count)


def llama_cpp_alone(path: Path, prompts: list[str], n: int, user_policy: str | None) -> float | None:
    """llama.cpp's decode speed on ``path`` in a process of its own: no torch imported, and none of
    tuneterm's thread settings (only the user's own OMP_WAIT_POLICY, when they set one)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "TUNETERM_OMP_DEFAULTED")}
    if user_policy:
        env["OMP_WAIT_POLICY"] = user_policy
    proc = subprocess.run([sys.executable, __file__, "--llamacpp-alone", str(path), "--tokens", str(n),
                           "--prompts", json.dumps(prompts)], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        log(f"  llama.cpp alone failed: {proc.stderr.strip()[-300:]}")
        return None
    value = json.loads(proc.stdout.strip().splitlines()[-1])["tok_s"]
    return round(value, 2) if value else None


def has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_tok_s(path: Path, prompts: list[str], n: int) -> float | None:
    """Run in the anchor's own process (``--llamacpp-alone``): llama-cpp-python's chat completion,
    streamed, with llama.cpp's own defaults but the thread count (the machine's cores)."""
    if not has_llama_cpp():
        return None
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=os.cpu_count(), verbose=False)
    rates = []
    for prompt in [prompts[0]] + prompts:  # the first is the warm-up
        started = time.perf_counter()
        first = None
        count = 0
        for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=n,
                                                temperature=0, stream=True):
            if not chunk["choices"][0]["delta"].get("content"):  # the role chunk, the final one
                continue
            count += 1
            if first is None:
                first = time.perf_counter()
        if first and count > 1:
            rates.append((count - 1) / (time.perf_counter() - first))
    return statistics.median(rates[1:]) if len(rates) > 1 else None


if __name__ == "__main__":
    sys.exit(main())
