"""ChatScreen: the same conversation sent to 1-4 models at once, streaming side by side.

Each column is a model reference: a local one is served by a ``tuneterm serve`` child that
this screen starts (one child for the local models of all columns, so a base, its adapters and
few-shot references over them share weights and decode in one batch) and stops when it goes
away; ``openai:...`` and ``http://...#MODEL`` (and ``fewshot:K:POOL@`` either) stream directly. One prompt box sends to every column; Escape stops every stream. Shared system
prompt and settings (greedy by default) with per-column overrides; a diff of two columns'
answers; conversations are saved in the workspace DB, reopened, exported, and a turn can be
saved into a dataset as a training example. With no models given it opens ready
(:mod:`tuneterm.tui.screens.chat_ready`): the base, the newest tuned job and its quantized artifact,
each with the system prompt it was trained with and its latest eval scores in its header; ctrl+e
evaluates the columns as an eval job. The keys avoid ctrl+n/w/t, which a browser keeps.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Static

from tuneterm.core import conversations as convs
from tuneterm.core import modelref
from tuneterm.core.chat_client import LocalServers, is_remote
from tuneterm.core.shared_servers import chat_servers
from tuneterm.core.errors import TunetermError
from tuneterm.tui.screens.base import WorkbenchScreen
from tuneterm.tui.screens.chat_ready import ChatReadyMixin
from tuneterm.tui.widgets.chat_column import ChatColumn
from tuneterm.tui.widgets.chat_diff import ChatDiff

MAX_COLUMNS = 4
DEFAULT_PARAMS = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256, "seed": None}


class ChatScreen(ChatReadyMixin, WorkbenchScreen):
    MODE = "chat"
    CONTENT = "ChatColumn .col-log"
    DEFAULT_CSS = """
    ChatScreen #chat-settings { height: 1; color: $text-muted; padding: 0 1; }
    ChatScreen #chat-columns { height: 1fr; }
    ChatScreen #chat-diff.-hidden { display: none; }
    ChatScreen #chat-prompt { dock: bottom; margin-bottom: 1; }
    ChatScreen #chat-vote-bar { height: 1; background: $boost; color: $warning; padding: 0 1; }
    ChatScreen #chat-vote-bar.-hidden { display: none; }
    ChatScreen .msg-judge { color: $success; text-style: italic; }
    """
    BINDINGS = [
        # The footer shows the keys that fit 80 columns (tests/test_tui_footer.py): stop, columns, save,
        # blind. The others (show=False) are in the keys panel and the command palette (ctrl+p).
        Binding("escape", "stop", "Stop", id="chat.stop", priority=True),
        # no ctrl+n / ctrl+w / ctrl+t: a browser keeps those for itself (`tuneterm web`; ctrl+w closes the tab)
        Binding("ctrl+o", "add_column", "Add column", id="chat.add_column", priority=True),
        Binding("ctrl+x", "remove_column", "Close column", id="chat.remove_column", show=False, priority=True),
        Binding("ctrl+r", "swap_model", "Swap model", id="chat.swap_model", priority=True),
        Binding("ctrl+right", "select(1)", "Next column", id="chat.next_column", show=False, priority=True),
        Binding("ctrl+left", "select(-1)", "Previous column", id="chat.prev_column", show=False, priority=True),
        Binding("ctrl+d", "diff", "Diff", id="chat.diff", show=False, priority=True),
        Binding("ctrl+g", "settings", "Settings", id="chat.settings", show=False, priority=True),
        Binding("f2", "column_settings", "Column settings", id="chat.column_settings", show=False, priority=True),
        Binding("ctrl+s", "save", "Save", id="chat.save", priority=True),
        Binding("ctrl+f", "export", "Export", id="chat.export", show=False, priority=True),
        Binding("ctrl+k", "save_turn", "Keep turn→dataset", id="chat.save_turn", show=False, priority=True),
        Binding("ctrl+e", "eval_columns", "Eval", id="chat.eval", show=False, priority=True),
        Binding("i", "write", "Write", id="chat.write", show=False),
        Binding("ctrl+l", "reopen", "Reopen", id="chat.reopen", show=False, priority=True),
        Binding("ctrl+y", "new_conversation", "New", id="chat.new", show=False, priority=True),
        # blind votes and the judge (tuneterm/tui/chat_blind.py); vote keys act only in blind mode
        Binding("ctrl+b", "toggle_blind", "Blind", id="chat.blind", priority=True),
        *[Binding(str(n), f"vote('{n}')", f"Vote {n}", id=f"chat.vote_{n}", show=False) for n in range(1, 5)],
        Binding("t", "vote('tie')", "Tie", id="chat.vote_tie", show=False),
        Binding("b", "vote('both_bad')", "Both bad", id="chat.vote_bad", show=False),
        Binding("j", "judge", "Judge", id="chat.judge", show=False),
    ]

    @dataclass
    class ConversationSaved(Message):
        conversation_id: int

    @dataclass
    class ConversationOpened(Message):
        conversation: convs.Conversation

    @dataclass
    class TurnSaved(Message):
        path: Path

    @dataclass
    class Exported(Message):
        path: Path

    def __init__(self, models: list[str] | None = None, servers: LocalServers | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not models:  # opens ready: the base, the newest tuned job over it, its newest quantized artifact
            from tuneterm.core.chat_lineup import default_lineup

            models = list(default_lineup().refs)
        self.conversation = convs.Conversation(list(models)[:MAX_COLUMNS],
                                               {"system": "", "params": dict(DEFAULT_PARAMS), "columns": []})
        self.servers = servers or chat_servers()  # shared by the tabs of `tuneterm web`
        self._own_servers = servers is None
        self.selected = 0
        self._diff_pair: tuple[int, int] | None = None
        self._unrecorded: set[int] = set()  # columns whose answer to the last send is not recorded yet
        from tuneterm.tui.chat_blind import BlindMode

        self.blind = BlindMode(self)

    # --- layout --------------------------------------------------------------------------

    def compose_body(self) -> Iterable[Widget]:
        yield Static(id="chat-settings")
        with Horizontal(id="chat-columns"):
            for i, model in enumerate(self.conversation.models):
                yield ChatColumn(i, model, self._route)
        yield ChatDiff(id="chat-diff", classes="-hidden")
        yield Static(id="chat-vote-bar", classes="-hidden", markup=False)
        yield Input(placeholder="message every column (tab or i to write) · enter sends · escape stops", id="chat-prompt")

    def on_mount(self) -> None:
        self._render_settings()
        self._mark_selected()
        self.ready_mount()

    def on_unmount(self) -> None:
        self.stop_all()
        if self._own_servers:
            self.servers.stop_all()

    def action_write(self) -> None:
        self.query_one("#chat-prompt", Input).focus()

    @property
    def columns(self) -> list[ChatColumn]:
        return list(self.query(ChatColumn))

    @property
    def streaming(self) -> bool:
        """True until every column's answer is in the conversation (a column's own "done" comes
        one message hop earlier, so a turn sent in between would miss that answer)."""
        return bool(self._unrecorded) or any(c.streaming for c in self.columns)

    def _render_settings(self) -> None:
        s = self.conversation.settings
        p = {**DEFAULT_PARAMS, **(s.get("params") or {})}
        temp = "greedy" if not p["temperature"] else f"temperature {p['temperature']}, top_p {p['top_p']}"
        system = (s.get("system") or "").strip()
        overrides = sum(1 for c in s.get("columns") or [] if c and (c.get("system") or c.get("params")))
        parts = [f"system: {system[:40] + '…' if len(system) > 40 else system or '—'}", temp,
                 f"max {p['max_tokens']} tokens", f"seed {p['seed'] if p['seed'] is not None else '—'}"]
        if overrides:
            parts.append(f"{overrides} column override(s)")
        trained = self.trained_columns() if not system else []
        if trained:
            parts.append(f"trained system prompt in column(s) {', '.join(map(str, trained))}")
        if self.conversation.id is not None:
            parts.append(f"saved #{self.conversation.id}")
        self.query_one("#chat-settings", Static).update(" · ".join(parts))

    def _mark_selected(self) -> None:
        for col in self.columns:
            col.set_class(col.index == self.selected, "-selected")

    # --- model routing (runs in column workers) ----------------------------------------------

    def _route(self, ref: str, cancel: threading.Event) -> str:
        """A streamable reference for ``ref``: local models (and few-shot references over local
        models) go through our serve child, which shares one base's weights between columns;
        remote ones (few-shot over a remote model included) stream directly."""
        if is_remote(ref):
            return ref
        local = [ref]
        for other in list(self.conversation.models):
            try:
                if other != ref and other not in local and not is_remote(other):
                    local.append(other)
            except TunetermError:
                pass
        return self.servers.ensure(local, cancel=cancel)[ref]

    # --- sending -------------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "chat-prompt":
            return
        event.stop()
        if self.send(event.value):
            event.input.value = ""

    def params_for(self, column: int) -> dict:
        return {**DEFAULT_PARAMS, **self.conversation.params_for(column)}

    def send(self, text: str) -> bool:
        """Send ``text`` to every column; False when there is nothing to send or streams still run."""
        text = text.strip()
        if not text:
            return False
        if self.streaming:
            self.notify("still answering: wait, or press escape to stop", severity="warning")
            return False
        if self.blind.active:
            self.blind.new_round(text)
        turn = self.conversation.add_user(text)
        for col in self.columns:
            self._unrecorded.add(col.index)
            col.start(turn, self.conversation.history(col.index), self.params_for(col.index))
        return True

    def stop_all(self) -> None:
        for col in self.columns:
            col.stop()

    def action_stop(self) -> None:
        if self.streaming:
            self.stop_all()
            self.notify("stopped")
        elif not self.query_one("#chat-diff").has_class("-hidden"):
            self.query_one("#chat-diff").add_class("-hidden")

    def on_chat_column_answer_finished(self, event: ChatColumn.AnswerFinished) -> None:
        if event.text and event.turn < self.conversation.n_turns:
            self.conversation.set_answer(event.turn, event.column, event.text, event.model,
                                         {**event.stats, "stopped": event.stopped})
        self._unrecorded.discard(event.column)
        if self._diff_pair and event.column in self._diff_pair:
            self.show_diff(*self._diff_pair)
        self.blind.answer_finished()

    # --- blind votes and the judge (tuneterm/tui/chat_blind.py) --------------------------------

    def action_toggle_blind(self) -> None:
        self.blind.toggle()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "vote":  # digits go to the app's screen keys unless a blind round awaits a vote
            return self.blind.can_vote()
        return True

    def action_vote(self, outcome: str) -> None:
        self.blind.vote(outcome)

    def action_judge(self) -> None:
        self.blind.ask_judge()

    def on_voted(self, event) -> None:
        self.blind.on_voted(event)

    def on_judged(self, event) -> None:
        self.blind.on_judged(event)

    # --- columns -------------------------------------------------------------------------------

    def add_column(self, ref: str) -> None:
        if len(self.columns) >= MAX_COLUMNS:
            self.notify(f"at most {MAX_COLUMNS} columns", severity="warning")
            return
        modelref.parse(ref)
        self.conversation.models.append(ref)
        col = ChatColumn(len(self.conversation.models) - 1, ref, self._route)
        self.query_one("#chat-columns").mount(col)
        col.pending_history = self.conversation.history(col.index)  # shown once the column is built
        self.selected = col.index
        self._mark_selected()
        self.columns_changed()

    def remove_column(self, index: int) -> None:
        if len(self.columns) <= 1:
            self.notify("the last column stays; swap its model instead (ctrl+r)", severity="warning")
            return
        if self.streaming:
            self.notify("stop the streams first (escape)", severity="warning")
            return
        self.conversation.remove_column(index)
        self.columns[index].remove()
        for col in self.columns:
            if col.index > index:
                col.index -= 1
                col.set_model(col.model)
        self.selected = min(self.selected, len(self.conversation.models) - 1)
        self._diff_pair = None
        self._mark_selected()
        self.columns_changed()

    def swap_model(self, index: int, ref: str) -> None:
        """Give column ``index`` another model; the conversation (and its past answers) stays."""
        modelref.parse(ref)
        col = self.columns[index]
        if col.streaming:
            col.stop()
        self.conversation.models[index] = ref
        col.set_model(ref)
        self.columns_changed()

    def action_select(self, step: int) -> None:
        self.selected = (self.selected + step) % len(self.columns)
        self._mark_selected()

    def action_add_column(self) -> None:
        from tuneterm.tui.widgets.chat_dialogs import ChatLineModal

        self.app.push_screen(ChatLineModal("Model for the new column:", placeholder="job:ID, openai:gpt-4o-mini, "
                                           "http://127.0.0.1:8000/v1#MODEL"), self._guarded(self.add_column))

    def action_remove_column(self) -> None:
        self.remove_column(self.selected)

    def action_swap_model(self) -> None:
        from tuneterm.tui.widgets.chat_dialogs import ChatLineModal

        index = self.selected
        self.app.push_screen(ChatLineModal(f"New model for column {index + 1}:", self.conversation.models[index]),
                             self._guarded(lambda ref: self.swap_model(index, ref)))

    def _guarded(self, fn):
        def callback(value) -> None:
            if value is None:
                return
            try:
                fn(value)
            except TunetermError as err:
                self.report_error(err)

        return callback

    # --- diff ----------------------------------------------------------------------------------

    def show_diff(self, a: int, b: int) -> None:
        cols = self.columns
        diff = self.query_one("#chat-diff", ChatDiff)
        diff.show(f"{a + 1}. {cols[a].model}", cols[a].answer, f"{b + 1}. {cols[b].model}", cols[b].answer)
        diff.remove_class("-hidden")
        self._diff_pair = (a, b)

    def action_diff(self) -> None:
        diff = self.query_one("#chat-diff", ChatDiff)
        if not diff.has_class("-hidden"):
            diff.add_class("-hidden")
            self._diff_pair = None
            return
        if len(self.columns) < 2:
            self.notify("a diff needs two columns (ctrl+o adds one)", severity="warning")
            return
        self.show_diff(self.selected, (self.selected + 1) % len(self.columns))

    # --- settings ------------------------------------------------------------------------------

    def set_settings(self, system: str | None = None, **params) -> None:
        s = self.conversation.settings
        if system is not None:
            s["system"] = system
        s["params"] = {**DEFAULT_PARAMS, **(s.get("params") or {}), **params}
        self._render_settings()

    def set_column_settings(self, index: int, system: str | None = None, **params) -> None:
        self.conversation.set_column_settings(index, system, params)
        self._render_settings()

    def action_settings(self) -> None:
        from tuneterm.tui.widgets.chat_dialogs import ChatSettingsModal

        s = self.conversation.settings

        def done(result: dict | None) -> None:
            if result is not None:
                self.set_settings(result["system"], **result["params"])

        self.app.push_screen(ChatSettingsModal("Settings for every column", s.get("system") or "",
                                               {**DEFAULT_PARAMS, **(s.get("params") or {})}), done)

    def action_column_settings(self) -> None:
        from tuneterm.tui.widgets.chat_dialogs import ChatSettingsModal

        index = self.selected
        cols = self.conversation.settings.get("columns") or []
        own = cols[index] if index < len(cols) and cols[index] else {}

        def done(result: dict | None) -> None:
            if result is not None:
                self.set_column_settings(index, result["system"] or None, **result["params"])

        self.app.push_screen(ChatSettingsModal(f"Overrides for column {index + 1}", own.get("system") or "",
                                               own.get("params") or {}, inherit=True), done)

    # --- saving, reopening, exporting ------------------------------------------------------

    def save_conversation(self) -> None:
        conv = self.conversation

        def work() -> None:
            self.post_message(self.ConversationSaved(convs.save(conv)))

        self.run_worker(work, thread=True, group="chat-db", exit_on_error=False, name="save conversation")

    def on_chat_screen_conversation_saved(self, event: ConversationSaved) -> None:
        self._render_settings()
        self.notify(f"conversation #{event.conversation_id} saved")

    def action_save(self) -> None:
        self.save_conversation()

    def open_conversation(self, conversation_id: int) -> None:
        def work() -> None:
            self.post_message(self.ConversationOpened(convs.load(conversation_id)))

        self.run_worker(work, thread=True, group="chat-db", exit_on_error=False, name="open conversation")

    async def on_chat_screen_conversation_opened(self, event: ConversationOpened) -> None:
        self.stop_all()
        self._unrecorded.clear()  # the old columns' answers belong to the old conversation
        self.conversation = event.conversation
        box = self.query_one("#chat-columns")
        await box.remove_children()
        new = [ChatColumn(i, m, self._route) for i, m in enumerate(self.conversation.models[:MAX_COLUMNS])]
        await box.mount_all(new)
        for col in new:
            col.show_history(self.conversation.history(col.index))
            last = self.conversation.answer(self.conversation.n_turns - 1, col.index)
            col.answer = last.content if last else ""
        self.selected = 0
        self._mark_selected()
        self._render_settings()
        self.columns_changed()

    def action_reopen(self) -> None:
        from tuneterm.tui.widgets.chat_dialogs import OpenConversationModal

        def work() -> list:
            return convs.list_conversations()

        async def pick() -> None:
            worker = self.run_worker(work, thread=True, group="chat-db", exit_on_error=False)
            summaries = await worker.wait()
            self.app.push_screen(OpenConversationModal(summaries),
                                 lambda cid: self.open_conversation(cid) if cid is not None else None)

        self.run_worker(pick(), exit_on_error=False)

    def action_new_conversation(self) -> None:
        if self.streaming:
            self.notify("stop the streams first (escape)", severity="warning")
            return
        settings = self.conversation.settings
        self.conversation = convs.Conversation(list(self.conversation.models), settings)
        for col in self.columns:
            col.show_history([])
            col.answer = ""
        self._render_settings()

    def export(self, path: str) -> None:
        conv = self.conversation

        def work() -> None:
            self.post_message(self.Exported(convs.export(conv, path)))

        self.run_worker(work, thread=True, group="chat-db", exit_on_error=False, name="export conversation")

    def on_chat_screen_exported(self, event: Exported) -> None:
        self.notify(f"exported to {event.path}")

    def action_export(self) -> None:
        from tuneterm.tui.widgets.chat_dialogs import ChatLineModal

        self.app.push_screen(ChatLineModal("Export to (.jsonl or .md):", "conversation.md"), self._guarded(self.export))

    def save_turn(self, column: int, target: str, edited: str | None = None, turn: int | None = None) -> None:
        conv = self.conversation
        turn = conv.n_turns - 1 if turn is None else turn

        def work() -> None:
            self.post_message(self.TurnSaved(convs.save_turn_to_dataset(conv, turn, column, target, edited)))

        self.run_worker(work, thread=True, group="chat-db", exit_on_error=False, name="save turn")

    def on_chat_screen_turn_saved(self, event: TurnSaved) -> None:
        self.notify(f"example appended to {event.path}")

    def action_save_turn(self) -> None:
        from tuneterm.tui.widgets.chat_dialogs import SaveTurnModal

        index = self.selected
        if self.conversation.n_turns == 0:
            self.notify("nothing to save yet", severity="warning")
            return
        col = self.columns[index]

        def done(result) -> None:
            if result is not None:
                target, text = result
                self.save_turn(index, target, text)

        self.app.push_screen(SaveTurnModal(col.model, col.answer), done)

    def report_error(self, exc: BaseException) -> None:
        report = getattr(self.app, "report_error", None)
        if report is not None:
            report(exc)
        else:  # pragma: no cover - a host app without report_error
            self.notify(str(exc), severity="error")
