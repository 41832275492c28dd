"""Blind mode and the judge for the Chat screen (the screen only binds keys and calls in here).

Blind mode (ctrl+b): every prompt starts a fresh round; the screen's models are shuffled over
the columns, whose titles become "Model 1..N". When every answer is in, the prompt box lets go
of the focus and the vote bar asks for a vote: 1-4 (that answer is better), t (tie), b (both
bad). The vote is stored in the workspace database (tuneterm.core.votes) and the names are
revealed. ctrl+b again puts the models back in their columns under their names.

The judge (j, when the prompt box does not have the focus): a judge model reference grades the visible answers
against the rubric (tuneterm.core.judge); its grades are shown under each answer and stored as
the judge's vote. A local judge is served by the screen's ``serve`` child, never loaded in the UI.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message
from textual.widgets import Static

from tuneterm.core import conversations as convs
from tuneterm.core.votes import Round, shuffle_order

if TYPE_CHECKING:  # pragma: no cover
    from tuneterm.core.judge import Verdict
    from tuneterm.tui.screens.chat import ChatScreen

VOTE_KEYS = "1-{n} better · t tie · b both bad · j judge · i write"


@dataclass
class Voted(Message):
    outcome: str
    variants: list


@dataclass
class Judged(Message):
    verdict: "Verdict"
    round_id: str


class BlindMode:
    """The blind-vote state of one Chat screen."""

    def __init__(self, screen: "ChatScreen") -> None:
        self.screen = screen
        self.active = False
        self.models: list[str] = []  # the columns' models as the user set them (restored on leaving)
        self.overrides: list = []    # their per-column settings, which travel with the model when shuffled
        self.round: Round | None = None
        self.voted = False
        self.rounds = 0
        self.judge_ref: str | None = None

    # --- the bar under the columns ----------------------------------------------------------------

    def _bar(self, text: str | None) -> None:
        bar = self.screen.query_one("#chat-vote-bar", Static)
        bar.set_class(text is None, "-hidden")
        bar.update(text or "")

    # --- entering and leaving ---------------------------------------------------------------------

    def toggle(self) -> None:
        s = self.screen
        if s.streaming:
            s.notify("stop the streams first (escape)", severity="warning")
            return
        if not self.active and len(s.columns) < 2:
            s.notify("blind mode needs two columns or more (ctrl+o adds one)", severity="warning")
            return
        self.active = not self.active
        self.round, self.voted = None, False
        if self.active:
            self.models = list(s.conversation.models)
            self.overrides = list(s.conversation.settings.get("columns") or [])
            for col in s.columns:
                col.blind_title = f"Model {col.index + 1}"
                col.set_model(col.model)
            self._bar(f"blind mode: {len(self.models)} models, shuffled per prompt; write a prompt (i)")
        else:
            s.conversation.settings["columns"] = list(self.overrides)
            for col, model in zip(s.columns, self.models):
                col.blind_title = None
                s.conversation.models[col.index] = model
                col.set_model(model)
            self._bar(None)
        s.notify("blind mode on: names hidden" if self.active else "blind mode off")

    def new_round(self, text: str) -> None:
        """Before a prompt is sent in blind mode: a fresh conversation, models shuffled over columns."""
        s = self.screen
        models = self.models[:len(s.columns)]
        order = shuffle_order(len(models))
        shown = [models[i] for i in order]
        settings = dict(s.conversation.settings)
        if self.overrides:  # a model keeps its own system prompt and settings in whichever column it lands
            settings["columns"] = [self.overrides[i] if i < len(self.overrides) else {} for i in order]
        s.conversation = convs.Conversation(list(shown), settings)
        for col, ref in zip(s.columns, shown):
            col.blind_title = f"Model {col.index + 1}"
            col.set_model(ref)
            col.show_history([])
            col.answer = ""
        system = (s.conversation.settings.get("system") or "").strip()
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        params = s.params_for(0)
        if self.overrides:
            params["columns"] = settings["columns"]
        self.round = Round(text, shown, [], order, messages, params)
        self.voted = False
        self.rounds += 1
        self._bar(f"round {self.rounds}: answering…")

    def answer_finished(self) -> None:
        """After each column's answer: when all are in, ask for the vote (focus leaves the prompt)."""
        s = self.screen
        if not self.active or self.round is None or self.voted or s.streaming:
            return
        self.round.answers = [col.answer for col in s.columns]
        s.set_focus(None)
        self._bar(f"round {self.rounds}: which is better? " + VOTE_KEYS.format(n=len(s.columns)))

    # --- votes --------------------------------------------------------------------------------------

    def can_vote(self) -> bool:
        return self.active and self.round is not None and bool(self.round.answers) and not self.voted

    def vote(self, outcome: str) -> None:
        s = self.screen
        if not self.can_vote():
            s.notify("nothing to vote on: send a prompt in blind mode first", severity="warning")
            return
        rnd = self.round
        if outcome.isdigit() and int(outcome) > len(rnd.variants):
            s.notify(f"there are {len(rnd.variants)} answers", severity="warning")
            return
        self.voted = True

        def work() -> None:
            from tuneterm.core.votes import record

            vote = record(rnd, outcome)
            s.post_message(Voted(vote.outcome, vote.variants))

        s.run_worker(work, thread=True, group="chat-db", exit_on_error=False, name="record vote")

    def on_voted(self, event: Voted) -> None:
        names = " · ".join(f"Model {i}: {ref}" for i, ref in enumerate(event.variants, 1))
        what = {"tie": "tie", "both_bad": "both bad"}.get(event.outcome, f"Model {event.outcome} better")
        self._bar(f"vote stored ({what}). {names} · next prompt (i)")
        self.screen.notify(f"vote stored: {what}")

    # --- the judge ----------------------------------------------------------------------------------

    def visible_round(self) -> Round | None:
        """The round the judge grades: the blind round, or the last answers of the columns."""
        s = self.screen
        if self.active:
            return self.round if self.round is not None and self.round.answers else None
        if s.conversation.n_turns == 0 or s.streaming:
            return None
        turn = s.conversation.n_turns - 1
        history = s.conversation.history(0)
        prompt = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        return Round(prompt, list(s.conversation.models), [col.answer for col in s.columns],
                     list(range(len(s.columns))), history[: len(history)], s.params_for(0),
                     round_id=f"chat-{id(s.conversation)}-{turn}")

    def ask_judge(self) -> None:
        from tuneterm.tui.widgets.chat_dialogs import ChatLineModal

        s = self.screen
        if self.visible_round() is None:
            s.notify("no finished answers to judge yet", severity="warning")
            return
        s.app.push_screen(ChatLineModal("Judge model (any model reference):", self.judge_ref or "",
                                        placeholder="openai:gpt-4o-mini, smollm2-135m-instruct, job:ID"),
                          lambda ref: self.judge(ref) if ref else None)

    def judge(self, ref: str) -> None:
        s = self.screen
        rnd = self.visible_round()
        if rnd is None:
            s.notify("no finished answers to judge yet", severity="warning")
            return
        self.judge_ref = ref.strip()
        cancel = threading.Event()
        s.notify(f"asking the judge {self.judge_ref}…")

        def work() -> None:
            from tuneterm.core.judge import judge_round

            try:
                verdict = judge_round(rnd, self.judge_ref, route=lambda r: s._route(r, cancel))
            except Exception as exc:  # shown through the app's error report
                s.call_from_thread(s.report_error, exc)
                return
            s.post_message(Judged(verdict, rnd.round_id))

        s.run_worker(work, thread=True, group="chat-judge", exclusive=True, exit_on_error=False, name="judge")

    def on_judged(self, event: Judged) -> None:
        verdict = event.verdict
        for col in self.screen.columns:
            if col.index < len(verdict.scores):
                log = col.query_one(".col-log")
                log.mount(Static(verdict.label(col.index), classes="msg-judge", markup=False))
                log.scroll_end(animate=False)
        self.screen.notify(f"judge {verdict.judge}: " + {"tie": "a tie", "both_bad": "both bad"}.get(
            verdict.outcome, f"Model {verdict.outcome}" if self.active else f"column {verdict.outcome}"))
