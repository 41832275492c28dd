"""What makes the Chat screen open ready: each column's trained system prompt, its latest eval scores
in its header, and one key (ctrl+e) that evaluates exactly the variants on screen as an eval job.

A mixin for :class:`tuneterm.tui.screens.chat.ChatScreen`, which calls :meth:`ChatReadyMixin.ready_mount`
once mounted and :meth:`ChatReadyMixin.columns_changed` whenever its columns change. Reading job
folders and reports happens in thread workers; the results come back with ``call_from_thread``.
"""

from __future__ import annotations

from pathlib import Path

from tuneterm.core.errors import TunetermError
from tuneterm.tui.widgets.score_header import ScoreHeader

EVAL_KEY = "ctrl+e"
OVERRIDE_HINT = "ctrl+g (every column) or f2 (this column) to override"


class ChatReadyMixin:
    eval_job_id: str | None = None  # the eval job launched from this screen, until it ends
    _evals_seen: frozenset = frozenset()  # succeeded eval jobs at the last read: a new one re-reads scores
    _announced: frozenset = frozenset()  # (column model, job) pairs whose trained prompt was announced
    column_scores: list | None = None  # the last ColumnScores read, one per column
    trained_ready = False  # True once the columns' trained system prompts are read

    # --- hooks the screen calls ---------------------------------------------------------------------

    def ready_mount(self) -> None:
        self.apply_trained_prompts()
        self.watch_jobs(self._chat_jobs_seen)
        self.refresh_scores()

    def columns_changed(self) -> None:
        self.apply_trained_prompts()
        self.call_after_refresh(self.refresh_scores)

    # --- trained system prompts -----------------------------------------------------------------------

    def apply_trained_prompts(self) -> None:
        """Give each column the system prompt its job was trained with (used unless a system prompt is
        set for the column or the conversation), mark the column, and say so once per model. The job
        folders are read in a thread (a job from before the prompt was recorded reads its data file)."""
        models = list(self.conversation.models)
        self.run_worker(lambda: self._read_trained(models), thread=True, group="chat-trained", exclusive=True,
                        exit_on_error=False, name="read trained system prompts")

    def _read_trained(self, models: list[str]) -> None:
        from tuneterm.core.trained_prompt import for_ref

        found = [for_ref(m) for m in models]
        self.app.call_from_thread(self._show_trained, models, found)

    def _show_trained(self, models: list[str], found: list) -> None:
        if models != list(self.conversation.models):  # the columns changed meanwhile; a new read is coming
            return
        notes = []
        for col in self.columns:
            trained = found[col.index] if col.index < len(found) else None
            self.conversation.set_trained_system(col.index, trained.text if trained else None,
                                                 trained.job_id if trained else None)
            col.border_subtitle = f"trained prompt ({len(trained.text)} chars)" if trained else ""
            if trained is not None and (col.model, trained.job_id) not in self._announced:
                self._announced = self._announced | {(col.model, trained.job_id)}
                notes.append(f"column {col.index + 1}: {trained.announce(OVERRIDE_HINT)}")
        self.trained_ready = True
        if notes:
            self.notify("\n".join(notes), title="system prompts", timeout=10)
        self._render_settings()

    def trained_columns(self) -> list[int]:
        cols = self.conversation.settings.get("columns") or []
        return [i + 1 for i, c in enumerate(cols) if isinstance(c, dict) and c.get("trained_system")
                and i < len(self.conversation.models)]

    # --- scores in the headers -------------------------------------------------------------------------

    def refresh_scores(self) -> None:
        refs = list(self.conversation.models)
        self.run_worker(lambda: self._read_scores(refs), thread=True, group="chat-scores", exclusive=True,
                        exit_on_error=False, name="read eval scores")

    def _read_scores(self, refs: list[str]) -> None:
        from tuneterm.core.evals.latest import latest_scores

        scores = latest_scores(refs)
        self.app.call_from_thread(self._show_scores, refs, scores)

    def _show_scores(self, refs: list[str], scores: list) -> None:
        if refs != list(self.conversation.models):  # the columns changed meanwhile; a new read is coming
            return
        self.column_scores = scores
        for col in self.columns:
            header = self._score_header(col)
            if header is not None and col.index < len(scores):
                header.show(scores[col.index], running=self.eval_job_id, eval_key=EVAL_KEY)

    def _score_header(self, col) -> ScoreHeader | None:
        """The column's header under its stats line (None while the column is still being built)."""
        found = col.query(ScoreHeader)
        if found:
            return found.first()
        stats = col.query(".col-stats")
        if not stats:
            return None
        header = ScoreHeader(classes="col-scores")
        col.mount(header, after=stats.first())
        return header

    def _chat_jobs_seen(self, seen) -> None:
        evals = {str(j.id): str(j.state) for j in seen.of_kind("eval")}
        done = frozenset(j for j, state in evals.items() if state == "succeeded")
        mine = self.eval_job_id
        if mine is not None and evals.get(mine) in ("failed", "cancelled"):
            job = seen.job(mine)
            error = str(getattr(job, "error", "") or "").strip().splitlines()
            self.notify(f"eval job {mine} {evals[mine]}" + (f": {error[-1][:200]}" if error else "")
                        + f"; `tuneterm jobs logs {mine}` has the details", severity="error", timeout=10)
            self.eval_job_id = None
            self.refresh_scores()
        if done != self._evals_seen:
            if mine is not None and mine in done:
                self.eval_job_id = None
                self.notify(f"eval job {mine} finished: the headers show its scores", timeout=6)
            self._evals_seen = done
            self.refresh_scores()

    # --- the eval key ------------------------------------------------------------------------------------

    def action_eval_columns(self) -> None:
        from tuneterm.tui.widgets.chat_dialogs import ChatLineModal

        if self.eval_job_id is not None:
            self.notify(f"eval job {self.eval_job_id} is still running", severity="warning")
            return
        n = len(self.conversation.models)
        self.app.push_screen(
            ChatLineModal(f"Eval spec or suite for the {n} variant(s) on screen (optionally a limit: SPEC 50):",
                          default_spec(), placeholder="evals/tickets 50"),
            self._guarded(self.launch_eval))

    def launch_eval(self, line: str) -> None:
        """Launch an eval job of ``line`` (``SPEC [LIMIT]``) on exactly the columns' models, each compared
        with the first column."""
        spec, _, rest = line.strip().partition(" ")
        limit = int(rest) if rest.strip().isdigit() and int(rest) > 0 else None
        models = list(self.conversation.models)
        self.notify(f"checking {spec} on {len(models)} variant(s)…", timeout=3)
        self.run_worker(lambda: self._launch_eval(spec, models, limit), thread=True, group="chat-eval",
                        exclusive=True, exit_on_error=False, name="launch eval")

    def _launch_eval(self, spec: str, models: list[str], limit: int | None) -> None:
        from tuneterm.core import jobs
        from tuneterm.core.evals.views import check_and_config

        config, command = check_and_config(spec, models, limit)  # a typo fails here, before a job exists
        config["baseline"] = config["models"][0]  # every column against the first, as the headers show it
        job = jobs.create_job("eval", config, name=f"chat eval {Path(spec).stem}")
        jobs.launch(job.id)
        self.app.call_from_thread(self._eval_launched, str(job.id), f"{command} --baseline {config['baseline']}")

    def _eval_launched(self, job_id: str, command: str) -> None:
        self.eval_job_id = job_id
        self.follow_jobs(job_id)
        self.poke_jobs()
        self.notify(f"eval job {job_id} started on the columns; the headers update when it finishes\n"
                    f"same from the CLI: {command}", title="eval launched", timeout=8)
        if self.column_scores is not None:
            self._show_scores(list(self.conversation.models), self.column_scores)


def default_spec() -> str:
    """The spec the eval dialog offers: ``tickets`` when there is one, else the first found."""
    from tuneterm.core.evals.views import default_evals_dir, find_specs

    try:
        specs = find_specs(default_evals_dir())
    except (OSError, TunetermError):
        return ""
    cwd = Path.cwd()
    shown = []
    for s in specs:
        try:
            shown.append(str(Path(s).relative_to(cwd)))
        except ValueError:
            shown.append(s)
    return next((s for s in shown if s.rstrip("/").endswith("tickets")), shown[0] if shown else "")
