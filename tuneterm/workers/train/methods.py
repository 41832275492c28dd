"""The four ways to train: full, freeze (selective layers), lora, qlora.

Each takes the base model's folder and the resolved config and returns the model ready for
``transformers.Trainer``, with exactly the intended parameters trainable. PEFT and
bitsandbytes configs are passed through, not reinvented.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tuneterm.core.errors import ConfigError


def start(ctx, what: str = "training") -> Path:
    """Seed, threads and device for this process; the base model's local folder.

    Shared by every train-job method: ``train.seed``, ``train.cpu_threads``, waiting for the GPU
    when another job holds it, and the rule that the base must be full weights, not an adapter.
    """
    from tuneterm.workers.loading import local_path

    config = ctx.config
    t = config.get("train", {})
    torch.manual_seed(int(t.get("seed", 42)))
    threads = int(t.get("cpu_threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        ctx.wait_for_device(f"cuda:{ctx.local_rank}")
    base_path, facts = local_path(config["model"])
    if facts.get("adapter"):
        raise ConfigError(f"{what} on top of an adapter is not supported yet", [("model", config["model"])],
                          "merge it first (lora.merge=true) and train job:ID")
    return base_path


def weights_dtype(config: dict) -> torch.dtype:
    """``train.precision``: auto is bf16 (fp16 on GPUs without bf16) on CUDA and fp32 on the CPU.

    Weights are loaded in that precision (a 7B model is 14 GB, not 28). Adapters and the trained
    blocks of freeze runs are kept in fp32 (:func:`upcast_trainable`) so AdamW updates do not round
    away; a full run trains the whole model in that precision (as torchtune does; fp32 master
    weights with ``train.precision=fp32``).
    """
    from tuneterm.workers.device import resolve_dtype

    precision = str(config.get("train", {}).get("precision", "auto"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_dtype({"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(precision, precision),
                         device)


def load_base(path: Path, dtype: torch.dtype = torch.float32, quant: dict | None = None, local_rank: int = 0):
    """The base model, straight onto this rank's GPU (never every rank on cuda:0, never a host copy first)."""
    from tuneterm.workers.device import resolve_dtype, training_device_map

    kwargs: dict = {"dtype": dtype, "device_map": training_device_map(local_rank)}
    if quant:
        from transformers import BitsAndBytesConfig

        device = "cuda" if torch.cuda.is_available() else "cpu"
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant.get("quant_type", "nf4"),
            bnb_4bit_compute_dtype=resolve_dtype(quant.get("compute_dtype", "auto"), device),
            bnb_4bit_use_double_quant=bool(quant.get("double_quant", True)),
        )
        kwargs["device_map"] = training_device_map(local_rank) or "cpu"
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def upcast_trainable(model):
    """Trained parameters in fp32 (master weights) when the base loaded in half precision."""
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()
    return model


def blocks(model) -> list:
    """The transformer blocks (decoder layers) of a causal LM."""
    inner = getattr(model, model.base_model_prefix, model)
    for attr in ("layers", "h", "blocks"):
        found = getattr(inner, attr, None)
        if isinstance(found, torch.nn.ModuleList):
            return list(found)
    raise ConfigError("cannot find the transformer blocks of this model",
                      [("model class", type(model).__name__)], "use method=lora or full")


def apply_full(model, config: dict):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def apply_freeze(model, config: dict):
    """Train only the last ``freeze.last_n_blocks`` blocks and the modules matching ``freeze.modules``."""
    opts = config.get("freeze", {})
    last_n = int(opts.get("last_n_blocks", 0))
    patterns = list(opts.get("modules", []))
    for p in model.parameters():
        p.requires_grad_(False)
    layer_list = blocks(model)
    if last_n > len(layer_list):
        raise ConfigError("freeze.last_n_blocks is larger than the model",
                          [("freeze.last_n_blocks", str(last_n)), ("blocks", str(len(layer_list)))])
    for block in layer_list[len(layer_list) - last_n:] if last_n else []:
        for p in block.parameters():
            p.requires_grad_(True)
    matched = set()
    for name, p in model.named_parameters():
        for pat in patterns:
            if fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(name, pat + ".*") or pat in name.split(".")[:-1]:
                p.requires_grad_(True)
                matched.add(pat)
    missing = [p for p in patterns if p not in matched]
    if missing:
        sample = ", ".join(n for n, _ in list(model.named_parameters())[:4])
        raise ConfigError("freeze.modules names no parameter", [("unmatched", ", ".join(missing)),
                                                                 ("parameter names look like", sample)],
                          "use glob patterns over parameter names, e.g. 'model.norm' or '*.mlp.*'")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("freeze leaves nothing to train", hint="set freeze.last_n_blocks or freeze.modules")
    return model


def lora_config(config: dict):
    from peft import LoraConfig

    opts = config.get("lora", {})
    targets = opts.get("target_modules", "all-linear")
    return LoraConfig(
        r=int(opts.get("r", 16)), lora_alpha=int(opts.get("alpha", 32)),
        lora_dropout=float(opts.get("dropout", 0.0)),
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none", task_type="CAUSAL_LM",
    )


def apply_lora(model, config: dict):
    from peft import get_peft_model

    return get_peft_model(model, lora_config(config))


def apply_qlora(model, config: dict):
    from peft import get_peft_model, prepare_model_for_kbit_training

    gc = bool(config.get("train", {}).get("gradient_checkpointing", False))
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc)
    return get_peft_model(model, lora_config(config))


def prepare(method: str, base_path: Path, config: dict, dtype: torch.dtype | None = None, local_rank: int = 0):
    """Load the base (in ``dtype``, default :func:`weights_dtype`) and make the method's parameters
    trainable, in fp32."""
    dtype = dtype or weights_dtype(config)
    if method == "qlora":
        model = load_base(base_path, dtype, quant=config.get("quant", {}), local_rank=local_rank)
        return upcast_trainable(apply_qlora(model, config))
    model = load_base(base_path, dtype, local_rank=local_rank)
    apply = {"full": apply_full, "freeze": apply_freeze, "lora": apply_lora}.get(method)
    if apply is None:
        raise ConfigError(f"unknown method {method!r}", hint="use full, freeze, lora or qlora")
    model = apply(model, config)
    return model if method == "full" else upcast_trainable(model)


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
