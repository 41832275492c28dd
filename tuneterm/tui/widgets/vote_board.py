"""VoteBoard: the blind-vote win-rate table and Bradley-Terry ranking, on the Evals screen.

The summary (tuneterm.core.vote_stats) is computed in a thread worker, which posts
:class:`VoteBoard.Loaded`; the board draws it as ``tuneterm eval votes`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static


class VoteBoard(VerticalScroll):
    DEFAULT_CSS = """
    VoteBoard { width: 1fr; padding: 0 1; overflow-x: auto; }
    VoteBoard.-hidden { display: none; }
    VoteBoard #vote-board-text { width: auto; }
    """

    @dataclass
    class Loaded(Message):
        summary: dict
        text: str

    def compose(self):
        yield Static("reading votes…", id="vote-board-text", markup=False)

    def load(self) -> None:
        """Read the votes and compute the table (a thread worker; latest wins)."""

        def work() -> None:
            from tuneterm.core import vote_stats, votes

            summary = vote_stats.summary(votes.list_votes())
            self.post_message(self.Loaded(summary, vote_stats.render(summary)))

        self.run_worker(work, thread=True, group="vote-board", exclusive=True, exit_on_error=False,
                        name="read votes")

    def on_vote_board_loaded(self, event: Loaded) -> None:
        self.summary = event.summary
        self.query_one("#vote-board-text", Static).update(
            "blind votes · ctrl+y: the report · ctrl+e: votes to a dataset\n\n" + event.text)
