"""Issue 18 items 1-2 and issue 24's Chat keys, with Pilot: the workbench opens on Chat with the base,
the newest tuned job and its quantized artifact (each with its trained system prompt), the column
headers show the scores of a finished eval job launched from the Chat screen, and the Chat keys are
ones a browser leaves to the page. Real jobs: a tiny LoRA train job, an int8 quantize job over it and
an eval job run by the real job launcher."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from chat_jobs import build
from tuneterm.tui.screens.chat import ChatScreen
from tuneterm.tui.widgets.score_header import ScoreHeader


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    return build(tiny_model_dir, tmp_path_factory.mktemp("chat-ready-jobs") / "ws")


async def wait_for(pilot, cond, what: str, give_up_s: float = 600.0) -> None:
    """A give-up bound in wall-clock time, not a timing assertion (the machine may be loaded)."""
    deadline = time.monotonic() + give_up_s
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def test_the_start_screen_follows_the_setting_and_the_jobs(built, tmp_workspace, monkeypatch):
    from tuneterm.core.chat_lineup import default_lineup, start_screen
    from tuneterm.core.settings import get_settings

    assert start_screen("auto") == "datasets"  # a first run starts with data
    assert default_lineup().refs == ("smollm2-135m-instruct",)
    built.install(tmp_workspace)
    assert start_screen("auto") == "chat"
    assert start_screen("datasets") == "datasets"
    monkeypatch.setenv("TUNETERM_START_SCREEN", "datasets")
    assert get_settings(fresh=True).start_screen == "datasets"
    from tuneterm.core.errors import ConfigError

    monkeypatch.setenv("TUNETERM_START_SCREEN", "jobs")  # a bad value is named, with where it came from
    with pytest.raises(ConfigError) as err:
        get_settings(fresh=True)
    assert err.value.title == "the setting start_screen is not valid"
    assert ("environment", "TUNETERM_START_SCREEN") in err.value.facts
    monkeypatch.delenv("TUNETERM_START_SCREEN")
    get_settings(fresh=True)


async def test_the_workbench_opens_on_chat_with_three_variants(built, tmp_workspace, tiny_model_dir):
    from tuneterm.tui.app import TunetermApp

    built.install(tmp_workspace)
    app = TunetermApp(start="auto")
    async with app.run_test(size=(150, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.columns, "the Chat screen")
        screen = app.screen
        assert [c.model for c in screen.columns] == [str(tiny_model_dir), f"job:{built.tuned}",
                                                     f"job:{built.quantized}"]
        titles = [str(c.query_one(".col-title").render()) for c in screen.columns]
        assert titles == [f"1. {tiny_model_dir.name}", f"2. job:{built.tuned}", f"3. job:{built.quantized}"]
        # each tuned column uses its trained system prompt, and says so
        await wait_for(pilot, lambda: screen.trained_ready, "the trained system prompts")
        assert any(f"column 2: using the system prompt job {built.tuned} was trained with" in n.message
                   for n in app._notifications)
        assert [c.border_subtitle for c in screen.columns] == [
            "", f"trained prompt ({len(built.system)} chars)", f"trained prompt ({len(built.system)} chars)"]
        assert screen.conversation.system_for(0) == ""
        assert screen.conversation.system_for(1) == screen.conversation.system_for(2) == built.system
        assert "trained system prompt in column(s) 2, 3" in str(screen.query_one("#chat-settings").render())
        assert screen.conversation.history(1)[0] == {"role": "system", "content": built.system}
        # a turn: each column streams from the screen's serve child; the tuned ones saw their trained prompt
        screen.set_settings(max_tokens=2)
        screen.send("My card was charged twice")
        await wait_for(pilot, lambda: not screen.streaming, "the three answers")
        tokens = [screen.conversation.answer(0, i).stats["prompt_tokens"] for i in range(3)]
        import io
        from contextlib import redirect_stderr, redirect_stdout

        from tuneterm.cli import main

        out = io.StringIO()
        with redirect_stdout(out), redirect_stderr(io.StringIO()):
            assert main(["chat", f"job:{built.tuned}", "My card was charged twice", "-n", "2", "--json"]) == 0
        assert tokens[1] == tokens[2] == json.loads(out.getvalue())["prompt_tokens"] > tokens[0]
        # a shared system prompt set by the user overrides the trained one
        screen.set_settings(system="Be brief.")
        assert screen.conversation.system_for(2) == "Be brief."
        assert "trained system prompt in column" not in str(screen.query_one("#chat-settings").render())
        await wait_for(pilot, lambda: all(c.query(ScoreHeader) for c in screen.columns), "the score headers")
        assert screen.columns[1].query_one(ScoreHeader).lines[0].startswith("no eval results yet")


async def test_headers_show_the_scores_of_an_eval_job_launched_from_chat(built, tmp_workspace, tiny_model_dir):
    from tuneterm.core import jobs
    from tuneterm.tui.app import TunetermApp

    built.install(tmp_workspace)
    app = TunetermApp(start="chat")
    async with app.run_test(size=(150, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.columns, "the Chat screen")
        screen = app.screen
        await pilot.press("ctrl+e")
        await wait_for(pilot, lambda: app.screen is not screen, "the eval dialog")
        line = app.screen.query_one("#line")
        assert line.value.endswith("tickets")  # the spec offered
        line.value = "evals/tickets 6"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.eval_job_id is not None, "the eval job to start")
        job_id = screen.eval_job_id
        spec = jobs.read_spec(jobs.get_job(job_id).dir)["config"]
        assert spec["models"] == [str(tiny_model_dir), f"job:{built.tuned}", f"job:{built.quantized}"]
        assert spec["baseline"] == str(tiny_model_dir) and spec["limit"] == 6
        def scored() -> bool:
            state = jobs.get_job(job_id).state
            assert state not in ("failed", "cancelled"), jobs.tail_log(job_id)  # fail now, not at the give-up
            found = screen.column_scores
            return screen.eval_job_id is None and bool(found) and all(c.scores for c in found)

        await wait_for(pilot, scored, "the eval job's scores")
        assert jobs.get_job(job_id).state == "succeeded", jobs.tail_log(job_id)
        headers = [c.query_one(ScoreHeader).lines for c in screen.columns]
        value = re.compile(r"^\d+\.\d \[\d+\.\d, \d+\.\d\] exact_match · tickets$")  # value [95% CI] metric · task
        assert value.match(headers[0][0]), headers[0]
        assert not any("Δ" in line for line in headers[0])  # the first column is the baseline
        for lines in headers[1:]:
            assert value.match(lines[0]), lines
            assert re.match(r"^Δ [+-]\d+\.\d pt\b.* p=", lines[1]), lines  # the paired difference vs column 1
        assert screen.column_scores[1].source == f"job {job_id}"
        from tuneterm.core.evals.latest import latest_scores

        by_suffix = latest_scores([str(tiny_model_dir), f"job:{built.tuned[-4:]}"])  # refs match in full
        assert by_suffix[1].scores and by_suffix[1].scores[0].delta is not None
    # the same scores headless: `chat --compare` with no models prints them under each model's title
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from tuneterm.cli import main

    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert main(["chat", "--compare", "My card was charged twice", "-n", "1"]) == 0
    printed = out.getvalue().splitlines()
    at = printed.index(f"── job:{built.tuned} ──")
    assert re.match(r"^   \d+\.\d \[.*\] exact_match · tickets  Δ [+-]\d+\.\d pt.* p=", printed[at + 1]), printed
    assert app.return_value is None


async def test_chat_keys_are_ones_a_browser_leaves_to_the_page():
    from textual.app import App

    bound = {b.key for b in ChatScreen.BINDINGS}
    assert not bound & {"ctrl+n", "ctrl+w", "ctrl+t"}  # new window, close tab, new tab: never reach the page
    assert {"ctrl+o", "ctrl+x", "ctrl+k", "ctrl+e"} <= bound

    pool = Path(__file__).resolve().parents[1] / "sample_data" / "fewshot" / "pool.jsonl"

    class Host(App):
        def on_mount(self) -> None:
            echo = "http://127.0.0.1:9/v1#echo"
            self.push_screen(ChatScreen(models=[echo, f"fewshot:2:{pool}@{echo}"]))

    app = Host()
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause()
        # every column has a title: a long few-shot reference wrapped after "2." and looked blank
        titles = [c.query_one(".col-title") for c in app.screen.columns]
        assert [str(t.render()) for t in titles] == ["1. echo @ 127.0.0.1:9",
                                                     "2. 2-shot pool.jsonl @ echo @ 127.0.0.1:9"]
        assert all(t.styles.text_wrap == "nowrap" and t.styles.text_overflow == "ellipsis" for t in titles)
        assert titles[1].parent.tooltip.startswith("fewshot:2:")
        # columns added in a row both show the conversation so far (the second one used to crash)
        screen = app.screen
        screen.conversation.add_user("hello")
        screen.add_column("http://127.0.0.1:9/v1#third")
        screen.add_column("http://127.0.0.1:9/v1#fourth")
        await pilot.pause(0.2)
        for col in screen.columns[2:]:
            assert [str(w.render()) for w in col.query(".msg-user")] == ["> hello"]
        assert {"ctrl+o", "ctrl+x", "ctrl+k", "ctrl+e"} <= set(app.active_bindings)  # all active here
        shown = {key for key, active in app.active_bindings.items() if active.binding.show}  # the footer's keys
        assert "ctrl+o" in shown  # the rest stay in the keys panel: the footer must fit 80 columns
