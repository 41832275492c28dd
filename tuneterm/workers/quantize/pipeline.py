"""Quantize one model, top to bottom: load the parent (merging an adapter) -> quantize -> save the
artifact -> reload it the way ``job:ID`` will -> measure it against the parent (the gate)."""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from tuneterm.core.errors import InputError, RuntimeFailure
from tuneterm.core.fsutil import atomic_write_json, atomic_write_text
from tuneterm.workers.quantize import gate as quant_gate
from tuneterm.workers.quantize.load import load_quantized

warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
# bitsandbytes logs one line per 8-bit matmul on CPU ("inputs will be cast to float16"): keep the log readable.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")

Emit = Callable[..., None]

ARTIFACT_DIR = "model"


def _noop(**_fields) -> None:
    pass


def resolve_device(wanted: str) -> str:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeFailure("quant.device=cuda but no GPU is visible", [("torch", torch.__version__)],
                             "use quant.device=cpu (bitsandbytes 0.50 runs 8-bit and 4-bit layers on CPU)")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


class Parent:
    """The float model that gets quantized, and what the gate compares against."""

    def __init__(self, ref: str, model: Any, tokenizer: Any, folder: Path | None, load_s: float,
                 disk_bytes: int, merged: bool, base: str | None) -> None:
        self.ref, self.model, self.tokenizer, self.folder = ref, model, tokenizer, folder
        self.load_s, self.disk_bytes, self.merged, self.base = load_s, disk_bytes, merged, base


def load_parent(ref: str, emit: Emit = _noop) -> Parent:
    """Load ``ref`` in float32 on CPU; an adapter is merged into its base first."""
    from tuneterm.workers import loading

    folder, facts = loading.local_path(ref)
    if facts.get("quant"):
        raise InputError("this model is already quantized", [("reference", ref), ("method", str(facts["quant"].get("method")))],
                         "quantize its parent (the model it was made from) instead")
    loaded = loading.load(ref, dtype="float32")
    model, merged = loaded.model, False
    base = facts.get("base")
    if facts.get("adapter"):
        started = time.perf_counter()
        model = model.merge_and_unload()
        merged = True
        emit(type="quantize", phase="merged", base=base, seconds=round(time.perf_counter() - started, 2))
    load_s = loaded.load_seconds
    disk = quant_gate.weight_bytes_on_disk(None if merged else folder)
    if merged:  # the parent is base + adapter; its float size is what it would take merged
        disk = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    return Parent(ref, model.eval(), loaded.tokenizer, None if merged else folder, load_s, disk, merged, base)


def _float_folder(parent: Parent, scratch: Path) -> Path:
    """A transformers checkpoint of the parent (bitsandbytes quantizes while loading one)."""
    if parent.folder is not None and (parent.folder / "config.json").is_file():
        return parent.folder
    target = scratch / "merged"
    parent.model.save_pretrained(target)
    parent.tokenizer.save_pretrained(target)
    return target


def quantize_int8(parent: Parent, method: str, q: dict, art: Path, emit: Emit = _noop) -> dict:
    from tuneterm.workers.quantize import int8

    model = copy.deepcopy(parent.model)
    compute = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[q["compute_dtype"]]
    skip = list(q["skip_modules"])
    smoothing: dict = {}
    texts = None
    if method == "int8-dynamic" and (q["smooth_alpha"] > 0 or q["outlier_ratio"] > 0):
        from tuneterm.workers.quantize import smooth

        texts = calibration_texts(parent.tokenizer)
        stats = smooth.calibrate(model, parent.tokenizer, texts)
        kept = smooth.outlier_layers(stats, q["outlier_ratio"]) if q["outlier_ratio"] > 0 else []
        skip += kept
        groups = smooth.smooth_model(model, stats, q["smooth_alpha"]) if q["smooth_alpha"] > 0 else 0
        smoothing = {"smooth_alpha": q["smooth_alpha"], "smoothed_groups": groups, "kept_float": kept}
    if q["keep_sensitive"] > 0:
        sensitive = _most_sensitive(model, parent.tokenizer, texts or calibration_texts(parent.tokenizer), method,
                                    q, compute, skip, emit)
        skip += [name for name, _ in sensitive]
        smoothing["kept_sensitive"] = [{"layer": name, "kl": round(kl, 6)} for name, kl in sensitive]
    names = int8.quantize_model(model, method, bits=q["bits"], skip=skip, lm_head=q["quantize_lm_head"],
                                compute_dtype=compute, embedding=q["quantize_embedding"])
    if not names:
        raise InputError("no Linear layer could be quantized", [("method", method)],
                         "int8-* methods quantize nn.Linear layers of a CPU model")
    facts = {"method": method, "bits": q["bits"], "format": "tuneterm-int8", "scheme": "symmetric per-channel",
             "activations": "int8 per token" if method == "int8-dynamic" else q["compute_dtype"],
             "compute_dtype": q["compute_dtype"], "quantized_layers": len(names), "device": "cpu",
             "int8_embedding": any(n.endswith("embed_tokens") for n in names), **smoothing}
    int8.save_int8(model, parent.tokenizer, art, method, facts)
    del model
    return facts


def _most_sensitive(model: Any, tokenizer: Any, texts: list[str], method: str, q: dict, compute: torch.dtype,
                    skip: list[str], emit: Emit) -> list[tuple[str, float]]:
    """The ``quant.keep_sensitive`` layers whose int8 version alone moves the (smoothed) float
    model's next-token distributions most on the calibration texts (mean KL per token)."""
    from tuneterm.workers.quantize import int8, sensitivity

    def one(layer):
        qw, scale = int8.quantize_weight(layer.weight, q["bits"])
        return int8.make_linear(method, qw, scale, None if layer.bias is None else layer.bias.detach(), compute)

    names = sensitivity.candidates(model, skip)
    emit(type="quantize", phase="sensitivity", layers=len(names))
    def progress(done: int, total: int) -> None:
        if done % 20 == 0:  # also the job's heartbeat during a long search
            emit(type="quantize", phase="sensitivity", done=done, layers=total)

    ranking = sensitivity.rank_layers(model, tokenizer, texts, names, one, progress=progress)
    chosen = ranking[: q["keep_sensitive"]]
    emit(type="quantize", phase="sensitivity_done", kept=[n for n, _ in chosen],
         kl=[round(k, 6) for _, k in chosen])
    return chosen


def calibration_texts(tokenizer: Any = None) -> list[str]:
    """tuneterm's calibration texts (kept apart from what the gate scores), as chat turns when the
    model has a chat template: the template's special tokens carry their own activation outliers,
    and scales calibrated on plain text alone broke chat answers (SmolLM2 answered in French)."""
    import json

    data = json.loads(quant_gate.HELDOUT.read_text())
    texts = list(data["calibration"])
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                               tokenize=False)
                 for q, a in zip(data["calibration_prompts"], data["calibration"])]
    return texts


def quantize_bnb(parent: Parent, method: str, q: dict, art: Path, device: str, scratch: Path) -> dict:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    compute = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[q["compute_dtype"]]
    skip = list(q["skip_modules"]) or None
    if method == "bnb-int8":
        cfg = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(q["int8_threshold"]),
                                 llm_int8_skip_modules=skip)
    else:
        cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=method.removeprefix("bnb-"),
                                 bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=bool(q["double_quant"]),
                                 llm_int8_skip_modules=skip)
    source = _float_folder(parent, scratch)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=cfg, device_map=device)
    model.save_pretrained(art)
    parent.tokenizer.save_pretrained(art)
    del model
    facts = {"method": method, "bits": q["bits"], "format": "bitsandbytes", "device": device,
             "compute_dtype": q["compute_dtype"]}
    if method == "bnb-int8":
        facts["int8_threshold"] = float(q["int8_threshold"])
    else:
        facts["double_quant"] = bool(q["double_quant"])
    return facts


def quantize_gguf(parent: Parent, q: dict, art: Path, scratch: Path | None = None, emit: Emit = _noop) -> dict:
    """f32/f16/q8_0 with tuneterm's own writer; the K-quants and iq4_xs by llama.cpp's quantizer from an
    f16 export (:mod:`tuneterm.workers.quantize.kquant`), with an importance matrix when asked."""
    from tuneterm.workers.quantize import gguf as gguf_export
    from tuneterm.workers.quantize import kquant

    outtype = q["outtype"]
    name = f"model-{outtype}.gguf"
    art.mkdir(parents=True, exist_ok=True)
    extra: dict = {}
    if outtype in kquant.TYPES:
        scratch = scratch or Path(tempfile.mkdtemp(prefix=".scratch-", dir=art.parent))
        source = scratch / "model-f16.gguf"
        gguf_export.export(parent.model, parent.tokenizer, source, "f16",
                           name=f"tuneterm {parent.ref}", tokenizer_pre=q["tokenizer_pre"])
        imatrix = None
        if q.get("imatrix"):
            texts, label = imatrix_texts(parent)
            emit(type="quantize", phase="imatrix", texts=len(texts))
            imatrix = art / "imatrix.dat"
            extra["imatrix"] = kquant.imatrix_file(parent.model, parent.tokenizer, texts, imatrix, label)
        emit(type="quantize", phase="llama_quantize", outtype=outtype)
        embedding_type = q.get("embedding_type", "auto")
        extra["quantizer"] = kquant.quantize_file(source, art / name, outtype, imatrix=imatrix,
                                                  embedding_type=embedding_type)
        if embedding_type != "auto":
            extra["embedding_type"] = embedding_type
        source.unlink(missing_ok=True)
    else:
        gguf_export.export(parent.model, parent.tokenizer, art / name, outtype,
                           name=f"tuneterm {parent.ref}", tokenizer_pre=q["tokenizer_pre"])
    parent.tokenizer.save_pretrained(art)
    parent.model.config.save_pretrained(art)  # lets tuneterm read the tensors back without transformers' GGUF path
    back = gguf_export.read_back(art / name)
    expected = gguf_export.expected_tensors(parent.model)
    if set(back["tensors"]) != expected:
        raise RuntimeFailure("the GGUF file does not read back with the expected tensors",
                             [("missing", ", ".join(sorted(expected - set(back["tensors"]))[:5])),
                              ("extra", ", ".join(sorted(set(back["tensors"]) - expected)[:5]))])
    bits = {"f32": 32, "f16": 16, "q8_0": 8, **kquant.BITS}[outtype]
    return {"method": "gguf", "bits": bits, "format": "gguf", "file": name, "outtype": outtype,
            "tensors": len(back["tensors"]), "tokenizer_pre": back["tokenizer_pre"], "device": "cpu",
            "gguf_types": sorted(set(t for _, t in back["tensors"].values())),
            # the token embedding and output layer as written (one matrix when the model ties them)
            "embedding_tensors": {n: back["tensors"][n][1] for n in ("token_embd.weight", "output.weight")
                                  if n in back["tensors"]}, **extra}


def imatrix_texts(parent: Parent, limit: int = 128) -> tuple[list[str], str]:
    """Calibration text for an importance matrix: the parent job's own training data (when the parent
    is a train job: ``job:ID``) after tuneterm's calibration texts."""
    texts = calibration_texts(parent.tokenizer)
    label = "tuneterm calibration texts"
    ref = parent.ref
    if ref.startswith("job:"):
        try:
            from tuneterm.core.jobs.store import read_spec, resolve_id
            from tuneterm.core.workspace import workspace

            jobs_dir = workspace().jobs_dir
            spec = read_spec(jobs_dir / resolve_id(ref[4:], jobs_dir))
            data = (spec.get("config") or spec).get("data")
            if data and Path(data).is_file():
                own, _ = quant_gate.heldout_texts(str(data), parent.tokenizer, limit)
                texts, label = own + texts, f"training data of {ref} ({Path(data).name}) + calibration texts"
        except Exception:  # a job without readable data: the calibration texts alone
            pass
    return texts, label


def quantize(parent_ref: str, method: str, config: dict, out_dir: Path, emit: Emit | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Quantize ``parent_ref`` into ``out_dir/model`` and gate it; returns the result.

    Result: {"artifact_kind", "path", "quant", "quality", "passed"}. Writes quality.json and
    quality.md into ``out_dir``. Raises ``GateFailed`` (after writing them) on a failed gate.
    """
    emit = emit or _noop
    q, gate = config["quant"], config["gate"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(q["device"]) if method.startswith("bnb-") else "cpu"
    emit(type="quantize", phase="load_parent", model=parent_ref)
    parent = load_parent(parent_ref, emit)
    if should_stop():
        return {"stopped": True}
    art = out_dir / ARTIFACT_DIR
    if art.exists():
        shutil.rmtree(art)
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=out_dir))
    started = time.perf_counter()
    emit(type="quantize", phase="quantize", method=method, device=device)
    try:
        if method in ("int8-dynamic", "int8-weight-only"):
            facts = quantize_int8(parent, method, q, art, emit)
        elif method.startswith("bnb-"):
            facts = quantize_bnb(parent, method, q, art, device, scratch)
        elif method == "gguf":
            facts = quantize_gguf(parent, q, art, scratch, emit)
        else:
            raise InputError(f"unknown method {method}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    facts["parent"] = parent_ref
    if parent.merged:
        facts["merged_adapter_base"] = parent.base
    quant_s = time.perf_counter() - started
    size = quant_gate.weight_bytes_on_disk(art)
    emit(type="quantize", phase="saved", seconds=round(quant_s, 2), size_mb=round(size / 1e6, 2))
    result = {"artifact_kind": "gguf" if method == "gguf" else "quantized", "path": art, "quant": facts,
              "quantize_s": round(quant_s, 2), "passed": True, "quality": None}
    if not gate.get("enabled", True) or should_stop():
        return result

    # The gate measures the artifact as job:ID will load it, not the object still in memory.
    started = time.perf_counter()
    from transformers import AutoTokenizer

    from tuneterm.workers import llamacpp

    engine = None
    if method == "gguf" and llamacpp.available():  # the file that ships, measured where it will run
        engine = qmodel = llamacpp.LlamaCppEngine(art / facts["file"])
        info = {"runtime": f"llama.cpp ({engine.info.get('n_threads')} threads), the GGUF file itself"}
    else:
        qmodel = load_quantized(art, facts)
        info = {"runtime": "tuneterm lean loop on the de-quantized GGUF (llama-cpp-python not installed)"} \
            if method == "gguf" else {}
    qtok = AutoTokenizer.from_pretrained(art)
    qload = time.perf_counter() - started
    parent_side = quant_gate.Side(parent.model, parent.tokenizer, parent.load_s, parent.disk_bytes,
                                  label=parent_ref + (" (adapter merged)" if parent.merged else ""))
    qlabel = f"gguf {facts['outtype']}{' imatrix' if facts.get('imatrix') else ''}" if method == "gguf" else method
    quant_side = quant_gate.Side(qmodel, qtok, qload, size, label=qlabel, info=info)
    from tuneterm.workers.quantize import tokcheck

    emit(type="gate", phase="tokenizer")
    tok_failures = (tokcheck.compare_gguf(parent.tokenizer, art / facts["file"]) if method == "gguf"
                    else tokcheck.compare(parent.tokenizer, qtok))
    try:
        report = quant_gate.measure(parent_side, quant_side, gate, emit)
    finally:
        if engine is not None:
            engine.close()
    report["tokenizer_check"] = {"passed": not tok_failures, "failures": tok_failures}
    report["failures"] = tok_failures + report["failures"]
    report["passed"] = not report["failures"]
    report.update(method=method, quant=facts, quantize_s=result["quantize_s"])
    atomic_write_json(out_dir / "quality.json", report)
    atomic_write_text(out_dir / "quality.md", quant_gate.markdown(report, f"Quantization report: {parent_ref} -> {method}"))
    summary = {k: report[k] for k in ("ppl_increase", "mean_kl", "top1_agreement", "exact_match", "size_ratio",
                                      "memory_ratio", "speedup", "passed")}
    emit(type="gate", phase="done", **summary, parent=report["parent"], quantized=report["quantized"],
         failures=report["failures"])
    result.update(quality=report, passed=report["passed"])
    if not report["passed"]:
        raise quant_gate.GateFailed(
            "the quantized model failed the quality gate",
            [("failed", f) for f in report["failures"]] + [("report", str(out_dir / "quality.md"))],
            "loosen the threshold (e.g. gate.max_ppl_increase=0.1) or use a gentler method (more bits, int8)",
        )
    return result
