"""ModelInput: a model reference field that completes the embedded model, ``job:ID`` artifacts
of finished jobs, and folders or .gguf files (the DatasetSuggester: names first, then paths).

The names are read in a thread worker when it mounts (listing jobs reads their folders).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.message import Message
from textual.widgets import Input

from tuneterm.tui.suggesters import DatasetSuggester

PLACEHOLDER = "smollm2-135m-instruct, hf:ORG/NAME, ./dir, job:ID"


def model_refs() -> list[str]:
    """The embedded model, then ``job:ID`` of every job with an artifact, newest first."""
    from tuneterm.core import jobs
    from tuneterm.core.modelref import EMBEDDED_NAME

    refs = [EMBEDDED_NAME]
    for info in reversed(jobs.list_jobs()):
        if info.model_ref:
            refs.append(info.model_ref)
    return refs


class ModelInput(Input):
    @dataclass
    class RefsLoaded(Message):
        refs: list[str]
        default: str = ""

    def __init__(self, prefill: bool = False, **kwargs) -> None:
        """``prefill``: an empty field gets the user's default model (settings) once loaded."""
        kwargs.setdefault("placeholder", PLACEHOLDER)
        super().__init__(suggester=DatasetSuggester((".gguf",)), **kwargs)
        self.prefill = prefill

    def on_mount(self) -> None:
        after = getattr(self.app, "after_first_paint", None)  # no thread during the first frame
        (after or self.call_after_refresh)(self.reload)

    def reload(self) -> None:
        self._load_refs()

    @work(thread=True, exclusive=True, group="model-refs", exit_on_error=False)
    def _load_refs(self) -> None:
        default = ""
        if self.prefill:
            from tuneterm.core.settings import get_settings

            default = get_settings().default_model
        try:
            refs = model_refs()
        except Exception:  # a damaged job folder only costs the completions
            refs = []
        self.post_message(self.RefsLoaded(refs, default))

    @on(RefsLoaded)
    def _refs_loaded(self, event: RefsLoaded) -> None:
        event.stop()
        if event.refs:
            self.suggester.names = event.refs
        if event.default and not self.value:
            self.value = event.default
            self.prefill = False

    @property
    def refs(self) -> list[str]:
        return list(self.suggester.names)
