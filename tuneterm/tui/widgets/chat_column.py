"""ChatColumn: one model's side of a side-by-side chat, streaming from a thread worker.

The worker resolves the column's model to an OpenAI-compatible endpoint (a local reference
through the screen's ``tuneterm serve`` child) and streams with
:func:`tuneterm.core.chat_client.stream_chat`. It never touches widgets: it posts
:class:`ChatColumn.StatusChanged`, :class:`ChatColumn.TokenReceived` and
:class:`ChatColumn.AnswerFinished`, which the column (and then the screen) handle on the UI
thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from tuneterm.core import chat_client
from tuneterm.core.errors import TunetermError

def short_ref(ref: str) -> str:
    """A column title's form of a reference: folders and files by name, ``fewshot:K:POOL@REF`` as
    ``K-shot POOL-NAME @ REF``, ``http://HOST/v1#MODEL`` as ``MODEL @ HOST`` (the full one is the tooltip)."""
    from pathlib import Path

    if ref.startswith("fewshot:"):
        try:
            from tuneterm.core.fewshot import parse_spec

            spec = parse_spec(ref)
            return f"{spec.k}-shot {Path(spec.pool).name} @ {short_ref(spec.base)}"
        except TunetermError:
            return ref
    if ref.startswith(("http://", "https://")):
        url, _, model = ref.partition("#")
        host = url.split("://", 1)[1].split("/", 1)[0]
        return f"{short_ref(model)} @ {host}" if model else host
    if ref.startswith(("/", "./", "~")):
        return Path(ref).name or ref
    return ref


# (model ref, cancel) -> a reference chat_client can stream from; may block (starts servers)
Router = Callable[[str, threading.Event], str]


class ChatColumn(Vertical):
    DEFAULT_CSS = """
    ChatColumn { width: 1fr; border: round $panel-lighten-2; padding: 0 1; }
    ChatColumn.-selected { border: round $primary; }
    ChatColumn .col-title { text-style: bold; height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    ChatColumn .col-stats { color: $text-muted; height: 1; }
    ChatColumn.-error .col-stats { color: $error; }
    ChatColumn .col-log { height: 1fr; }
    ChatColumn .msg-user { color: $accent; margin-top: 1; }
    ChatColumn .msg-assistant { margin-bottom: 0; }
    """

    @dataclass
    class StatusChanged(Message):
        column: int
        status: str
        info: dict

    @dataclass
    class TokenReceived(Message):
        column: int
        turn: int
        piece: str
        stats: dict

    @dataclass
    class AnswerFinished(Message):
        column: int
        turn: int
        model: str
        text: str
        stats: dict
        error: str | None
        stopped: bool

    def __init__(self, index: int, model: str, router: Router, **kwargs) -> None:
        super().__init__(**kwargs)
        self.index = index
        self.model = model
        self.router = router
        self.answer = ""  # the answer being streamed (or the last one)
        self.stats: dict = {}
        self.status = "ready"
        self.memory_bytes: int | None = None
        self.kind_note: str | None = None  # what answers when it is not a causal LM ("classifier: cls_head, 7 labels")
        self.blind_title: str | None = None  # blind mode: "Model N" instead of the model (tui/chat_blind.py)
        self._cancel: threading.Event | None = None
        self._answer_widget: Static | None = None
        self.pending_history: list[dict] | None = None

    def compose(self) -> ComposeResult:
        yield Static(classes="col-title")
        yield Static("ready", classes="col-stats")
        yield VerticalScroll(classes="col-log")

    def on_mount(self) -> None:
        self._render_header()
        if self.pending_history is not None:  # a column added to a conversation: its past turns
            self.show_history(self.pending_history)
            self.pending_history = None

    # --- state shown ---------------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        return self._cancel is not None

    def _render_header(self) -> None:
        title = f"{self.index + 1}. {short_ref(self.model)}"
        if self.blind_title:
            title = self.blind_title
        else:
            if self.kind_note:
                title += f"  [{self.kind_note}]"
            if self.memory_bytes:
                title += f"  [{self.memory_bytes / 2**20:.0f} MiB]"
        # one line that never wraps: a long reference wrapped after "2." left the title looking blank
        self.query_one(".col-title", Static).update(Text(title, no_wrap=True, overflow="ellipsis"))
        self.tooltip = self.model
        s = self.stats
        parts = [self.status]
        if s.get("ttft_ms") is not None:
            parts.append(f"ttft {s['ttft_ms']:.0f} ms")
        if s.get("tokens_per_s"):
            parts.append(f"{s['tokens_per_s']:.1f} tok/s")
        if s.get("completion_tokens"):
            parts.append(f"{s['completion_tokens']} tokens")
        self.query_one(".col-stats", Static).update(" · ".join(parts))

    def set_model(self, model: str) -> None:
        self.model = model
        self.memory_bytes = None
        self.kind_note = None
        self.stats = {}
        self.status = "ready"
        self._render_header()

    def show_history(self, messages: list[dict]) -> None:
        """Render a whole conversation (reopen, swap): user and assistant messages, no system."""
        log = self.query_one(".col-log", VerticalScroll)
        log.remove_children()
        for m in messages:
            if m["role"] in ("user", "assistant"):
                log.mount(self._bubble(m["role"], m["content"]))
        self._answer_widget = None
        log.scroll_end(animate=False)

    def _bubble(self, role: str, text: str) -> Static:
        shown = f"> {text}" if role == "user" else text
        return Static(shown, markup=False, classes=f"msg-{role}")

    # --- streaming -----------------------------------------------------------------------

    def start(self, turn: int, messages: list[dict], params: dict) -> None:
        """Show the user message and stream this column's answer in a thread worker."""
        self.stop()
        log = self.query_one(".col-log", VerticalScroll)
        log.mount(self._bubble("user", messages[-1]["content"]))
        self._answer_widget = self._bubble("assistant", "")
        log.mount(self._answer_widget)
        log.scroll_end(animate=False)
        self.answer = ""
        self.stats = {}
        self.status = "starting"
        self.remove_class("-error")
        self._render_header()
        cancel = threading.Event()
        self._cancel = cancel
        model = self.model
        self.run_worker(lambda: self._stream(turn, model, messages, params, cancel), thread=True,
                        group=f"chat-column-{id(self)}", exclusive=True, exit_on_error=False,
                        name=f"chat column {self.index + 1}")

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def _stream(self, turn: int, model: str, messages: list[dict], params: dict, cancel: threading.Event) -> None:
        """Runs in a thread: only posts messages."""
        stats = chat_client.ChatStats()
        pieces: list[str] = []
        error = None
        try:
            self.post_message(self.StatusChanged(self.index, "loading model…", {}))
            target = self.router(model, cancel)
            info = {}
            try:
                info = chat_client.model_card(target)
            except TunetermError:
                pass
            self.post_message(self.StatusChanged(self.index, "waiting for the first token…", info))
            for piece in chat_client.stream_chat(target, messages, params, stats, cancel):
                pieces.append(piece)
                self.post_message(self.TokenReceived(self.index, turn, piece, stats.to_dict()))
        except TunetermError as err:
            error = err.render()
        except Exception as exc:  # a bug or an unexpected network failure: shown in the column
            error = f"error: {type(exc).__name__}: {exc}"
        self.post_message(self.AnswerFinished(self.index, turn, model, "".join(pieces), stats.to_dict(), error,
                                              cancel.is_set()))

    # --- messages from the worker (UI thread) -----------------------------------------------

    def on_chat_column_status_changed(self, event: StatusChanged) -> None:
        if event.column != self.index:
            return
        self.status = event.status
        card = (event.info.get("tuneterm") or {}) if event.info else {}
        if card.get("memory_bytes"):
            self.memory_bytes = card["memory_bytes"]
        if isinstance(card.get("classifier"), dict):  # a classifier answers with a label: the title says so
            self.kind_note = card["classifier"].get("label")
        self._render_header()

    def on_chat_column_token_received(self, event: TokenReceived) -> None:
        if event.column != self.index:
            return
        self.answer += event.piece
        self.stats = event.stats
        self.status = "streaming"
        if self._answer_widget is not None:
            self._answer_widget.update(self.answer)
            self.query_one(".col-log", VerticalScroll).scroll_end(animate=False)
        self._render_header()

    def on_chat_column_answer_finished(self, event: AnswerFinished) -> None:
        if event.column != self.index:
            return
        self._cancel = None
        self.answer = event.text
        self.stats = event.stats
        if self._answer_widget is not None:
            self._answer_widget.update(event.text if not event.error else f"{event.text}\n[{event.error}]")
        if event.error:
            self.status = "error"
            self.add_class("-error")
        else:
            self.status = "stopped" if event.stopped else "done"
        self._render_header()
