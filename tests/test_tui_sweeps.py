"""The Sweep view (key 8): the workspace's sweeps and the selected one's leaderboard, live as the
sweep's state file changes (the state files are written by the real sweep code; no jobs run)."""

from __future__ import annotations

from tui_recording import RecordingApp

from tuneterm.core.resources import sample_data_dir
from tuneterm.core.sweep import runner
from tuneterm.core.sweep.prepare import prepare
from tuneterm.tui.navigation import BY_MODE
from tuneterm.tui.screens.sweeps import SweepsScreen

SPACE = """
[methods.fewshot]
k = [2, 4]
sampler = ["random"]
[methods.feature]
layer = [-1]
"""


async def _until(pilot, predicate, tries=100):
    for _ in range(tries):
        await pilot.pause(0.05)
        if predicate():
            return True
    return False


def _score(trial: dict, value: float, job: str) -> None:
    trial["runs"] = [{"rung": 0, "steps": None, "train_job": None, "eval_job": job, "phase": "done",
                      "ref": f"ref-{job}", "score": {"value": value, "ci95": [value - 0.1, value + 0.1], "n": 60},
                      "cost": {"wall_s": 12.0, "peak_mem_mb": 300.0}}]
    trial["status"] = "done"


def _cells(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_the_sweep_view_shows_the_leaderboard_live(tmp_path):
    assert BY_MODE["sweeps"].key == "8"
    model = tmp_path / "model"
    model.mkdir()
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    prepared = prepare(str(model), str(sample_data_dir() / "tickets" / "train.jsonl"), space=str(space),
                       job_kinds={"train", "feature", "eval"})
    state = prepared.state
    state["status"] = "running"
    fewshot = next(t for t in state["trials"] if t["label"] == "fewshot k=2 sampler=random")
    feature = next(t for t in state["trials"] if t["method"] == "feature")
    _score(fewshot, 0.40, "20261205-000000-aaaa")
    runner.save_state(prepared.folder, state)

    app = RecordingApp(start="jobs")
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("8")
        assert await _until(pilot, lambda: isinstance(app.screen, SweepsScreen))
        screen = app.screen
        listing = screen.query_one("#sweep-list")
        board = screen.query_one("#sweep-board")
        assert await _until(pilot, lambda: listing.row_count == 1 and board.row_count == 3)
        assert _cells(listing)[0][:2] == [state["id"], "classification"]
        rows = _cells(board)
        assert rows[0][:3] == ["1", "fewshot k=2 sampler=random", "40.0 [30.0, 50.0]"]
        assert rows[0][-1] == "job:20261205-000000-aaaa"
        assert [r[0] for r in rows[1:]] == ["–", "–"]  # not scored yet
        assert "ranked by validation exact_match" in str(screen.query_one("#sweep-summary").render())

        # the sweep moves on: the feature trial scores better and takes first place, live
        _score(feature, 0.85, "20261205-000000-bbbb")
        state["final"] = {"state": "done", "eval_job": "20261205-000000-cccc", "refs": [], "scores": {
            "best": {"ref": "job:b", "value": 0.85, "ci95": [0.75, 0.92], "n": 80}},
            "comparisons": [], "warnings": ["the best trial and the runner-up differ by +0.010, within noise"]}
        runner.save_state(prepared.folder, state)
        screen.poke_jobs()
        assert await _until(pilot, lambda: _cells(board)[0][1] == "feature layer=-1")
        assert _cells(board)[1][:2] == ["2", "fewshot k=2 sampler=random"]
        final = str(screen.query_one("#sweep-final").render())
        assert "test split" in final and "within noise" in final
        assert await _until(pilot, lambda: _cells(listing)[0][7] == "feature layer=-1")
