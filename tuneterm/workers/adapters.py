"""PEFT adapters: fold one into its base, or attach several to one base model (one helper each,
used by training outputs, sequential stages, the server and evals)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def merge_adapter(adapter: Path, base_path: Path, target: Path, tokenizer: Any = None) -> None:
    """Fold ``adapter`` into a full-precision copy of ``base_path`` and save it to ``target`` (works for
    qlora adapters too). The tokenizer saved with it is ``tokenizer``, else the adapter's, else the
    base's. Written to ``target.tmp`` first, so ``target`` is whole or absent."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, base_path, target = Path(adapter), Path(base_path), Path(target)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    if tokenizer is None:
        source = adapter if (adapter / "tokenizer_config.json").is_file() else base_path
        tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def add_adapter(model: Any, folder: Path | str, name: str) -> Any:
    """``model`` with the adapter at ``folder`` loaded as ``name`` (the first one wraps the base in a
    PeftModel, later ones share it; switch with ``model.set_adapter(name)``). Returns the model."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=name)
        return model
    return PeftModel.from_pretrained(model, str(folder), adapter_name=name)
