"""Continuous batching for one base model: one decode loop steps every active request at once.

A :class:`Batcher` owns a model (plain, or a PEFT model holding several LoRA adapters) and one
daemon thread. Requests join between steps: the prompts that arrived since the last step are
prefilled together in one pass (left-padded, each row with its adapter), their KV caches merged into the batch's (left-padded to a common length, with an
attention mask and per-row positions), and from then on every step is one forward pass over all
active rows, each row with its own adapter (PEFT's mixed-adapter batches: ``adapter_names``,
``"__base__"`` for the base model), its own sampling settings and generator (seed), its own
``max_tokens`` and end. Token ids go to each request's queue; the consumer
(:func:`tuneterm.workers.engine.text_pieces`) turns them into text, finds stop strings and tells
the loop to drop the row through the request's ``halt`` event.
"""

from __future__ import annotations

import atexit
import os
import queue
import random
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from tuneterm.core.errors import RuntimeFailure
from tuneterm.core.generation import GenerationParams, GenerationStats
from tuneterm.workers.engine import encode_chat, eos_ids, text_pieces

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
_UNSET = object()
DEFAULT_MAX_BATCH = 32  # rows one decode step carries; `serve --max-running` defaults to it
PREFILL_TOKENS = 4096  # at most this many (padded) prompt tokens in one prefill pass
ADAPT_EVERY_S = 2.0  # with TUNETERM_ADAPT_THREADS (serve): how often the loop re-reads the machine's load
PREFIX_MIN = 16  # prompts prefilled together that begin with this many same tokens compute them once


@dataclass
class _Owner:
    """A row of the shared-prefix pass: one per adapter among the prompts that share it."""

    adapter: str | None


def _shared_prefix(reqs: list["_Request"]) -> int:
    """How many leading tokens every prompt of ``reqs`` has in common, leaving each at least one
    token of its own (its last logits come from the second pass)."""
    first = reqs[0].prompt[0]
    limit = min(r.prompt.shape[1] for r in reqs) - 1
    if limit <= 0:
        return 0
    same = torch.ones(limit, dtype=torch.bool, device=first.device)
    for req in reqs[1:]:
        same &= req.prompt[0, :limit] == first[:limit]
    differ = (~same).nonzero()
    return int(differ[0]) if len(differ) else limit
_LIVE: "weakref.WeakSet[Batcher]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """At interpreter exit, stop every loop between two steps: a daemon thread cut off inside a
    torch call while Python finalizes aborts the process ("terminate called ...")."""
    for batcher in list(_LIVE):
        batcher.close()


@dataclass
class TokenLog:
    """A request's log-probabilities, filled by the decode loop from the logits that picked each
    token: (token id, logprob, [(id, logprob) of the ``top`` most likely]) per token, EOS left out."""

    top: int = 0
    entries: list = field(default_factory=list)


@dataclass
class _Request:
    prompt: torch.Tensor  # [1, L]
    adapter: str | None
    params: GenerationParams
    halt: threading.Event
    cancel: threading.Event | None
    out: queue.Queue = field(default_factory=queue.Queue)
    generator: torch.Generator | None = None
    generated: int = 0
    log: "TokenLog | None" = None
    constraint: Any = None  # structured output: .mask(logits_row) before picking, .accept(token) after

    @property
    def gone(self) -> bool:
        return self.halt.is_set() or (self.cancel is not None and self.cancel.is_set())


@dataclass
class _Score:
    ids: torch.Tensor  # [1, L]
    adapter: str | None
    top: int
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None


def _prefill_groups(reqs: list["_Request"], budget: int = PREFILL_TOKENS) -> list[list["_Request"]]:
    """``reqs`` in arrival order, cut into groups whose padded size (rows x longest prompt) stays
    within ``budget`` tokens; a prompt longer than the budget goes alone."""
    groups: list[list[_Request]] = []
    width = 0
    for req in reqs:
        n = req.prompt.shape[1]
        if groups and max(width, n) * (len(groups[-1]) + 1) <= budget:
            groups[-1].append(req)
            width = max(width, n)
        else:
            groups.append([req])
            width = n
    return groups


class Batcher:
    """The decode loop of one model; thread-safe :meth:`stream` for any number of callers."""

    def __init__(self, model: Any, tokenizer: Any, mixed_adapters: bool = False, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.mixed_adapters = mixed_adapters  # a PEFT model: pass adapter_names per row
        self.max_batch = max_batch
        self.eos = set(eos_ids(model, tokenizer))
        self._pending: list[_Request] = []
        self._jobs: list[_Score] = []  # scoring passes, run between two steps
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        # the batch: rows, their KV cache [B, H, T, D] per layer, mask [B, T], next tokens and positions
        self._rows: list[_Request] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._next: torch.Tensor | None = None
        self._pos: torch.Tensor | None = None
        self.steps = 0  # decode steps taken, and how many rows they carried (tests read these)
        self.max_rows_seen = 0
        self.prefills = 0  # prefill passes (requests that arrive together share one)
        self.prefix_reused = 0  # prompt tokens not computed again because a group shared them
        self.decoded = 0  # tokens decoded, every request together
        self._mode: Any = _UNSET  # adapters: BASE (off), a name (that one active), a tuple (those, per row), None (mixed)
        self._row_lora: Any = None  # tuneterm.workers.row_lora.RowScaledLora, made at the first mixed batch
        self._watch: Any = None  # threadplan.LoadWatch when the thread count follows the load
        self._watch_at = 0.0
        if os.environ.get("TUNETERM_ADAPT_THREADS") == "1" and not os.environ.get("OMP_NUM_THREADS"):
            from tuneterm.workers.threadplan import LoadWatch, busy_elsewhere, threads_for

            torch.set_num_threads(threads_for(busy_elsewhere(0.25)))  # from the first step on, then every ADAPT_EVERY_S
            self._watch, self._watch_at = LoadWatch(), time.monotonic()
        self._closing = False
        _LIVE.add(self)

    def close(self, timeout: float = 30.0) -> None:
        """End the loop after its current step; answers in flight end as they are."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # --- the caller's side ---------------------------------------------------------------------

    def stream(self, messages: list[dict], params: GenerationParams, stats: GenerationStats | None = None,
               adapter: str | None = None, cancel: threading.Event | None = None,
               prompt_ids: list[int] | None = None, logprobs: TokenLog | None = None,
               constraint: Any = None) -> Iterator[str]:
        """Yield the answer's text pieces; fills ``stats`` (as ``engine.stream_chat`` does).
        ``prompt_ids``: a raw prompt (completions), instead of the chat template over ``messages``;
        ``logprobs``: filled with each token's log-probability as it is decoded; ``constraint``:
        a grammar that masks each step's logits (``tuneterm.workers.serve.structured``)."""
        params.validate()
        stats = stats if stats is not None else GenerationStats()
        started = time.perf_counter()
        if prompt_ids is not None:
            prompt = torch.tensor([prompt_ids], dtype=torch.long, device=self.model.device)
        else:
            prompt = encode_chat(self.tokenizer, messages).to(self.model.device)
        stats.prompt_tokens = int(prompt.shape[1])
        req = _Request(prompt, adapter, params, threading.Event(), cancel, log=logprobs, constraint=constraint)
        if params.temperature > 0:
            req.generator = torch.Generator(device=prompt.device)
            req.generator.manual_seed(params.seed if params.seed is not None else random.getrandbits(63))
        with self._wake:
            if self._closing:
                raise RuntimeFailure("the model server is shutting down")
            self._pending.append(req)
            self._start_loop()
        try:
            yield from text_pieces(req.out, self.tokenizer, params, stats, req.halt, cancel, started, self.eos)
        finally:
            req.halt.set()  # the loop drops the row at its next step
            with self._wake:
                self._wake.notify()

    def score(self, ids: list[int], adapter: str | None = None, top: int = 0) -> list[tuple[float | None, dict]]:
        """The log-probability of each token of ``ids`` given the ones before it (None for the
        first), with the ``top`` most likely tokens at each position ({id: logprob}); one forward
        pass, run by the decode loop between two steps (the loop owns the model)."""
        job = _Score(torch.tensor([ids], dtype=torch.long, device=self.model.device), adapter, top)
        with self._wake:
            if self._closing:
                raise RuntimeFailure("the model server is shutting down")
            self._jobs.append(job)
            self._start_loop()
        job.done.wait()
        if isinstance(job.result, BaseException):
            raise RuntimeFailure("scoring failed", [("problem", f"{type(job.result).__name__}: {job.result}")])
        return job.result

    def _start_loop(self) -> None:
        """Under ``self._wake``: make sure the loop runs, and wake it."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="tuneterm-decode", daemon=True)
            self._thread.start()
        self._wake.notify()

    def _run_score(self, job: "_Score") -> None:
        try:
            with torch.inference_mode():
                out = self._forward([job], input_ids=job.ids, attention_mask=torch.ones_like(job.ids))
                logprobs = torch.log_softmax(out.logits[0].float(), -1)
                ids = job.ids[0]
                result: list[tuple[float | None, dict]] = [(None, {})]
                picked = logprobs[:-1].gather(1, ids[1:].unsqueeze(1)).squeeze(1).tolist()
                tops = logprobs[:-1].topk(job.top, -1) if job.top else None
                for i, lp in enumerate(picked):
                    top = dict(zip(tops.indices[i].tolist(), tops.values[i].tolist())) if tops is not None else {}
                    result.append((lp, top))
            job.result = result
        except Exception as exc:  # this request fails, the loop goes on
            job.result = exc
        job.done.set()

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._rows and not self._jobs and not self._closing:
                    self._wake.wait()
                if self._closing:
                    for req in [*self._rows, *self._pending]:
                        req.out.put(None)
                    for job in self._jobs:
                        job.result = RuntimeError("the model server is shutting down")
                        job.done.set()
                    self._pending, self._jobs = [], []
                    self._reset()
                    return
                room = max(0, self.max_batch - len(self._rows))
                joining, self._pending = self._pending[:room], self._pending[room:]
                jobs, self._jobs = self._jobs, []
            self._follow_load()
            for job in jobs:
                self._run_score(job)
            try:
                with torch.inference_mode():
                    for req in [r for r in joining if r.gone]:
                        req.out.put(None)
                    for group in _prefill_groups([r for r in joining if not r.gone]):
                        self._join(group)
                    joining = []
                    self._drop_finished()
                    if self._rows:
                        self._step()
                        self._drop_finished()
            except Exception as exc:  # a failed forward pass fails the answers in flight, not the server
                for req in [*self._rows, *joining]:
                    req.out.put(exc)
                    req.out.put(None)
                self._reset()

    def _follow_load(self) -> None:
        """Every ADAPT_EVERY_S, torch's thread count becomes the cores other processes leave free:
        with serve's brief OpenMP spinning, a team wider than the free cores starves them and itself
        (tuneterm.core.generation.SERVE_THREAD_ENV gives the measurements)."""
        if self._watch is None or time.monotonic() - self._watch_at < ADAPT_EVERY_S:
            return
        from tuneterm.workers.threadplan import threads_for

        self._watch_at = time.monotonic()
        busy = self._watch.busy_elsewhere()
        if busy is not None and threads_for(busy) != torch.get_num_threads():
            torch.set_num_threads(threads_for(busy))

    def _forward(self, rows: list[_Request], **inputs: Any) -> Any:
        """One forward pass for ``rows``. When every row wants the same adapter (the common case:
        one column, or one variant at a time) that adapter is made the active one, or the adapters
        are switched off for the base. Rows on the base and one or two plain LoRA adapters run as
        one pass with per-row LoRA scales (``row_lora``); other mixes go through PEFT's mixed batch
        (``adapter_names``), which splits every layer's input per adapter. The switch walks every
        module, so it happens only when the wanted mode changes."""
        if not self.mixed_adapters:
            return self.model(**inputs)
        names = {r.adapter or BASE for r in rows}
        mode: Any = names.pop() if len(names) == 1 else None  # None: PEFT's mixed batch
        if mode is None:
            adapters = {r.adapter for r in rows if r.adapter}
            if self._row_lora is None:
                from tuneterm.workers.row_lora import RowScaledLora

                self._row_lora = RowScaledLora(self.model)
            if self._row_lora.handles(adapters):
                mode = tuple(sorted(adapters))  # these adapters active, weighed per row
        if mode != self._mode:
            tuner = self.model.base_model
            if mode == BASE:
                tuner.disable_adapter_layers()
            else:
                tuner.enable_adapter_layers()
                if isinstance(mode, tuple):
                    tuner.set_adapter(list(mode), inference_mode=True)
                elif mode is not None:
                    self.model.set_adapter(mode, inference_mode=True)
            self._mode = mode
        if mode is None:
            return self.model(**inputs, adapter_names=[r.adapter or BASE for r in rows])
        if isinstance(mode, tuple):
            with self._row_lora.rows([r.adapter for r in rows]):
                return self.model(**inputs)
        return self.model(**inputs)

    def _join(self, reqs: list[_Request]) -> None:
        """Prefill ``reqs`` together and add them to the batch; when that fails, each alone, so a
        prompt that cannot run (too long ...) fails its own request and the others go on."""
        if len(reqs) > 1:
            try:
                self._prefill(reqs)
                return
            except Exception:  # noqa: BLE001 - retried one by one below, which names the culprit
                pass
        for req in reqs:
            try:
                self._prefill([req])
            except Exception as exc:
                req.out.put(exc)
                req.out.put(None)

    def _prefill(self, reqs: list[_Request]) -> None:
        """One forward pass over the prompts of ``reqs`` (left-padded to a common length, with an
        attention mask and per-row positions), their first tokens picked, their KV caches merged
        into the batch's. A prompt alone costs a few decode steps of the whole batch, so prompts
        that arrive together are prefilled together; the tokens they all begin with (a system
        prompt, few-shot examples) are computed once per adapter."""
        self.prefills += 1
        shared = _shared_prefix(reqs) if len(reqs) > 1 else 0
        if shared >= PREFIX_MIN:
            cache, mask, logits = self._prefill_shared(reqs, shared)
            self.prefix_reused += shared * (len(reqs) - len({r.adapter for r in reqs}))
        else:
            cache, mask, logits = self._prefill_padded(reqs)
        device = mask.device
        width = mask.shape[1]
        lengths = [r.prompt.shape[1] for r in reqs]
        tokens = self._sample(logits, reqs)
        self._record(logits, reqs, tokens)
        for req, token in zip(reqs, tokens):
            self._emit(req, token)
        nxt = torch.tensor(tokens, device=device).unsqueeze(1)
        pos = torch.tensor(lengths, device=device).unsqueeze(1)
        if not self._rows:
            self._rows, self._cache, self._mask, self._next, self._pos = list(reqs), cache, mask, nxt, pos
            return
        total = max(self._mask.shape[1], width)
        self._pad_left(self._cache, total - self._mask.shape[1])
        self._pad_left(cache, total - width)
        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        self._mask = torch.cat([F.pad(self._mask, (total - self._mask.shape[1], 0)), F.pad(mask, (total - width, 0))])
        self._next = torch.cat([self._next, nxt])
        self._pos = torch.cat([self._pos, pos])
        self._rows.extend(reqs)

    def _prefill_padded(self, reqs: list[_Request]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The prompts left-padded to the longest: (KV cache, mask, last logits per row)."""
        from transformers import DynamicCache

        device = reqs[0].prompt.device
        lengths = [r.prompt.shape[1] for r in reqs]
        width = max(lengths)
        ids = torch.cat([F.pad(r.prompt, (width - n, 0)) for r, n in zip(reqs, lengths)])
        mask = torch.cat([F.pad(torch.ones(1, n, dtype=torch.long, device=device), (width - n, 0)) for n in lengths])
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if len(reqs) > 1:
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self._forward(reqs, **inputs, cache=cache, use_cache=True, logits_to_keep=1)
        return cache, mask, out.logits[:, -1, :]

    def _prefill_shared(self, reqs: list[_Request], shared: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The first ``shared`` tokens, common to every prompt, once per adapter in the group; their
        KV copied to each row; then the rest of each prompt, left-padded after the shared part
        (the padding sits between the two, masked): (KV cache, mask, last logits per row)."""
        from transformers import DynamicCache

        device = reqs[0].prompt.device
        owners: list[str | None] = []
        for req in reqs:
            if req.adapter not in owners:
                owners.append(req.adapter)
        head = reqs[0].prompt[:, :shared].expand(len(owners), -1)
        cache = DynamicCache()
        self._forward([_Owner(a) for a in owners], input_ids=head, attention_mask=torch.ones_like(head), cache=cache,
                      use_cache=True, logits_to_keep=1)
        index = torch.tensor([owners.index(r.adapter) for r in reqs], device=device)
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        tails = [r.prompt[:, shared:] for r in reqs]
        lengths = [t.shape[1] for t in tails]
        width = max(lengths)
        ids = torch.cat([F.pad(t, (width - n, 0)) for t, n in zip(tails, lengths)])
        mask = torch.cat([torch.ones(len(reqs), shared, dtype=torch.long, device=device),
                          torch.cat([F.pad(torch.ones(1, n, dtype=torch.long, device=device), (width - n, 0))
                                     for n in lengths])], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        out = self._forward(reqs, input_ids=ids, attention_mask=mask, position_ids=positions,
                            cache_position=torch.arange(shared, shared + width, device=device), cache=cache,
                            use_cache=True, logits_to_keep=1)
        return cache, mask, out.logits[:, -1, :]

    @staticmethod
    def _pad_left(cache: Any, n: int) -> None:
        if n <= 0:
            return
        for layer in cache.layers:
            layer.keys = F.pad(layer.keys, (0, 0, n, 0))
            layer.values = F.pad(layer.values, (0, 0, n, 0))

    def _step(self) -> None:
        rows = list(self._rows)
        self.steps += 1
        self.max_rows_seen = max(self.max_rows_seen, len(rows))
        width = self._mask.shape[1]
        mask = torch.cat([self._mask, torch.ones(len(rows), 1, dtype=self._mask.dtype, device=self._mask.device)], 1)
        out = self._forward(rows, input_ids=self._next, attention_mask=mask, position_ids=self._pos,
                            cache_position=torch.tensor([width], device=mask.device), cache=self._cache,
                            use_cache=True)
        self._mask = mask
        tokens = self._sample(out.logits[:, -1, :], rows)
        self._record(out.logits[:, -1, :], rows, tokens)
        for req, token in zip(rows, tokens):
            self._emit(req, token)
        self._next = torch.tensor(tokens, device=mask.device).unsqueeze(1)
        self._pos = self._pos + 1

    def _sample(self, logits: torch.Tensor, rows: list[_Request]) -> list[int]:
        constrained = [i for i, r in enumerate(rows) if r.constraint is not None]
        if constrained:
            logits = logits.float().contiguous()
            for i in constrained:
                rows[i].constraint.mask(logits[i:i + 1])
            tokens = self._pick(logits, rows)
            for i in constrained:
                rows[i].constraint.accept(tokens[i])
            return tokens
        return self._pick(logits, rows)

    def _pick(self, logits: torch.Tensor, rows: list[_Request]) -> list[int]:
        if all(r.params.temperature == 0 for r in rows):
            return logits.argmax(-1).tolist()
        out = []
        for row_logits, req in zip(logits, rows):
            p = req.params
            if p.temperature == 0:
                out.append(int(row_logits.argmax()))
                continue
            probs = torch.softmax(row_logits.float() / p.temperature, -1)
            if p.top_p < 1:
                sorted_p, order = probs.sort(descending=True)
                keep = sorted_p.cumsum(-1) - sorted_p < p.top_p  # the smallest set reaching top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            out.append(int(torch.multinomial(probs, 1, generator=req.generator)))
        return out

    def _record(self, logits: torch.Tensor, rows: list[_Request], tokens: list[int]) -> None:
        """Log-probabilities for the rows that asked, from the logits that picked their tokens."""
        for i, (req, token) in enumerate(zip(rows, tokens)):
            if req.log is None or token in self.eos:
                continue
            lp = torch.log_softmax(logits[i].float(), -1)
            top = lp.topk(req.log.top) if req.log.top else None
            alts = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
            req.log.entries.append((token, float(lp[token]), alts))

    def _emit(self, req: _Request, token: int) -> None:
        self.decoded += 1
        req.generated += 1
        req.out.put(token)
        if token in self.eos or req.generated >= req.params.max_new_tokens:
            req.halt.set()

    def _drop_finished(self) -> None:
        keep = [i for i, r in enumerate(self._rows) if not r.gone]
        if len(keep) == len(self._rows):
            return
        for r in self._rows:
            if r.gone:
                r.out.put(None)
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, device=self._mask.device)
        self._rows = [self._rows[i] for i in keep]
        self._mask, self._next, self._pos = self._mask[index], self._next[index], self._pos[index]
        live = (self._mask.sum(0) > 0).nonzero()
        start = int(live[0]) if len(live) else 0  # columns that are padding in every row left
        self._mask = self._mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._next, self._pos = [], None, None, None, None
