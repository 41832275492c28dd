"""The eval harness's face of the llama.cpp engine: a GGUF variant scored on the file itself.

:class:`LlamaCppGroup` is a :class:`tuneterm.workers.evals.backend.LocalGroup` whose model is a
:class:`tuneterm.workers.llamacpp.LlamaCppEngine`: prompts go through the file's own chat template,
generation through llama.cpp (one prompt at a time: the worker decodes one sequence), and
log-likelihood tasks through llama.cpp's logits for every position. Context/continuation pairs,
rolling windows and fingerprints are the base class's, so the two engines score items alike.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from tuneterm.core.evals.extract import truncate_at_stop
from tuneterm.core.generation import GenerationParams, GenerationStats
from tuneterm.workers.evals.backend import LocalGroup, LocalWeights, _sha_text, folder_digest
from tuneterm.workers.llamacpp import LlamaCppEngine


class LlamaCppGroup(LocalGroup):
    def __init__(self, variants: list[LocalWeights], dtype: str | None = None, device: str | None = None) -> None:  # noqa: ARG002
        first = variants[0]
        self.variants = {v.vid: v for v in variants}
        started = time.perf_counter()
        self.model = LlamaCppEngine(Path(first.facts["gguf_file"]))
        self.tokenizer = None
        self.adapters: dict[str, str] = {}
        self.classifiers: dict[str, dict] = {}
        self.load_seconds = time.perf_counter() - started
        self.max_length = int(self.model.info.get("score_ctx") or 2048)  # the longest window llama.cpp scores
        self.eos_ids = set(self.model.eos)
        self._base_digest = folder_digest(Path(first.base_path))
        self._tok_digest = _sha_text("gguf-vocab:" + self._base_digest[0])  # the vocabulary is in the file
        self._keep_ok = False

    @contextlib.contextmanager
    def activate(self, vid: str) -> Iterator[None]:  # noqa: ARG002
        yield

    def close(self) -> None:
        self.model.close()

    def render_prompt(self, prompt: Any) -> str:
        return self.model.render(prompt) if isinstance(prompt, list) else prompt

    def encode(self, text: str) -> list[int]:
        return self.model.tokenize(text, special=False)

    def prefix_token(self) -> int:
        bos = self.model.info.get("bos")
        return int(bos) if bos is not None and bos >= 0 else int(self.model.info.get("eos"))

    def generate(self, prompts: list[str], gen: dict, batch_size: int,
                 on_batch: Callable[[list[int], list[dict]], None],
                 on_step: Callable[[int, int, int], None] | None = None) -> None:
        """One prompt at a time: each row's end is its own ``on_batch`` (``on_step`` is not called)."""
        params = GenerationParams(max_new_tokens=int(gen["max_new_tokens"]), temperature=float(gen.get("temperature") or 0),
                                  top_p=float(gen.get("top_p") or 1.0), seed=gen.get("seed"),
                                  stop=list(gen.get("stop") or []))
        for i, prompt in enumerate(prompts):
            stats = GenerationStats()
            t0 = time.perf_counter()
            text = "".join(self.model.stream(prompt, params, stats))
            on_batch([i], [{"output": truncate_at_stop(text, params.stop), "prompt_tokens": stats.prompt_tokens,
                            "completion_tokens": stats.completion_tokens,
                            "latency_s": round(time.perf_counter() - t0, 4)}])

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]], batch_size: int,
                      on_batch: Callable[[list[int], list[dict]], None]) -> None:
        for start in range(0, len(requests), max(1, batch_size)):
            idx = list(range(start, min(len(requests), start + max(1, batch_size))))
            t0 = time.perf_counter()
            results = self.model.loglikelihood([requests[i] for i in idx])
            for r in results:
                r["latency_s"] = round(time.perf_counter() - t0, 4)
            on_batch(idx, results)
