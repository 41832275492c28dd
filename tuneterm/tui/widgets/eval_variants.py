"""VariantsInput: comma-separated model references for an eval, completing the entry being typed.

The last entry completes like ModelInput (the embedded model and ``job:ID`` artifacts first, then
folders and .gguf files, through the DatasetSuggester), plus a few-shot form over the first
model: ``fewshot:4:sample_data/fewshot/pool.jsonl@REF``.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.message import Message
from textual.widgets import Input

from tuneterm.tui.suggesters import DatasetSuggester

FEWSHOT_POOL = "sample_data/fewshot/pool.jsonl"


class VariantsSuggester(DatasetSuggester):
    """Completes the text after the last comma; what comes before stays as typed."""

    async def get_suggestion(self, value: str) -> str | None:
        head, sep, last = value.rpartition(",")
        prefix = head + sep
        last_stripped = last.lstrip()
        pad = last[: len(last) - len(last_stripped)]
        if not last_stripped:
            return None
        names = list(self.names)
        first = value.split(",")[0].strip()
        if first and not first.startswith("fewshot:"):
            names.append(f"fewshot:4:{FEWSHOT_POOL}@{first}")
        for name in names:
            if name.startswith(last_stripped) and name != last_stripped:
                return prefix + pad + name
        done = await DatasetSuggester.get_suggestion(self, last_stripped) if "/" in last_stripped or \
            last_stripped.startswith((".", "~")) else None
        return prefix + pad + done if done else None


class VariantsInput(Input):
    @dataclass
    class RefsLoaded(Message):
        refs: list[str]

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("placeholder", "smollm2-135m-instruct, job:ID, fewshot:4:POOL@REF, openai:MODEL")
        super().__init__(suggester=VariantsSuggester((".gguf",)), **kwargs)

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        self._load_refs()

    @work(thread=True, exclusive=True, group="eval-model-refs", exit_on_error=False)
    def _load_refs(self) -> None:
        from tuneterm.tui.widgets.model_input import model_refs

        try:
            refs = model_refs()
        except Exception:  # a damaged job folder only costs the completions
            return
        self.post_message(self.RefsLoaded(refs))

    @on(RefsLoaded)
    def _refs_loaded(self, event: RefsLoaded) -> None:
        event.stop()
        self.suggester.names = event.refs

    @property
    def models(self) -> list[str]:
        return [p for p in (s.strip() for s in self.value.split(",")) if p]
