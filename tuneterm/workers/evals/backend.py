"""Local eval backend: batched generation and log-likelihood scoring on one loaded base model.

- Generation: prompts sorted by length (longest first), left-padded, greedy by default; each
  output is cut at EOS and at the stop strings, so the text does not depend on the batch.
- Log-likelihood: (context, continuation) token pairs encoded as lm-evaluation-harness does
  (trailing spaces of the context move to the continuation; the continuation's tokens are
  those of ``tok(context + continuation)`` after ``len(tok(context))``), right-padded batches
  sorted by length, summed log-probabilities of the continuation tokens.
- A prefix that all prompts of a batch share (a long system prompt, few-shot examples) is computed
  once per call and its key/value cache reused by every row (``tuneterm.workers.evals.prefix``),
  where that is exact for the model; ``share_prefix=False`` turns it off.
- One base model serves its LoRA adapters: ``set_adapter`` per variant, ``disable_adapter``
  for the base itself, instead of loading the base again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from tuneterm.workers.engine import _eos_ids  # one definition of the stop tokens

from tuneterm.core import modelref
from tuneterm.core.evals.extract import truncate_at_stop
from tuneterm.core.workspace import workspace
from tuneterm.workers import loading
from tuneterm.workers.adapters import add_adapter
from tuneterm.workers.evals import prefix
from tuneterm.workers.evals.prefix import PrefixCache

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pkl")
Progress = Callable[[int], None]


def _sha_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def folder_digest(folder: Path) -> tuple[str, int]:
    """(digest of the weight files, their total size) of a model or adapter folder."""
    models_dir = workspace().models_dir
    parts, size = [], 0
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES) if Path(folder).is_dir() else [Path(folder)]
    for p in files:
        parts.append((p.name, modelref.file_digest(p, models_dir)))
        size += p.stat().st_size
    for name in ("config.json", "adapter_config.json", "quantization_config.json"):
        cfg = Path(folder) / name
        if cfg.is_file():
            parts.append((name, _sha_text(cfg.read_text())))
    return _sha_text(json.dumps(parts)), size


def tokenizer_digest(tokenizer: Any) -> str:
    vocab = tokenizer.get_vocab()
    blob = json.dumps({"vocab": sorted(vocab.items(), key=lambda kv: kv[1])[:: max(1, len(vocab) // 4096)],
                       "n": len(vocab), "cls": type(tokenizer).__name__,
                       "special": tokenizer.all_special_tokens,
                       "chat_template": getattr(tokenizer, "chat_template", None) or ""}, sort_keys=True)
    return _sha_text(blob)


@dataclass
class LocalWeights:
    """The weights of one local eval variant: a base folder plus an optional adapter, quantization or classifier."""

    vid: str
    ref: str
    base_path: Path
    adapter_path: Path | None = None
    quant: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    classifier_path: Path | None = None  # a feature classifier or a classification head over the base

    @property
    def group(self) -> str:
        """Variants with the same group share one loaded model."""
        if self.quant:
            return f"quant:{self.ref}"
        return str(self.base_path)


def resolve_local(vid: str, ref: str) -> LocalWeights:
    from tuneterm.workers import llamacpp

    gguf_file = llamacpp.engine_file(ref)
    if gguf_file is not None and llamacpp.available():  # scored on the file itself (llamacpp_eval.LlamaCppGroup)
        return LocalWeights(vid, ref, gguf_file, quant={"method": "gguf", "engine": "llama.cpp"},
                            facts={"engine": "llama.cpp", "gguf_file": str(gguf_file)})
    path, facts = loading.local_path(ref)
    if facts.get("artifact") == "classifier":
        base_path, _ = loading.local_path(str(facts["base"]))
        return LocalWeights(vid, ref, Path(base_path), classifier_path=Path(path), facts=facts)
    if facts.get("adapter"):
        base_path, _ = loading.local_path(str(facts["base"]))
        return LocalWeights(vid, ref, Path(base_path), adapter_path=Path(path), facts=facts)
    return LocalWeights(vid, ref, Path(path), quant=dict(facts.get("quant") or {}), facts=facts)


class LocalGroup:
    """A loaded model (a base, maybe with adapters, or a quantized model) serving its variants."""

    def __init__(self, variants: list[LocalWeights], dtype: str | None = None, device: str | None = None,
                 share_prefix: bool = True) -> None:
        first = variants[0]
        self.variants = {v.vid: v for v in variants}
        started = time.perf_counter()
        if first.quant:
            loaded = loading.load(first.ref, dtype=dtype, device=device)
        else:
            loaded = loading.load(str(first.base_path), dtype=dtype, device=device)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.adapters: dict[str, str] = {}
        for v in variants:
            if v.adapter_path is None:
                continue
            name = f"a{len(self.adapters)}"
            self.model = add_adapter(self.model, v.adapter_path, name)
            self.adapters[v.vid] = name
        self.classifiers: dict[str, Any] = {}  # vid -> tuneterm.workers.classifier.Classifier
        for v in variants:
            if v.classifier_path is not None:
                from tuneterm.workers.classifier import Classifier, load_classifier

                # a feature classifier reads this group's model (no second copy of the base)
                self.classifiers[v.vid] = Classifier(load_classifier(v.classifier_path, dtype, device), backbone=self)
        self.model.eval()
        self.load_seconds = time.perf_counter() - started
        self.device = next(self.model.parameters()).device
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(_eos_ids(self.model, self.tokenizer))
        self._tok_digest = tokenizer_digest(self.tokenizer)
        self._keep_ok = True
        self._base_digest = folder_digest(first.base_path)
        # a prefix all rows of a batch share (system prompt, few-shot examples) is computed once per call
        self.share_prefix = share_prefix and not first.quant and prefix.usable(self.model)
        self.prefixes_computed = 0  # prefix caches laid down, over all calls (tests, benchmarks)

    # --- identity ---------------------------------------------------------------------------

    def fingerprint(self, vid: str) -> dict:
        v = self.variants[vid]
        base_digest, base_size = self._base_digest
        out = {"weights": base_digest, "tokenizer": self._tok_digest, "quant": v.quant or None,
               "adapter": None, "size_bytes": base_size}
        out["kind"] = "quantized" if v.quant else "model"
        if v.adapter_path is not None:
            digest, size = folder_digest(v.adapter_path)
            out.update(adapter=digest, size_bytes=base_size + size, adapter_bytes=size, kind="adapter")
        out["classifier"] = None
        if v.classifier_path is not None:
            blob = self.classifiers[vid].blob
            digest, size = folder_digest(v.classifier_path)
            out.update(classifier=_sha_text(json.dumps([digest, blob.get("layer"), blob.get("pooling")])),
                       size_bytes=base_size + size, kind="classifier")
        out["id"] = _sha_text(json.dumps({k: out[k] for k in ("weights", "tokenizer", "quant", "adapter", "classifier")},
                                         sort_keys=True, default=str))
        return out

    def is_classifier(self, vid: str) -> bool:
        return vid in self.classifiers

    def classify(self, vid: str, texts: list[str], batch_size: int = 16) -> list[str]:
        """The classifier's labels for ``texts``, by the one predict path that ``tuneterm chat`` and
        ``tuneterm serve`` use too (:meth:`tuneterm.workers.classifier.Classifier.predict`); a feature
        classifier reads the hidden states of this group's base (adapters off)."""
        with self.activate(vid):
            return self.classifiers[vid].predict(list(texts), batch_size)

    @contextlib.contextmanager
    def activate(self, vid: str) -> Iterator[None]:
        name = self.adapters.get(vid)
        if name is not None:
            self.model.set_adapter(name)
            yield
        elif self.adapters:
            with self.model.disable_adapter():
                yield
        else:
            yield

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- prompts -----------------------------------------------------------------------------

    def render_prompt(self, prompt: Any) -> str:
        """A chat (list of messages) through the chat template, or plain context text as is."""
        if isinstance(prompt, list):
            from tuneterm.core.chat_templates import prepare

            return self.tokenizer.apply_chat_template(prepare(self.tokenizer, prompt), add_generation_prompt=True,
                                                      tokenize=False)
        return prompt

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prefix_token(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-evaluation-harness's ``_encode_pair``."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        cont = whole[len(ctx):]
        if not ctx:
            ctx = [self.prefix_token()]
        return ctx, cont

    # --- generation --------------------------------------------------------------------------

    def generate(self, prompts: list[str], gen: dict, batch_size: int,
                 on_batch: Callable[[list[int], list[dict]], None],
                 on_step: Callable[[int, int, int], None] | None = None) -> None:
        """Generate for rendered prompts; ``on_batch(indices, results)`` after each batch, and, while a
        batch of several rows runs, ``on_step(finished, step, steps)`` after each new token: ``finished``
        more of its rows are done (an end-of-sequence token or a stop string), ``step`` of at most
        ``steps`` tokens made. A batch's progress moves with its rows and tokens, not only at its end;
        rows that run to ``max_new_tokens`` are never told as finished (``on_batch`` tells them)."""
        encoded = [self.encode(p) for p in prompts]
        if getattr(self.model, "_tuneterm_fast", None) is not None and not self.adapters:
            # a quantized artifact on the lean decode loop: one row at a time is what it serves (a
            # padded batch would fall back to transformers' generate, several times slower per row)
            batch_size = 1
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        shared = PrefixCache(self.model)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            rows = [encoded[i] for i in idx]
            # every row keeps at least one token of its own: generate starts from the uncached tokens
            n_pre = self._prefix_length(rows, min(len(r) for r in rows) - 1)
            tails = [r[n_pre:] for r in rows]
            tail_width = max(len(t) for t in tails)
            width = n_pre + tail_width  # [prefix][padding][row's own tokens]: positions as in a left-padded row
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, (r, t) in enumerate(zip(rows, tails)):
                ids[j, :n_pre] = torch.tensor(r[:n_pre], dtype=torch.long)
                mask[j, :n_pre] = 1
                ids[j, width - len(t):] = torch.tensor(t, dtype=torch.long)
                mask[j, width - len(t):] = 1
            kwargs: dict[str, Any] = dict(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                max_new_tokens=int(gen["max_new_tokens"]), pad_token_id=self.pad_id,
            )
            if n_pre:
                kwargs["cache"] = shared.cache_for(rows[0][:n_pre], len(rows), self.device)
            if gen.get("temperature", 0) > 0:
                kwargs.update(do_sample=True, temperature=gen["temperature"], top_p=gen.get("top_p", 1.0), top_k=0)
                torch.manual_seed(int(gen.get("seed") or 0))
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if gen.get("stop"):
                kwargs["stopping_criteria"] = _stop_criteria(self.tokenizer, list(gen["stop"]), width)
            if on_step is not None and len(rows) > 1:  # one row: its end is the batch's end
                kwargs["stopping_criteria"] = _rows_done(kwargs.get("stopping_criteria"), self.eos_ids,
                                                         on_step, int(gen["max_new_tokens"]))
            if gen.get("json_schema"):  # one grammar state per row, fresh for each batch
                from tuneterm.workers.constrained import logits_processor, vocab_size

                kwargs["logits_processor"] = logits_processor(gen["json_schema"], self.tokenizer,
                                                              vocab_size(self.model), "generation.json_schema")
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = self.model.generate(**kwargs)
            elapsed = time.perf_counter() - t0
            results = []
            for j, r in enumerate(rows):
                new = out[j, width:].tolist()
                kept: list[int] = []
                for tok in new:
                    if tok in self.eos_ids:
                        break
                    kept.append(tok)
                text = truncate_at_stop(self.tokenizer.decode(kept, skip_special_tokens=True), gen.get("stop") or [])
                results.append({"output": text, "prompt_tokens": len(r), "completion_tokens": len(kept),
                                "latency_s": round(elapsed, 4)})
            on_batch(idx, results)
        self.prefixes_computed += shared.computed

    def _prefix_length(self, rows: list[list[int]], most: int) -> int:
        """How many leading tokens the batch's ``rows`` share and may take from a prefix cache (0: none)."""
        if not self.share_prefix or len(rows) < 2:
            return 0
        n = min(prefix.shared_length(rows), most)
        return n if n >= prefix.MIN_PREFIX else 0

    # --- log-likelihood ----------------------------------------------------------------------

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]], batch_size: int,
                      on_batch: Callable[[list[int], list[dict]], None]) -> None:
        """Sum of log p(continuation | context) per request, and whether it is the greedy path."""
        max_len = self.max_length
        inputs = []
        for ctx, cont in requests:
            whole = (ctx + cont)[-(max_len + 1):]
            inputs.append(whole[:-1])
        order = sorted(range(len(requests)), key=lambda i: -len(inputs[i]))
        shared = PrefixCache(self.model)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            rows = [inputs[i] for i in idx]
            # the prefix ends before the first position that scores a continuation token
            n_pre = self._prefix_length(rows, min(min(len(r) - 1, len(r) - len(requests[i][1]))
                                                  for r, i in zip(rows, idx)))
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width - n_pre), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):
                ids[j, : len(r) - n_pre] = torch.tensor(r[n_pre:], dtype=torch.long)
                mask[j, : len(r)] = 1
            # Only the positions that score a continuation need logits: the vocabulary projection
            # and the log-softmax dominate small models' cost (rows are sorted, so this is close
            # to the longest continuation).
            keep = max(width - (len(rows[j]) - len(requests[i][1])) for j, i in enumerate(idx))
            t0 = time.perf_counter()
            with torch.inference_mode():
                cache = shared.cache_for(rows[0][:n_pre], len(rows), self.device) if n_pre else None
                logits = self._forward_last(ids.to(self.device), mask.to(self.device), keep, cache, n_pre)
                logprobs = torch.log_softmax(logits.float(), dim=-1)
            offset = width - logprobs.shape[1]
            results = []
            for j, i in enumerate(idx):
                cont = requests[i][1]
                n_in = len(rows[j])
                span = logprobs[j, n_in - len(cont) - offset: n_in - offset]
                target = torch.tensor(cont, dtype=torch.long, device=span.device)
                picked = span.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                greedy = bool((span.argmax(-1) == target).all())
                results.append({"logprob": float(picked.sum()), "greedy": greedy, "tokens": len(cont)})
            elapsed = time.perf_counter() - t0
            for r in results:
                r["latency_s"] = round(elapsed, 4)
            on_batch(idx, results)
        self.prefixes_computed += shared.computed

    def _forward_last(self, ids: torch.Tensor, mask: torch.Tensor, keep: int, cache: Any = None,
                      n_pre: int = 0) -> torch.Tensor:
        """Logits of the last ``keep`` positions (all of them for a model without ``logits_to_keep``).
        With ``cache`` (the first ``n_pre`` tokens' keys and values) ``ids`` are the tokens after them."""
        extra: dict[str, Any] = {}
        if cache is not None:
            positions = torch.arange(n_pre, n_pre + ids.shape[1], device=ids.device).unsqueeze(0)
            extra = {"cache": cache, "use_cache": True, "position_ids": positions.expand(ids.shape[0], -1)}
        if self._keep_ok:
            try:
                return self.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, **extra).logits
            except TypeError:
                self._keep_ok = False
        return self.model(input_ids=ids, attention_mask=mask, **extra).logits

    def rolling_requests(self, text: str) -> list[tuple[list[int], list[int]]]:
        """Disjoint windows over ``text``'s tokens, each with one token of context (lm-eval's rolling)."""
        tokens = self.encode(text)
        if not tokens:
            return []
        window = self.max_length
        reqs = []
        prev = self.prefix_token()
        for start in range(0, len(tokens), window):
            chunk = tokens[start : start + window]
            reqs.append(([prev], chunk))
            prev = chunk[-1]
        return reqs


def _stop_criteria(tokenizer: Any, stops: list[str], start: int) -> Any:
    """Stop a row once a stop string appears in its new text.

    Cheaper to build than transformers' ``stop_strings`` (which preprocesses the whole vocabulary
    on every ``generate`` call); only the last few tokens of each row are decoded per step. The
    output is cut at the first stop string afterwards either way, so the text is the same.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList

    window = max(len(s.encode()) for s in stops) + 2

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            tails = input_ids[:, max(start, input_ids.shape[1] - window):].tolist()
            done = [any(s in tokenizer.decode(t, skip_special_tokens=False) for s in stops) for t in tails]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnStrings()])


def _rows_done(inner: Any, eos_ids: set[int], on_step: Callable[[int, int, int], None], steps: int) -> Any:
    """Stopping criteria that stop exactly where ``inner`` does (none: never) and, after each new token,
    tell ``on_step(n, step, steps)``: ``n`` more rows have finished (their last token ends the sequence,
    or ``inner`` stopped them). Watching changes nothing generated: the decision stays ``inner``'s."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    finished: list[bool] = []
    made = [0]

    class RowsDone(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            if inner is not None:
                stop = inner(input_ids, scores, **kwargs)
            else:
                stop = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            if not finished:
                finished.extend([False] * input_ids.shape[0])
            ends = (stop.tolist(), input_ids[:, -1].tolist())
            newly = 0
            for j, (stopped, last) in enumerate(zip(*ends)):
                if not finished[j] and (stopped or last in eos_ids):
                    finished[j] = True
                    newly += 1
            made[0] += 1
            on_step(newly, made[0], steps)
            return stop

    return StoppingCriteriaList([RowsDone()])


def peak_memory_bytes() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
