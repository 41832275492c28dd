"""Variants of one base model in one process: the base and LoRA adapters over it.

``load_variants(refs)`` groups model references by the weights they stand on: an adapter
(``job:ID`` of a LoRA job, or an adapter folder) joins the group of its base, and every group
holds one copy of the base weights, with each adapter loaded into one PEFT model under its own
name. Generation in a group is serialized by a lock: PEFT's active adapter is state of the
model, so two requests on one group run one after the other (never interleaved), and requests
on different groups run at the same time.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tuneterm.core.errors import InputError
from tuneterm.workers.engine import GenerationParams, GenerationStats, stream_chat


@dataclass
class VariantGroup:
    """One base model in memory and the adapters loaded over it."""

    key: str  # the resolved base folder
    model: Any
    tokenizer: Any
    adapters: dict[str, str] = field(default_factory=dict)  # adapter name -> folder
    lock: threading.Lock = field(default_factory=threading.Lock)
    load_seconds: float = 0.0

    @property
    def is_peft(self) -> bool:
        return bool(self.adapters)

    def memory_bytes(self) -> int:
        total = 0
        for p in self.model.parameters():
            total += p.numel() * p.element_size()
        for b in self.model.buffers():
            total += b.numel() * b.element_size()
        return total

    def stream(
        self,
        adapter: str | None,
        messages: list[dict],
        params: GenerationParams,
        stats: GenerationStats,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Generate for one variant, holding the group's lock for the whole answer."""
        with self.lock:
            if cancel is not None and cancel.is_set():
                return
            if self.is_peft and adapter is None:
                ctx = self.model.disable_adapter()
            else:
                if adapter is not None:
                    self.model.set_adapter(adapter)
                ctx = nullcontext()
            with ctx:
                yield from stream_chat(self.model, self.tokenizer, messages, params, stats, cancel)


@dataclass
class Variant:
    """A model id the server answers to: a group and the adapter to activate (None = base)."""

    model_id: str
    group: VariantGroup
    adapter: str | None
    facts: dict = field(default_factory=dict)


def load_variants(refs: list[str], dtype: str | None = None, device: str | None = None) -> dict[str, Variant]:
    """Load every reference, sharing base weights between a base and its adapters."""
    from tuneterm.workers.loading import load, local_path

    if len(set(refs)) != len(refs):
        raise InputError("a model reference is listed twice", [("references", ", ".join(refs))])
    plans: list[tuple[str, str, Path | None, dict]] = []  # (ref, group key, adapter folder, facts)
    for ref in refs:
        path, facts = local_path(ref)
        if facts.get("adapter"):
            if not facts.get("base"):
                raise InputError(
                    f"adapter {ref} does not name its base model",
                    [("folder", str(path))],
                    "set base_model_name_or_path in adapter_config.json",
                )
            base_path, _ = local_path(facts["base"])
            plans.append((ref, str(base_path.resolve()), path, facts))
        elif facts.get("quant"):
            plans.append((ref, f"quantized:{path}", None, facts))
        else:
            plans.append((ref, str(Path(path).resolve()), None, facts))

    groups: dict[str, VariantGroup] = {}
    variants: dict[str, Variant] = {}
    for ref, key, adapter_dir, facts in plans:
        group = groups.get(key)
        if group is None:
            started = time.perf_counter()
            if key.startswith("quantized:"):
                loaded = load(ref, dtype=dtype, device=device)
            else:
                loaded = load(key, dtype=dtype, device=device)
            group = VariantGroup(key, loaded.model, loaded.tokenizer, load_seconds=time.perf_counter() - started)
            groups[key] = group
        adapter_name = None
        if adapter_dir is not None:
            adapter_name = f"variant{len(group.adapters)}"
            _add_adapter(group, adapter_dir, adapter_name, ref)
        variants[ref] = Variant(ref, group, adapter_name, facts)
    return variants


def _add_adapter(group: VariantGroup, folder: Path, name: str, ref: str) -> None:
    from peft import PeftModel

    from tuneterm.core.errors import ModelLoadError

    try:
        if not group.adapters:
            group.model = PeftModel.from_pretrained(group.model, folder, adapter_name=name)
        else:
            group.model.load_adapter(folder, adapter_name=name)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the adapter {ref}",
            [("folder", str(folder)), ("problem", f"{type(exc).__name__}: {str(exc)[:300]}")],
            "check that the adapter was trained on this base model",
        ) from exc
    group.model.eval()
    group.adapters[name] = str(folder)
