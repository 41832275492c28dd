"""The quality gate: a quantized model measured against its parent on the same inputs.

    size on disk (weight files) and memory footprint when loaded
    load time, time to first token and decode tokens/s (greedy, fixed prompts, after a warm-up)
    perplexity on held-out text (a dataset's validation split, or tuneterm's own texts)
    mean KL(parent || quantized) of next-token distributions and top-1 agreement
    exact-match rate of greedy generations on the fixed prompts

Thresholds (``gate.max_ppl_increase`` ...) turn the report into pass/fail; the caller writes
``quality.json`` and ``quality.md`` and fails the job on a failed gate.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tuneterm.core.errors import InputError, RuntimeFailure
from tuneterm.core.resources import data_dir

HELDOUT = data_dir() / "quant_heldout.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


class GateFailed(RuntimeFailure):
    """The quantized model missed a threshold; the report is kept, no model reference is made."""


@dataclass
class Side:
    """One model under measurement."""

    model: Any
    tokenizer: Any
    load_s: float
    disk_bytes: int
    label: str = ""
    info: dict = field(default_factory=dict)


def weight_bytes_on_disk(folder: Path | None) -> int:
    if folder is None or not Path(folder).exists():
        return 0
    folder = Path(folder)
    if folder.is_file():
        return folder.stat().st_size
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def footprint_bytes(model: Any) -> int:
    if getattr(model, "is_llamacpp", False):  # llama.cpp maps the file: its size is what it holds
        return model.memory_bytes()
    from tuneterm.workers.quantize.int8 import footprint_bytes as count

    return count(model)


# --- inputs ---------------------------------------------------------------------------------------


def heldout_texts(source: str, tokenizer: Any, limit: int) -> tuple[list[str], str]:
    """Texts for perplexity: ``source`` = "" (built-in), a dataset name, a .jsonl or a text file."""
    if not source:
        return json.loads(HELDOUT.read_text())["texts"][:limit], "built-in held-out texts"
    path = Path(source).expanduser()
    if not path.is_file():
        try:
            from tuneterm.core.datasets import store
        except ImportError as exc:
            raise InputError("no dataset store in this install", [("gate.data", source)],
                             "pass a JSONL or text file path") from exc
        try:
            path = store.resolve_path(source, "val")
        except Exception:
            path = store.resolve_path(source, None)
        label = f"dataset {source} ({path.name})"
    else:
        label = str(path)
    texts: list[str] = []
    if path.suffix == ".jsonl":
        from tuneterm.core.jsonl import iter_jsonl

        for _, row in iter_jsonl(path, what="held-out data"):
            if "messages" in row and getattr(tokenizer, "chat_template", None):
                from tuneterm.core.chat_templates import render

                texts.append(render(tokenizer, row["messages"]))
            elif "text" in row:
                texts.append(str(row["text"]))
            if len(texts) >= limit:
                break
    else:
        texts = [t.strip() for t in path.read_text(encoding="utf-8").split("\n\n") if t.strip()][:limit]
    if not texts:
        raise InputError("no held-out texts found", [("gate.data", source), ("file", str(path))],
                         "use a chat JSONL ({\"messages\": ...}), {\"text\": ...} lines or a plain text file")
    return texts, label


def default_prompts() -> list[str]:
    return json.loads(HELDOUT.read_text())["prompts"]


# --- measurements ---------------------------------------------------------------------------------


def _device(model: Any) -> torch.device:
    return getattr(model, "device", None) or next(model.parameters()).device


@torch.inference_mode()
def compare_distributions(parent: Side, quant: Side, texts: list[str], max_length: int) -> dict:
    """Perplexity of both, mean KL(parent || quant) and top-1 agreement, token-weighted."""
    nll_p = nll_q = kl_sum = 0.0
    agree = count = 0
    for text in texts:
        ids = parent.tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
        if ids.shape[1] < 2:
            continue
        lp = _logits(parent.model, ids)
        lq = _logits(quant.model, ids)
        target = ids[0, 1:]
        logp, logq = F.log_softmax(lp, -1), F.log_softmax(lq, -1)
        nll_p += float(F.nll_loss(logp, target, reduction="sum"))
        nll_q += float(F.nll_loss(logq, target, reduction="sum"))
        kl_sum += float((logp.exp() * (logp - logq)).sum())
        agree += int((lp.argmax(-1) == lq.argmax(-1)).sum())
        count += int(target.numel())
    if count == 0:
        raise InputError("the held-out texts are too short to score", [("texts", str(len(texts)))])
    ppl_p, ppl_q = math.exp(nll_p / count), math.exp(nll_q / count)
    return {
        "tokens": count,
        "ppl_parent": ppl_p,
        "ppl_quant": ppl_q,
        "ppl_increase": ppl_q / ppl_p - 1.0,
        "mean_kl": kl_sum / count,
        "top1_agreement": agree / count,
    }


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """Next-token logits at every position but the last ([T-1, vocab], float32, CPU); a GGUF file in
    a llama.cpp worker (``workers.llamacpp.LlamaCppEngine``) is scored by llama.cpp itself."""
    if getattr(model, "is_llamacpp", False):
        return torch.from_numpy(model.logits(ids[0].tolist()))[:-1].float()
    return model(ids.to(_device(model))).logits[0, :-1].float().cpu()


def _generate(side: Side, messages: list[dict], params: Any) -> tuple[str, Any]:
    from tuneterm.workers.engine import GenerationStats, generate_text

    if getattr(side.model, "is_llamacpp", False):  # the file's own chat template, decoded by llama.cpp
        stats = GenerationStats()
        return "".join(side.model.stream(messages, params, stats)), stats
    return generate_text(side.model, side.tokenizer, messages, params)


def generate_all(side: Side, prompts: list[str], max_new_tokens: int) -> tuple[list[str], dict]:
    """Greedy generations (after one warm-up) with median TTFT and decode speed."""
    from tuneterm.workers.engine import GenerationParams, build_messages

    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    _generate(side, build_messages(prompts[0]), params)  # warm-up
    texts, ttft, decode, tokens = [], [], [], 0
    for prompt in prompts:
        text, stats = _generate(side, build_messages(prompt), params)
        texts.append(text)
        tokens += stats.completion_tokens
        if stats.ttft_s is not None:
            ttft.append(stats.ttft_s)
        if stats.decode_tok_s > 0:
            decode.append(stats.decode_tok_s)
    return texts, {
        "ttft_ms": round(1000 * statistics.median(ttft), 2) if ttft else None,
        "decode_tok_s": round(statistics.median(decode), 2) if decode else None,
        "completion_tokens": tokens,
    }


def measure(parent: Side, quant: Side, gate: dict, emit=None) -> dict:
    """All metrics plus the verdict (``passed``, ``failures``)."""
    emit = emit or (lambda **_: None)
    texts, data_label = heldout_texts(gate.get("data", ""), parent.tokenizer, gate["max_texts"])
    emit(type="gate", phase="distributions", texts=len(texts))
    dist = compare_distributions(parent, quant, texts, gate["max_length"])
    prompts = gate.get("prompts") or default_prompts()
    emit(type="gate", phase="generation", prompts=len(prompts))
    gen_p, speed_p = generate_all(parent, prompts, gate["max_new_tokens"])
    gen_q, speed_q = generate_all(quant, prompts, gate["max_new_tokens"])
    exact = sum(a == b for a, b in zip(gen_p, gen_q)) / len(prompts)
    report = {
        "data": data_label,
        "texts": len(texts),
        "prompts": len(prompts),
        "parent": _side_facts(parent, dist["ppl_parent"], speed_p),
        "quantized": _side_facts(quant, dist["ppl_quant"], speed_q),
        "ppl_increase": dist["ppl_increase"],
        "mean_kl": dist["mean_kl"],
        "top1_agreement": dist["top1_agreement"],
        "exact_match": exact,
        "scored_tokens": dist["tokens"],
        "size_ratio": _ratio(quant.disk_bytes, parent.disk_bytes),
        "memory_ratio": _ratio(footprint_bytes(quant.model), footprint_bytes(parent.model)),
        "speedup": _ratio(speed_q["decode_tok_s"], speed_p["decode_tok_s"]),
        "samples": [{"prompt": p, "parent": a, "quantized": b} for p, a, b in zip(prompts, gen_p, gen_q)],
    }
    report["failures"] = verdict(report, gate)
    report["passed"] = not report["failures"]
    report["thresholds"] = {k: gate.get(k) for k in THRESHOLDS}
    return report


def _side_facts(side: Side, ppl: float, speed: dict) -> dict:
    return {
        "label": side.label,
        "size_mb": round(side.disk_bytes / 1e6, 2),
        "memory_mb": round(footprint_bytes(side.model) / 1e6, 2),
        "load_s": round(side.load_s, 3),
        "ppl": ppl,
        **speed,
        **_decode_threads(side.model),
        **side.info,
    }


def _decode_threads(model: Any) -> dict:
    """The thread count the lean decode loop measured fastest (what chat, serve and eval use too)."""
    decoder = getattr(model, "_tuneterm_fast", None)
    if decoder is None or getattr(decoder, "threads", None) is None:
        return {}
    return {"decode_threads": decoder.threads}


def _ratio(a, b):
    return round(a / b, 4) if a and b else None


THRESHOLDS = {
    "max_ppl_increase": ("ppl_increase", "above"),
    "max_mean_kl": ("mean_kl", "above"),
    "min_top1_agreement": ("top1_agreement", "below"),
    "min_exact_match": ("exact_match", "below"),
}


def verdict(report: dict, gate: dict) -> list[str]:
    failures = []
    for key, (metric, bad) in THRESHOLDS.items():
        limit = gate.get(key)
        if limit is None:
            continue
        value = report[metric]
        if (bad == "above" and value > limit) or (bad == "below" and value < limit):
            failures.append(f"{metric} = {value:.4g} is {bad} gate.{key} = {limit}")
    return failures


def markdown(report: dict, title: str) -> str:
    p, q = report["parent"], report["quantized"]

    def row(name, key, fmt="{}"):
        a, b = p.get(key), q.get(key)
        return f"| {name} | {fmt.format(a) if a is not None else '-'} | {fmt.format(b) if b is not None else '-'} |"

    lines = [
        f"# {title}",
        "",
        f"**Gate: {'passed' if report['passed'] else 'FAILED'}**" + ("" if report["passed"] else ": " + "; ".join(report["failures"])),
        "",
        "| | parent | quantized |",
        "| --- | --- | --- |",
        row("size on disk (MB)", "size_mb"),
        row("memory when loaded (MB)", "memory_mb"),
        row("load time (s)", "load_s"),
        row("time to first token (ms)", "ttft_ms"),
        row("decode (tokens/s)", "decode_tok_s"),
        row("perplexity", "ppl", "{:.4f}"),
        "",
        f"- perplexity increase: {100 * report['ppl_increase']:+.2f}% on {report['scored_tokens']} tokens ({report['data']})",
        f"- mean KL(parent || quantized) per token: {report['mean_kl']:.5f}",
        f"- top-1 next-token agreement: {100 * report['top1_agreement']:.1f}%",
        f"- greedy generations identical to the parent: {100 * report['exact_match']:.0f}% of {report['prompts']} prompts",
        f"- size ratio {report['size_ratio']}, memory ratio {report['memory_ratio']}, decode speedup {report['speedup']}",
    ]
    for name, side in (("parent", p), ("quantized", q)):
        how = [str(side[k]) for k in ("runtime",) if side.get(k)]
        if side.get("decode_threads"):
            how.append(f"{side['decode_threads']} decode threads (measured fastest)")
        if how:
            lines.append(f"- {name} run by: {', '.join(how)}")
    lines.append("")
    return "\n".join(lines)
