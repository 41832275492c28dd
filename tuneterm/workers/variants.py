"""Variants of one base model in one process: the base and LoRA adapters over it.

``load_variants(refs)`` groups model references by the weights they stand on: an adapter
(``job:ID`` of a LoRA job, or an adapter folder) joins the group of its base, and every group
holds one copy of the base weights, with each adapter loaded into one PEFT model under its own
name. A few-shot reference (``fewshot:K:POOL@REF``) joins REF's group too: the same weights,
with examples from POOL put before the conversation. A classifier artifact (a ``feature`` or ``cls_head``
job) loads as a :class:`tuneterm.workers.served_classifier.ServedClassifier` in a group of its own: it
answers with a label, without a decode loop.

Each group generates through one :class:`tuneterm.workers.batcher.Batcher`: requests to the
group's variants (the base and its adapters) are decoded together, one forward pass per step
with a LoRA adapter per row; requests on different groups run at the same time. A quantized
artifact that loads with the lean decode loop (``quantize.fastgen``) answers one request at a
time through it instead.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from tuneterm.core import modelref, trained_prompt
from tuneterm.core.errors import InputError
from tuneterm.core.generation import GenerationParams, GenerationStats
from tuneterm.workers import llamacpp
from tuneterm.workers.batcher import Batcher


@dataclass
class VariantGroup:
    """One base model in memory and the adapters loaded over it."""

    key: str  # the resolved base folder
    model: Any
    tokenizer: Any
    adapters: dict[str, str] = field(default_factory=dict)  # adapter name -> folder
    lock: threading.Lock = field(default_factory=threading.Lock)
    load_seconds: float = 0.0
    batcher: Batcher | None = None  # made at the first request, once every adapter is loaded

    @property
    def is_peft(self) -> bool:
        return bool(self.adapters)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the group's decode loop and, for a GGUF file, its llama.cpp worker process."""
        if self.batcher is not None:
            self.batcher.close(timeout=timeout)
        if getattr(self.model, "is_llamacpp", False):
            self.model.close()

    def memory_bytes(self) -> int:
        if getattr(self.model, "is_llamacpp", False):
            return self.model.memory_bytes()
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
        logprobs: Any = None,
        constraint: Any = None,
    ) -> Iterator[str]:
        """Generate for one variant; decoded in one batch with the group's other requests.
        ``logprobs`` (a :class:`tuneterm.workers.batcher.TokenLog`) is filled as tokens are picked;
        ``constraint`` masks each step's logits (structured output)."""
        if getattr(self.model, "is_llamacpp", False):  # a GGUF file in a llama.cpp worker
            from tuneterm.workers.llamacpp import JsonSchemaGrammar

            if constraint is not None and not isinstance(constraint, JsonSchemaGrammar):
                raise InputError("a llama.cpp model takes structured output as a JSON schema grammar "
                                 "(LlamaCppEngine.json_schema_grammar)", [("model", self.key)])
            return self.model.stream(messages, params, stats, cancel, logprobs=logprobs, grammar=constraint)
        if self.lean_loop:
            if logprobs is not None or constraint is not None:
                raise InputError("log-probabilities and structured output are not available from the lean "
                                 "decode loop", [("model", self.key)])
            return self._stream_serial(messages, params, stats, cancel)
        with self.lock:
            if self.batcher is None:
                self.batcher = Batcher(self.model, self.tokenizer, mixed_adapters=self.is_peft)
        return self.batcher.stream(messages, params, stats, adapter, cancel, logprobs=logprobs, constraint=constraint)

    def stream_ids(self, adapter: str | None, prompt_ids: list[int], params: GenerationParams,
                   stats: GenerationStats, cancel: threading.Event | None = None, constraint: Any = None) -> Iterator[str]:
        """Generate after a prompt given as token ids (``/v1/completions``, a template with tools)."""
        return self._batcher().stream([], params, stats, adapter, cancel, prompt_ids=prompt_ids, constraint=constraint)

    def score(self, adapter: str | None, ids: list[int], top: int = 0) -> list[tuple[float | None, dict]]:
        """Per-token log-probabilities of ``ids`` (see :meth:`Batcher.score`)."""
        return self._batcher().score(ids, adapter, top)

    def _batcher(self) -> Batcher:
        if self.lean_loop:
            raise InputError("raw completions and scoring are not available for a model served by the lean "
                             "decode loop", [("model", self.key)], "use /v1/chat/completions")
        with self.lock:
            if self.batcher is None:
                self.batcher = Batcher(self.model, self.tokenizer, mixed_adapters=self.is_peft)
        return self.batcher

    @property
    def lean_loop(self) -> bool:
        """A quantized artifact whose ``generate`` runs the quantization issue's lean decode loop
        (``quantize.fastgen.install``): one sequence at a time, faster than a batch of one."""
        return getattr(self.model, "_tuneterm_fast", None) is not None and not self.adapters

    def _stream_serial(self, messages: list[dict], params: GenerationParams, stats: GenerationStats,
                       cancel: threading.Event | None) -> Iterator[str]:
        from tuneterm.workers.engine import stream_chat

        with self.lock:  # the loop's static KV cache holds one answer at a time
            if cancel is not None and cancel.is_set():
                return
            yield from stream_chat(self.model, self.tokenizer, messages, params, stats, cancel)


@dataclass
class ServedModel:
    """A model id the server answers to: a group and the adapter to activate (None = base)."""

    model_id: str
    group: VariantGroup
    adapter: str | None
    facts: dict = field(default_factory=dict)
    fewshot: Any = None  # a tuneterm.core.fewshot.FewShotSpec, for fewshot:K:POOL@REF
    pool: list | None = None  # its examples, read once
    trained: Any = None  # a tuneterm.core.trained_prompt.TrainedPrompt: used when a request has no system message
    is_classifier: ClassVar[bool] = False  # a classifier artifact answers with a label (served_classifier.py)

    def label(self) -> str:
        """What runs this variant, for a column's title: the engine, and for GGUF files the quant type and size."""
        if getattr(self.group.model, "is_llamacpp", False):
            return self.group.model.label()
        return str(self.facts.get("engine") or "")  # plain torch models need no note

    def engine(self) -> str:
        """What runs this variant, for ``/v1/models``: the label, or torch (and its decode loop)."""
        label = self.label()
        if label:
            return label
        decoder = getattr(self.group.model, "_tuneterm_fast", None)
        if decoder is not None and self.group.lean_loop:
            threads = getattr(decoder, "threads", None)
            return "torch, lean decode loop" + (f", {threads} decode threads" if threads else "")
        return "torch"

    def prepare(self, messages: list[dict]) -> list[dict]:
        """The messages the model sees: the system prompt its job was trained with when the request has
        none, and a few-shot variant's examples before the conversation."""
        messages = trained_prompt.apply(self.trained, messages)
        if self.fewshot is None:
            return messages
        from tuneterm.core.chat_client import with_fewshot

        return with_fewshot(self.fewshot, messages, self.pool)

    def stream(self, messages: list[dict], params: GenerationParams, stats: GenerationStats | None = None,
               cancel: threading.Event | None = None, logprobs: Any = None, constraint: Any = None) -> Iterator[str]:
        stats = stats if stats is not None else GenerationStats()
        if logprobs is not None or constraint is not None:
            return self.group.stream(self.adapter, self.prepare(messages), params, stats, cancel, logprobs=logprobs,
                                     constraint=constraint)
        return self.group.stream(self.adapter, self.prepare(messages), params, stats, cancel)

    def stream_ids(self, prompt_ids: list[int], params: GenerationParams, stats: GenerationStats,
                   cancel: threading.Event | None = None, constraint: Any = None) -> Iterator[str]:
        return self.group.stream_ids(self.adapter, prompt_ids, params, stats, cancel, constraint=constraint)

    def score(self, ids: list[int], top: int = 0) -> list[tuple[float | None, dict]]:
        return self.group.score(self.adapter, ids, top)


def load_variants(refs: list[str], dtype: str | None = None, device: str | None = None) -> dict[str, ServedModel]:
    """Load every reference, sharing base weights between a base and its adapters."""
    from tuneterm.workers.loading import load, local_path

    if len(set(refs)) != len(refs):
        raise InputError("a model reference is listed twice", [("references", ", ".join(refs))])
    shots: dict[str, tuple[Any, list]] = {}  # few-shot ref -> (spec, pool); it loads as its inner ref
    inner: dict[str, str] = {}
    for ref in refs:
        if modelref.parse(ref).kind == "fewshot":
            from tuneterm.core import fewshot

            spec = fewshot.parse_spec(ref)
            if modelref.parse(spec.base).kind == "fewshot":
                raise InputError("a few-shot reference cannot wrap another", [("reference", ref)])
            shots[ref] = (spec, fewshot.load_pool(spec.pool))
            inner[ref] = spec.base
    plans: list[tuple[str, str, Path | None, dict]] = []  # (ref, group key, adapter folder, facts)
    seen_dirs: dict[tuple[str, str], str] = {}  # (group, adapter folder) -> adapter name, loaded once
    for ref in refs:
        gguf_file = llamacpp.engine_file(inner.get(ref, ref))
        if gguf_file is not None and llamacpp.available():  # run the file as it is, in llama.cpp
            plans.append((ref, f"llamacpp:{gguf_file}", None, {"engine": "llama.cpp", "gguf": str(gguf_file)}))
            continue
        path, facts = local_path(inner.get(ref, ref))
        if facts.get("artifact") == "classifier":  # answers with a label: no causal LM, no decode loop
            if ref in shots:
                raise InputError("a few-shot reference needs a generative model, not a classifier",
                                 [("reference", ref)], f"serve the classifier on its own: {inner[ref]}")
            plans.append((ref, f"classifier:{path}", None, facts))
            continue
        if gguf_file is not None:
            llamacpp.warn_fallback(ref, gguf_file)
            facts = {**facts, "engine": f"gguf via torch, fp32, {llamacpp.quant_label(gguf_file)}"}
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
    variants: dict[str, ServedModel] = {}
    for ref, key, adapter_dir, facts in plans:
        group = groups.get(key)
        if group is None:
            started = time.perf_counter()
            if key.startswith("classifier:"):
                from tuneterm.workers.served_classifier import ClassifierGroup

                group = ClassifierGroup.load(Path(key[len("classifier:"):]), dtype=dtype, device=device)
            elif key.startswith("llamacpp:"):
                engine = llamacpp.LlamaCppEngine(Path(facts["gguf"]))
                group = VariantGroup(key, engine, None, load_seconds=time.perf_counter() - started)
            else:
                if key.startswith("quantized:"):
                    loaded = load(inner.get(ref, ref), dtype=dtype, device=device)
                else:
                    loaded = load(key, dtype=dtype, device=device)
                group = VariantGroup(key, loaded.model, loaded.tokenizer, load_seconds=time.perf_counter() - started)
            groups[key] = group
        adapter_name = None
        if adapter_dir is not None:
            adapter_name = seen_dirs.get((key, str(adapter_dir)))
            if adapter_name is None:  # a few-shot ref over an adapter another ref loads shares it
                adapter_name = f"variant{len(group.adapters)}"
                _add_adapter(group, adapter_dir, adapter_name, ref)
                seen_dirs[(key, str(adapter_dir))] = adapter_name
        if getattr(group, "is_classifier", False):
            from tuneterm.workers.served_classifier import ServedClassifier

            variants[ref] = ServedClassifier(ref, group, None, facts)
            continue
        spec, pool = shots.get(ref, (None, None))
        variants[ref] = ServedModel(ref, group, adapter_name, facts, fewshot=spec, pool=pool,
                                    trained=trained_prompt.for_ref(ref))
    return variants


def _add_adapter(group: VariantGroup, folder: Path, name: str, ref: str) -> None:
    from tuneterm.core.errors import ModelLoadError
    from tuneterm.workers.adapters import add_adapter

    try:
        group.model = add_adapter(group.model, folder, name)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the adapter {ref}",
            [("folder", str(folder)), ("problem", f"{type(exc).__name__}: {str(exc)[:300]}")],
            "check that the adapter was trained on this base model",
        ) from exc
    group.model.eval()
    group.adapters[name] = str(folder)
