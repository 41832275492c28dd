"""A classifier artifact served beside the causal LMs: it answers a chat with a label.

A ``job:ID`` whose artifact is of kind ``classifier`` (a feature classifier, job kind ``feature``, or a
classification head, job kind ``cls_head``) loads here instead of as a causal LM
(:func:`tuneterm.workers.variants.load_variants` picks it by the artifact's kind). Its answer to a chat
is the label it predicts for the conversation's last user message, as one piece, through the same
predict path as ``tuneterm chat`` and the eval harness
(:meth:`tuneterm.workers.classifier.Classifier.predict`). It has no decode loop: a request to it never
enters a :class:`~tuneterm.workers.batcher.Batcher`, and the server refuses what cannot apply to a label
(log-probabilities, tools, structured output, raw completions; :mod:`tuneterm.workers.serve.schemas`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from tuneterm.core.datasets.labels import text_of
from tuneterm.core.errors import InputError
from tuneterm.core.generation import GenerationParams, GenerationStats
from tuneterm.workers.variants import ServedModel


@dataclass
class ClassifierGroup:
    """One classifier in memory (a head with its backbone, or a feature classifier with its own copy of
    the base). Predictions run one at a time."""

    key: str  # the artifact's file or folder
    classifier: Any  # a tuneterm.workers.classifier.Classifier
    load_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: dict = field(default_factory=dict)  # none: for code that walks every group
    batcher: None = None  # no decode loop
    is_classifier: ClassVar[bool] = True
    is_peft: ClassVar[bool] = False
    lean_loop: ClassVar[bool] = False

    @classmethod
    def load(cls, path: Path, dtype: str | None = None, device: str | None = None) -> "ClassifierGroup":
        from tuneterm.workers.classifier import open_classifier

        started = time.perf_counter()
        classifier = open_classifier(path, dtype=dtype, device=device)
        return cls(str(path), classifier, load_seconds=time.perf_counter() - started)

    @property
    def model(self) -> Any:
        return self.classifier.model

    @property
    def tokenizer(self) -> Any:
        return self.classifier.tokenizer

    def close(self, timeout: float = 5.0) -> None:
        """Nothing runs in the background."""

    def memory_bytes(self) -> int:
        model = self.model
        return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])

    def classify(self, text: str) -> str:
        with self.lock:
            return self.classifier.predict([text])[0]


@dataclass
class ServedClassifier(ServedModel):
    """A classifier under its model id: ``stream`` yields its label for the last user message."""

    is_classifier: ClassVar[bool] = True

    @property
    def classifier(self) -> Any:
        return self.group.classifier

    def describe(self) -> str:
        """``cls_head, 7 labels`` or ``feature, layer 12, 7 labels``."""
        return self.classifier.describe()

    def label(self) -> str:
        return f"classifier: {self.describe()}"

    def engine(self) -> str:
        return self.label()

    def prepare(self, messages: list[dict]) -> list[dict]:
        return messages  # no system prompt or few-shot examples: the classifier reads one text

    def stream(self, messages: list[dict], params: GenerationParams, stats: GenerationStats | None = None,
               cancel: threading.Event | None = None, logprobs: Any = None, constraint: Any = None) -> Iterator[str]:
        if logprobs is not None or constraint is not None:
            raise InputError("a classifier answers with a label: log-probabilities and structured output do not "
                             "apply", [("model", self.model_id), ("classifier", self.describe())])
        text = text_of(messages)
        if text is None:
            raise InputError("a classifier reads the last user message, and this conversation has none",
                             [("model", self.model_id)], "send a user message")
        return self._answer(text, stats if stats is not None else GenerationStats(), cancel)

    def _answer(self, text: str, stats: GenerationStats, cancel: threading.Event | None) -> Iterator[str]:
        started = time.perf_counter()
        if cancel is not None and cancel.is_set():
            stats.finish_reason = "cancelled"
            return
        label = self.group.classify(text)
        tokenizer = self.group.tokenizer
        read = len(tokenizer(text)["input_ids"])
        stats.prompt_tokens = min(read, self.classifier.max_length)  # the tokens it read
        stats.completion_tokens = len(tokenizer(label, add_special_tokens=False)["input_ids"])
        stats.ttft_s = stats.total_s = time.perf_counter() - started
        stats.finish_reason = "stop"
        yield label

    def stream_ids(self, prompt_ids: list[int], params: GenerationParams, stats: GenerationStats,
                   cancel: threading.Event | None = None, constraint: Any = None) -> Iterator[str]:
        raise InputError("a classifier answers chats with a label; it has no raw-prompt form",
                         [("model", self.model_id)], "use /v1/chat/completions")

    def score(self, ids: list[int], top: int = 0) -> list[tuple[float | None, dict]]:
        raise InputError("a classifier does not score tokens", [("model", self.model_id)])
