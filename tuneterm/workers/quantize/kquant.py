"""K-quant and i-quant GGUF files (q4_K_M, q5_K_M, q6_K, iq4_xs ...) made by llama.cpp's own quantizer.

The ``gguf`` package writes f32/f16/q8_0 but has no K-quant quantizer, so tuneterm exports an f16
GGUF with its own converter (:mod:`tuneterm.workers.quantize.gguf`) and hands it to llama.cpp:

- ``llama_model_quantize`` through llama-cpp-python (``tuneterm[gguf]``), run in a process of its
  own (``python -m tuneterm.workers.quantize.kquant SRC DST TYPE THREADS``: llama.cpp is never loaded
  into a torch process), or
- ``llama-quantize`` when it is on PATH or beside this Python (llama.cpp's command-line tool;
  ``scripts/build_llama_quantize.sh`` builds it). tuneterm prefers it for an importance matrix (it
  also records the matrix in the file's metadata); without it, the matrix goes to
  ``llama_model_quantize`` as the C array llama.cpp 0.3.36's API takes.

With ``quantize.imatrix = true`` tuneterm computes the importance matrix itself, in torch, on the
job's calibration text (the mean of each Linear input column's squared activation, what
``llama-imatrix`` collects), and writes it in the file format ``llama-quantize --imatrix`` reads.

Tensors whose row length is not a multiple of 256 (the K-quant block) get llama.cpp's fallback
type (q5_0/q5_1/q8_0); llama.cpp chooses them, the file's type stays the one asked for.

``quant.embedding_type`` sets the type of the token embedding and of the output layer (llama.cpp's
``--token-embedding-type`` and ``--output-tensor-type``; in a model that ties them, llama.cpp stores
the one matrix with the output layer's type). ``auto`` leaves llama.cpp's choice.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from tuneterm.core.errors import ConfigError, RuntimeFailure
from tuneterm.core.quantize_config import LLAMACPP_HINT, llama_quantize_path

# outtype -> (llama.cpp's llama_ftype number, llama-quantize's type name)
TYPES = {
    "q4_k_m": (15, "Q4_K_M"), "q4_k_s": (14, "Q4_K_S"), "q5_k_m": (17, "Q5_K_M"), "q5_k_s": (16, "Q5_K_S"),
    "q6_k": (18, "Q6_K"), "q3_k_m": (12, "Q3_K_M"), "q2_k": (10, "Q2_K"), "iq4_xs": (30, "IQ4_XS"),
}
BITS = {"q4_k_m": 4, "q4_k_s": 4, "q5_k_m": 5, "q5_k_s": 5, "q6_k": 6, "q3_k_m": 3, "q2_k": 2, "iq4_xs": 4}
# quant.embedding_type -> ggml's type number (enum ggml_type), for llama_model_quantize_params
GGML_TYPES = {"f16": 1, "q8_0": 8, "q4_k": 12, "q5_k": 13, "q6_k": 14, "bf16": 30}


def llama_quantize_tool() -> str | None:
    return llama_quantize_path()


def binding_available() -> bool:
    from tuneterm.workers import llamacpp

    return llamacpp.available()


def quantize_file(src: Path, dst: Path, outtype: str, threads: int | None = None, imatrix: Path | None = None,
                  embedding_type: str = "auto") -> str:
    """Quantize the f16/f32 GGUF ``src`` into ``dst`` as ``outtype``; returns the tool used.
    ``embedding_type`` (a key of GGML_TYPES, or "auto") types the token embedding and the output layer."""
    ftype, name = TYPES[outtype]
    from tuneterm.workers.threadplan import usable_cores

    threads = threads or usable_cores()
    tool = llama_quantize_tool()
    binding = binding_available()
    if tool is not None and (imatrix is not None or not binding):
        cmd = [tool] + (["--imatrix", str(imatrix)] if imatrix is not None else [])
        if embedding_type != "auto":
            cmd += ["--token-embedding-type", embedding_type, "--output-tensor-type", embedding_type]
        cmd += [str(src), str(dst), name, str(threads)]
        used = "llama-quantize" + (" --imatrix" if imatrix is not None else "")
    elif binding:
        cmd = [sys.executable, "-m", "tuneterm.workers.quantize.kquant", str(src), str(dst), str(ftype), str(threads)]
        if embedding_type != "auto":
            cmd += ["--embedding-type", str(GGML_TYPES[embedding_type])]
        if imatrix is not None:
            cmd += ["--imatrix", str(imatrix)]
        used = "llama_model_quantize (llama-cpp-python)" + (" with an imatrix" if imatrix is not None else "")
    else:
        raise ConfigError(f"quant.outtype={outtype} is made by llama.cpp's quantizer, which is not installed",
                          [("quant.outtype", outtype)], LLAMACPP_HINT)
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0 or not dst.is_file():
        raise RuntimeFailure("llama.cpp's quantizer failed", [
            ("command", " ".join(cmd[:1] + cmd[-4:])), ("exit code", str(proc.returncode)),
            ("stderr", (proc.stderr or proc.stdout).strip()[-400:])])
    return used


# --- the importance matrix --------------------------------------------------------------------------


def compute_imatrix(model: Any, tokenizer: Any, texts: list[str], max_length: int = 512) -> tuple[dict, int]:
    """Per Linear layer (its transformers name): the sum over tokens of each input column's squared
    activation, and the number of tokens seen. The output layer is included (llama.cpp uses it)."""
    import torch

    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def record(_module, inputs, _output):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(hook(name)))
    tokens = 0
    try:
        with torch.inference_mode():
            for text in texts:
                ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
                model(ids.to(next(model.parameters()).device))
                tokens += int(ids.shape[1])
    finally:
        for h in hooks:
            h.remove()
    return {n: (sums[n].cpu().numpy(), counts[n]) for n in sums}, tokens


def write_imatrix(stats: dict, path: Path, gguf_name_of, dataset: str = "tuneterm calibration") -> int:
    """Write ``stats`` in llama.cpp's imatrix file format (the one ``llama-imatrix`` wrote before its
    GGUF format, which ``llama-quantize --imatrix`` still reads): per entry the GGUF tensor name, the
    call count (1) and the mean squared activation per input column. Returns the entries written."""
    entries = []
    for hf_name, (total, count) in stats.items():
        target = gguf_name_of(hf_name + ".weight")
        if target and count:
            entries.append((target if target.endswith(".weight") else target + ".weight", total / count))
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, values in entries:
            raw = name.encode()
            f.write(struct.pack("<i", len(raw)) + raw)
            f.write(struct.pack("<ii", 1, len(values)))
            f.write(values.astype("<f4").tobytes())
        label = dataset.encode()
        f.write(struct.pack("<i", 1) + struct.pack("<i", len(label)) + label)
    return len(entries)


def imatrix_file(model: Any, tokenizer: Any, texts: list[str], path: Path, label: str) -> dict:
    """Compute the importance matrix of ``model`` on ``texts`` and write it to ``path`` under the
    model's GGUF tensor names; returns what quality.json records of it."""
    from tuneterm.workers.quantize import gguf as gguf_export

    stats, tokens = compute_imatrix(model, tokenizer, texts)
    arch = gguf_export.arch_of(model.config, model) or "llama"
    n_blocks = model.config.num_hidden_layers
    entries = write_imatrix(stats, path, lambda n: gguf_export.gguf_name(n, arch, n_blocks), label)
    return {"file": Path(path).name, "entries": entries, "tokens": tokens, "data": label}


def read_imatrix(path: Path) -> dict[str, list[float]]:
    """The entries of an imatrix file as ``llama-quantize`` reads them (name -> values / calls)."""
    import numpy as np

    data = Path(path).read_bytes()
    (n,), pos = struct.unpack_from("<i", data, 0), 4
    out = {}
    for _ in range(n):
        (length,) = struct.unpack_from("<i", data, pos)
        pos += 4
        name = data[pos:pos + length].decode()
        pos += length
        ncall, nval = struct.unpack_from("<ii", data, pos)
        pos += 8
        values = np.frombuffer(data, dtype="<f4", count=nval, offset=pos)
        pos += 4 * nval
        out[name] = (values / ncall if ncall > 0 else values).tolist()
    return out


# --- the worker process: llama_model_quantize through llama-cpp-python ---------------------------------


def main(argv: list[str]) -> int:
    """``SRC DST FTYPE THREADS [--embedding-type GGML_TYPE] [--imatrix FILE]``"""
    import ctypes

    import llama_cpp

    src, dst, ftype, threads = argv[0], argv[1], int(argv[2]), int(argv[3])
    options = dict(zip(argv[4::2], argv[5::2]))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    if "--embedding-type" in options:  # the token embedding and the output layer (tied: one matrix)
        params.token_embedding_type = params.output_tensor_type = int(options["--embedding-type"])
    keep = []  # the arrays llama.cpp reads must outlive the call
    if "--imatrix" in options:
        # llama.cpp 0.3.36's C API takes the matrix as a {name, values, size} array ending in a null name
        entries = read_imatrix(Path(options["--imatrix"]))
        table = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
        for row, (name, values) in zip(table, entries.items()):
            buf = (ctypes.c_float * len(values))(*values)
            keep.append(buf)
            row.name, row.data, row.size = name.encode(), ctypes.cast(buf, ctypes.POINTER(ctypes.c_float)), len(values)
        keep.append(table)
        params.imatrix = ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        # the metadata llama-quantize writes with a matrix (the terminator is the zeroed last entry)
        kv = (llama_cpp.llama_model_kv_override * 3)()
        kv[0].tag, kv[0].key, kv[0].value.val_str = (llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, b"quantize.imatrix.file",
                                                     options["--imatrix"].encode()[:127])
        kv[1].tag, kv[1].key, kv[1].value.val_i64 = (llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT,
                                                     b"quantize.imatrix.entries_count", len(entries))
        keep.append(kv)
        params.kv_overrides = ctypes.cast(kv, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        print(f"llama_model_quantize returned {rc}", file=sys.stderr)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
