"""Int8 Linear layers for fast CPU inference, with torch's own kernels, and their file format.

- ``int8-dynamic``: weights int8 per output channel (symmetric); activations quantized to int8
  per call; ``torch.ops.quantized.linear_dynamic`` (fbgemm) does the int8 GEMM.
- ``int8-weight-only``: the same int8 weights; activations stay float and
  ``torch.ops.aten._weight_int8pack_mm`` de-quantizes inside the kernel.

torchao 0.18 was tried first: on this CPU build its tensor-subclass Linear took milliseconds per
call in eager mode (slower than fp32), so the kernels are called directly here.

On disk (``int8.safetensors`` + ``int8.json`` in the artifact folder): every tensor of the model
in full precision except each quantized Linear, stored as ``NAME.qweight`` (int8, [out, in]) and
``NAME.qscale`` (float32, [out]) and ``NAME.bias`` when it has one. Loading rebuilds the model
skeleton on the meta device and assigns the stored tensors, so no random init is paid.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import torch
from torch import nn

FORMAT = "tuneterm-int8/1"


@functools.lru_cache(maxsize=1)
def _has_vnni() -> bool:
    """With VNNI, fbgemm's u8*s8 dot products do not saturate, so the full int8 range is safe."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def quantize_weight(weight: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantization: (int8 [out, in], float32 scale [out])."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / qmax).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-qmax, qmax).to(torch.int8)
    return q.contiguous(), scale.contiguous()


class Int8DynamicLinear(nn.Module):
    """y = x W^T + b with W int8 per channel and x quantized per call (fbgemm)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        with warnings.catch_warnings():  # torch marks quantized tensors deprecated; fbgemm's packing still needs one
            warnings.simplefilter("ignore")
            qt = torch._make_per_channel_quantized_tensor(
                qweight, scale.double(), torch.zeros(self.out_features, dtype=torch.long), 0
            )
        self._packed = torch.ops.quantized.linear_prepack(qt, None if bias is None else bias.float())
        self._reduce_range = not _has_vnni()
        self._bias = None if bias is None else bias.detach().float().clone()
        self._row_sums = (qweight.float().sum(dim=1) * scale.float())  # de-quantized W @ ones, per output
        self.weight_bytes = qweight.numel() + scale.numel() * 8 + (0 if bias is None else bias.numel() * 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > 1:  # prefill / scoring: per token, exactly as decoding computes it
            return self._forward_rows(x, rows)
        return torch.ops.quantized.linear_dynamic(x, self._packed, self._reduce_range)

    def _forward_rows(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """Each row (token) quantized with its own scale and zero point, as fbgemm does for one row.

        fbgemm quantizes a whole input with one scale; a few tokens (the first one, above all)
        carry activations ~100x the others, and one shared scale rounds every other token to a
        few levels (SmolLM2-135M, smooth_alpha 0.5: perplexity +4.5% when only the outlier tokens
        got their own scale, +0.5% per token). So each row is
        mapped to its own quantization grid here (u = x / s_row + z_row, clamped to [0, qmax]),
        and one extra row holding 0 and qmax makes fbgemm's own grid exactly 1.0 / 0: fbgemm then
        rounds u exactly as it rounds a single row, and the int8 GEMM runs in one call. The
        result is taken back to x's scale with the weights' row sums. Prompt tokens, perplexity
        and the gate therefore see the numbers token-by-token decoding computes."""
        x2 = x.reshape(rows, x.shape[-1]).float()
        qmax = 127.0 if self._reduce_range else 255.0
        lo = x2.amin(dim=1, keepdim=True).clamp(max=0)
        hi = x2.amax(dim=1, keepdim=True).clamp(min=0)
        scale = ((hi - lo) / qmax).clamp(min=1e-12)
        zero = torch.round(-lo / scale).clamp(0, qmax)
        u = torch.empty(rows + 1, x2.shape[1])
        torch.div(x2, scale, out=u[:rows]).add_(zero).clamp_(0, qmax)
        u[rows].zero_()
        u[rows, 0] = qmax
        y = torch.ops.quantized.linear_dynamic(u, self._packed, self._reduce_range)[:rows]
        if self._bias is not None:
            y = y - self._bias
        y = (y - zero * self._row_sums).mul_(scale)
        if self._bias is not None:
            y = y + self._bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def int8_state(self) -> dict[str, torch.Tensor]:
        qweight, bias = torch.ops.quantized.linear_unpack(self._packed)
        state = {"qweight": qweight.int_repr().contiguous(), "qscale": qweight.q_per_channel_scales().float()}
        if bias is not None:
            state["bias"] = bias.detach().float()
        return state

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 dynamic"


class Int8WeightOnlyLinear(nn.Module):
    """y = x (s * W_int8)^T + b, de-quantized inside ``_weight_int8pack_mm``."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.compute_dtype = compute_dtype
        # Fresh allocations: tensors read from a safetensors file may sit at unaligned offsets,
        # and the bf16 kernel crashed (SIGSEGV) on those.
        self.register_buffer("qweight", qweight.contiguous().clone())
        self.register_buffer("qscale", scale.to(compute_dtype).contiguous().clone())
        self.register_buffer("bias", None if bias is None else bias.float().clone())
        self.weight_bytes = qweight.numel() + scale.numel() * 4 + (0 if bias is None else bias.numel() * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(self.compute_dtype).contiguous()
        y = torch.ops.aten._weight_int8pack_mm(x2, self.qweight, self.qscale).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def int8_state(self) -> dict[str, torch.Tensor]:
        state = {"qweight": self.qweight, "qscale": self.qscale.float()}
        if self.bias is not None:
            state["bias"] = self.bias
        return state


class Int8Embedding(nn.Module):
    """Token embedding stored as int8 rows with one scale per row (de-quantized on lookup)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("qscale", scale.float().contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.qweight).float() * self.qscale[ids].unsqueeze(-1)

    def int8_state(self) -> dict[str, torch.Tensor]:
        return {"qweight": self.qweight, "qscale": self.qscale}


QUANT_LINEARS = (Int8DynamicLinear, Int8WeightOnlyLinear, Int8Embedding)


def make_linear(mode: str, qweight, scale, bias, compute_dtype=torch.float32) -> nn.Module:
    if mode == "int8-dynamic":
        return Int8DynamicLinear(qweight, scale, bias)
    if mode == "int8-weight-only":
        return Int8WeightOnlyLinear(qweight, scale, bias, compute_dtype)
    raise ValueError(f"unknown int8 mode {mode}")


def quantize_model(model: nn.Module, mode: str, bits: int = 8, skip: list[str] | None = None,
                   lm_head: bool = True, compute_dtype: torch.dtype = torch.float32,
                   embedding: bool = True) -> list[str]:
    """Replace every nn.Linear (except ``skip``) in place; returns the replaced names.

    When the output layer is quantized it no longer shares the embedding's storage; ``embedding``
    then stores the embedding as int8 rows too (else it stays float)."""
    skip = list(skip or [])
    if not lm_head:
        skip.append("lm_head")
    names = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or any(name == s or name.endswith("." + s) for s in skip):
            continue
        if module.in_features % 8 or module.weight.device.type != "cpu":
            continue  # kernels want aligned rows; GPU models use bitsandbytes instead
        q, s = quantize_weight(module.weight, bits)
        bias = None if module.bias is None else module.bias.detach()
        model.set_submodule(name, make_linear(mode, q, s, bias, compute_dtype))
        names.append(name)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embedding and emb is not None and isinstance(emb, nn.Embedding) and "lm_head" in names:
        # The output layer no longer shares the embedding's storage: keep the embedding int8 as well.
        emb_name = next(n for n, m in model.named_modules() if m is emb)
        q, s = quantize_weight(emb.weight, max(bits, 8))
        model.set_submodule(emb_name, Int8Embedding(q, s))
        names.append(emb_name)
    return names


def footprint_bytes(model: nn.Module) -> int:
    """Bytes held by parameters, buffers and packed int8 weights (each storage counted once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key in seen or t.device.type == "meta":
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    for m in model.modules():
        if isinstance(m, Int8DynamicLinear):
            total += m.weight_bytes
    return total


def save_int8(model: nn.Module, tokenizer, folder: Path, mode: str, facts: dict) -> None:
    """Write the int8 checkpoint (see module docstring) plus config, tokenizer, generation config."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    quantized, kinds = [], {}
    for name, module in model.named_modules():
        if isinstance(module, QUANT_LINEARS):
            quantized.append(name)
            kinds[name] = "embedding" if isinstance(module, Int8Embedding) else mode
            for key, value in module.int8_state().items():
                state[f"{name}.{key}"] = value.contiguous()
    ptrs: dict[int, str] = {}
    tied = {}
    for key, value in model.state_dict().items():
        if any(key.startswith(q + ".") for q in quantized):
            continue
        ptr = value.untyped_storage().data_ptr()
        if ptr in ptrs:  # tied weights (lm_head = embed_tokens): stored once
            tied[key] = ptrs[ptr]
            continue
        ptrs[ptr] = key
        state[key] = value.detach().contiguous()
    save_file(state, str(folder / "int8.safetensors"), metadata={"format": FORMAT})
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "int8.json").write_text(json.dumps(
        {"format": FORMAT, "mode": mode, "quantized": quantized, "modules": kinds, "tied": tied, **facts}, indent=2))


def load_int8(folder: Path, mode: str | None = None, compute_dtype: torch.dtype = torch.float32) -> nn.Module:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    meta = json.loads((folder / "int8.json").read_text())
    mode = mode or meta["mode"]
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = load_file(str(folder / "int8.safetensors"))
    for name in meta["quantized"]:
        kind = meta.get("modules", {}).get(name, mode)
        args = (state.pop(f"{name}.qweight"), state.pop(f"{name}.qscale"), state.pop(f"{name}.bias", None))
        module = Int8Embedding(*args) if kind == "embedding" else make_linear(mode, *args, compute_dtype)
        model.set_submodule(name, module)
    for key, source in meta.get("tied", {}).items():
        state[key] = state[source]
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected:
        raise ValueError(f"unexpected tensors in int8.safetensors: {unexpected[:5]}")
    missing = [k for k in missing if not any(k.startswith(q + ".") for q in meta["quantized"])]
    for key in missing:
        raise ValueError(f"int8.safetensors lacks {key}")
    _rebuild_meta_buffers(model)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()


def _rebuild_meta_buffers(model: nn.Module) -> None:
    """Non-persistent buffers (rotary ``inv_freq``, Gemma's ``embed_scale``) are computed at init, so the
    meta skeleton lacks them. Rotary modules are built again from the config; any other module's
    meta buffers are allocated and filled by the model's own ``_init_weights``, with every loaded
    tensor marked initialised so nothing else is touched."""
    for name, module in list(model.named_modules()):
        if not any(b.device.type == "meta" for b in module.buffers(recurse=False)):
            continue
        try:
            fresh = type(module)(config=model.config)
        except TypeError:
            fresh = None
        if fresh is not None and not any(b.device.type == "meta" for b in fresh.buffers()):
            model.set_submodule(name, fresh)
            continue
        _init_buffers(model, name, module)


def _init_buffers(model: nn.Module, name: str, module: nn.Module) -> None:
    init = getattr(model, "_init_weights", None)
    for key, buffer in list(module.named_buffers(recurse=False)):
        if buffer.device.type == "meta":
            module.register_buffer(key, torch.empty_like(buffer, device="cpu"),
                                   persistent=key not in module._non_persistent_buffers_set)
    flagged = [t for t in list(module.parameters(recurse=False)) + [b for k, b in module.named_buffers(recurse=False)
               if k not in module._non_persistent_buffers_set]]
    for t in flagged:
        t._is_hf_initialized = True
    try:
        if init is None:
            raise TypeError("the model has no _init_weights")
        init(module)
    except Exception as exc:  # noqa: BLE001 - any failure here means the module cannot be rebuilt
        raise ValueError(f"cannot rebuild {name} ({type(module).__name__}) outside the meta device") from exc
    finally:
        for t in flagged:
            del t._is_hf_initialized
