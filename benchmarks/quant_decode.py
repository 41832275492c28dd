"""Decode speed, perplexity and size of tuneterm's CPU quantizations of the embedded model.

    .venv/bin/python benchmarks/quant_decode.py [--tokens 64] [--variants int8_dynamic_lean,...]

In one run, with the same prompts (greedy, exactly --tokens new tokens, after a warm-up; the
median over the prompts of (tokens - 1) / (time after the first token)):
fp32 transformers ``generate`` (the anchor), each tuneterm CPU variant (made with its recipe's
settings as ``tuneterm quantize`` makes it, saved, reloaded the way ``job:ID`` loads it, then
timed through ``model.generate``: what chat, serve and eval call, i.e. tuneterm's lean loop for
int8 and GGUF artifacts; ``*_hf`` variants time the same model through transformers' own
``generate``), and llama.cpp on the embedded Q4_1 GGUF when ``llama-cpp-python`` is installed
(else null). Perplexity is on tuneterm's built-in held-out texts (the gate's default set),
scored with the model's forward pass as the gate scores it. Prints ONE JSON line; progress
goes to stderr.
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
# On a CPU shared with other work, spinning OpenMP threads slow every variant several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ALL = ["int8_dynamic", "int8_dynamic_hf", "int8_weight_only", "fp32_lean", "gguf_q8_0", "bnb_int8", "bnb_nf4"]


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
    args = parser.parse_args()
    wanted = [v for v in args.variants.split(",") if v]
    load_start = os.getloadavg()[0]

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from tuneterm.core import modelref
    from tuneterm.workers.quantize import gguf as gguf_export
    from tuneterm.workers.loading import load
    from tuneterm.workers.quantize.gate import default_prompts, heldout_texts
    from tuneterm.workers.quantize.load import load_quantized
    from tuneterm.workers.quantize.config import resolve
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
                      "size_mb": dir_mb(parent.path)}
    log(f"  {result['fp32']}")
    scratch = Path(tempfile.mkdtemp(prefix="tuneterm-bench-"))

    def int8_variant(mode: str, fast: bool):
        if mode not in made:  # exactly what `tuneterm quantize --method MODE` makes (its recipe's settings)
            folder = scratch / mode
            made[mode] = (folder, quantize_int8(parent_obj, mode, resolve(modelref.EMBEDDED_NAME, mode)["quant"], folder))
        folder, facts = made[mode]
        return load_quantized(folder, facts, fast=fast), dir_mb(folder), facts  # reloaded as job:ID loads it

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
                         "kept_float": facts.get("kept_float", []) + [k["layer"] for k in facts.get("kept_sensitive", [])]}
                del m
            elif variant == "fp32_lean":
                decoder = FastDecoder(model, max_len=1024)
                entry = {"tok_s": lean_tok_s(decoder, all_ids, n),
                         "ppl": perplexity(lambda ids: decoder.forward(ids, 0, all_logits=True), tok, texts),
                         "size_mb": result["fp32"]["size_mb"], "runtime": "tuneterm lean loop"}
            elif variant in ("bnb_int8", "bnb_nf4"):
                from transformers import AutoModelForCausalLM, BitsAndBytesConfig

                cfg = (BitsAndBytesConfig(load_in_8bit=True) if variant == "bnb_int8" else
                       BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
                m = AutoModelForCausalLM.from_pretrained(parent.path, quantization_config=cfg, device_map="cpu").eval()
                m.save_pretrained(scratch / variant)
                entry = {"tok_s": hf_tok_s(m, all_ids, n), "ppl": perplexity(plain(m), tok, texts),
                         "size_mb": dir_mb(scratch / variant), "runtime": "transformers generate (bitsandbytes CPU)"}
                del m
            elif variant == "gguf_q8_0":
                folder = scratch / "gguf"
                gguf_export.export(model, tok, folder / "model-q8_0.gguf", "q8_0")
                model.config.save_pretrained(folder)
                m = load_quantized(folder, {"method": "gguf", "file": "model-q8_0.gguf"})  # as job:ID loads it
                speed = llama_cpp_tok_s(folder / "model-q8_0.gguf", prompts, n)
                entry = {"tok_s": speed or hf_tok_s(m, all_ids, n), "ppl": perplexity(plain(m), tok, texts),
                         "size_mb": dir_mb(folder),
                         "runtime": "llama.cpp" if speed else "tuneterm lean loop on the de-quantized weights "
                                                               "(llama-cpp-python not installed)"}
                del m
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
    q41 = llama_cpp_tok_s(modelref.embedded_gguf_path(), prompts, n)
    result["llamacpp_q4_1"] = {"tok_s": round(q41, 2)} if q41 else None
    base = result["fp32"]
    scored = {k: v for k, v in result.items() if isinstance(v, dict) and v.get("tok_s") and v.get("ppl")
              and k not in ("fp32", "llamacpp_q4_1")}
    for v in scored.values():
        v["speedup_vs_fp32"] = round(v["tok_s"] / base["tok_s"], 2)
        v["ppl_increase"] = round(v["ppl"] / base["ppl"] - 1, 4)
    eligible = {k: v for k, v in scored.items() if v["ppl_increase"] <= 0.02}
    best = max(eligible, key=lambda k: eligible[k]["tok_s"]) if eligible else None
    result["summary"] = {
        "best_cpu_variant": best,
        "best_speedup_vs_fp32": eligible[best]["speedup_vs_fp32"] if best else None,
        "goal_3x_at_2pct_ppl": bool(best and eligible[best]["speedup_vs_fp32"] >= 3.0),
        "best_vs_llamacpp_q4_1": round(eligible[best]["tok_s"] / q41, 3) if best and q41 else None,
        "tokens": n, "prompts": len(prompts), "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_avg_start": round(load_start, 2), "load_avg_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


def has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_tok_s(path: Path, prompts: list[str], n: int) -> float | None:
    if not has_llama_cpp():
        return None
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=os.cpu_count(), verbose=False)
    rates = []
    for prompt in [prompts[0]] + prompts:  # the first is the warm-up
        started = time.perf_counter()
        first = None
        count = 0
        for _ in llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=n,
                                            temperature=0, stream=True):
            count += 1
            if first is None:
                first = time.perf_counter()
        if first and count > 1:
            rates.append((count - 1) / (time.perf_counter() - first))
    return statistics.median(rates[1:]) if len(rates) > 1 else None


if __name__ == "__main__":
    sys.exit(main())
