"""Blind votes and the judge on the Chat screen, the win-rate table on the Evals screen (Pilot).

Columns stream from a scripted OpenAI-compatible server on 127.0.0.1 (tests/fake_chat.py); votes go
to the real workspace database. Asserts state, not pixels."""

from __future__ import annotations

import random

from textual.widgets import Input, Static

from fake_chat import FakeChat, arena_reply
from test_tui_chat import ChatApp
from tui_recording import until
from tuneterm.core import votes
from tuneterm.tui.screens.chat import ChatScreen


def _titles(screen) -> list[str]:
    return [str(col.query_one(".col-title", Static).render()) for col in screen.columns]


async def _send(pilot, screen, text: str) -> None:
    await pilot.press("i")
    box = screen.query_one("#chat-prompt", Input)
    box.value = text
    await pilot.press("enter")
    assert await until(pilot, screen.blind.can_vote, tries=600), "the answers never finished"


async def test_blind_rounds_votes_and_judge():
    random.seed(5)
    with FakeChat(arena_reply) as fake:
        good, weak = fake.ref("good"), fake.ref("weak")
        screen = ChatScreen([good, weak])
        app = ChatApp(screen)
        async with app.run_test(size=(120, 32)) as pilot:
            await pilot.pause()
            assert "good" in _titles(screen)[0]
            await pilot.press("ctrl+b")
            assert screen.blind.active and _titles(screen) == ["Model 1", "Model 2"]
            orders = []
            for i in range(4):
                await _send(pilot, screen, f"What is the capital of France? ({i})")
                rnd = screen.blind.round
                orders.append(tuple(rnd.shuffle))
                assert _titles(screen) == ["Model 1", "Model 2"]  # names stay hidden while voting
                assert [c.model for c in screen.columns] == rnd.variants
                assert app.focused is None or not isinstance(app.focused, Input)  # keys now vote
                bar = str(screen.query_one("#chat-vote-bar", Static).render())
                assert "which is better?" in bar and "good" not in bar
                await pilot.press("1" if i < 3 else "t")
                assert await until(pilot, lambda: len(votes.list_votes()) == i + 1)
                assert await until(pilot, lambda: "vote stored" in str(screen.query_one("#chat-vote-bar").render()))
                assert good in str(screen.query_one("#chat-vote-bar").render())  # revealed after the vote
            assert set(orders) == {(0, 1), (1, 0)}  # shuffled per prompt (seeded)
            stored = votes.list_votes()
            assert [v.outcome for v in stored] == ["1", "1", "1", "tie"]
            assert all(v.winner == v.variants[0] for v in stored[:3])
            assert stored[0].answers[stored[0].variants.index(good)] == "The capital of France is Paris."
            assert stored[0].settings["temperature"] == 0.0 and stored[0].messages[-1]["role"] == "user"
            # a second vote on the same round is refused; the digit falls through to nothing harmful
            await pilot.press("2")
            await pilot.pause()
            assert len(votes.list_votes()) == 4
            # the judge grades the visible answers; the verdict shows beside each answer
            await pilot.press("j")
            await pilot.pause()
            modal_input = app.screen.query_one(Input)
            modal_input.value = fake.ref("judge")
            await pilot.press("enter")
            assert await until(pilot, lambda: len(screen.query(".msg-judge")) == 2, tries=400)
            labels = {col.model: str(col.query_one(".msg-judge", Static).render()) for col in screen.columns}
            assert labels[good] == "judge 8/10 · judge's pick" and labels[weak] == "judge 3/10"
            [verdict] = votes.list_votes("judge")
            assert verdict.winner == good and verdict.round_id == stored[-1].round_id
            # leaving blind mode puts the names back
            await pilot.press("ctrl+b")
            assert not screen.blind.active and "good @ " in _titles(screen)[0]


async def test_vote_keys_do_nothing_outside_a_blind_round():
    with FakeChat(arena_reply) as fake:
        screen = ChatScreen([fake.ref("good"), fake.ref("weak")])
        app = ChatApp(screen)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            screen.set_focus(None)
            await pilot.press("1", "t", "b")
            await pilot.pause()
            assert votes.list_votes() == [] and not screen.blind.active


async def test_evals_screen_shows_the_win_rate_table():
    from tuneterm.tui.app import TunetermApp
    from tuneterm.tui.widgets.vote_board import VoteBoard

    for outcome in ["1"] * 7 + ["2"] * 2:
        votes.record(votes.Round("q", ["openai:alpha", "openai:beta"], ["a", "b"], [0, 1]), outcome)
    app = TunetermApp(start="evals")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        board = screen.query_one(VoteBoard)
        assert board.has_class("-hidden")
        screen.set_focus(None)
        await pilot.press("ctrl+y")
        assert not board.has_class("-hidden")
        assert await until(pilot, lambda: getattr(board, "summary", None) is not None, tries=200)
        text = str(board.query_one("#vote-board-text", Static).render())
        assert "win rates" in text and "openai:alpha" in text and "too few votes" in text
        assert board.summary["ranking"][0]["model"] == "openai:alpha"
        row = next(line for line in text.splitlines() if line.startswith("openai:alpha"))
        assert row.split()[2:5] == ["7-2", "0", "78%"]
        await pilot.press("ctrl+y")
        assert board.has_class("-hidden")


async def test_a_local_judge_is_served_by_the_screens_serve_child(tiny_model_dir, tmp_path):
    """The judge key with a local model: it runs in the screen's `tuneterm serve` child, not in the UI, and its
    real reply is parsed by the eval judge metric's parser."""
    from test_tui_chat import wait_for

    from tuneterm.core.chat_client import LocalServers
    from tuneterm.core.evals.judge_prompt import parse_score

    with FakeChat(arena_reply) as fake:
        servers = LocalServers(log_dir=tmp_path / "logs")
        screen = ChatScreen([fake.ref("good"), fake.ref("weak")], servers=servers)
        app = ChatApp(screen)
        async with app.run_test(size=(120, 32)) as pilot:
            screen.send("What is the capital of France?")
            await wait_for(pilot, lambda: not screen.streaming and screen.columns[1].answer, "the answers")
            screen.blind.judge(str(tiny_model_dir))
            await wait_for(pilot, lambda: len(screen.query(".msg-judge")) == 2 or app.errors, "the verdict")
            assert not app.errors, app.errors
            [verdict] = votes.list_votes("judge")
            assert verdict.voter == f"judge:{tiny_model_dir.resolve()}"
            assert verdict.detail["scores"] == [parse_score(t) for t in verdict.detail["raw"]]
            labels = [str(col.query_one(".msg-judge", Static).render()) for col in screen.columns]
            assert labels[0].startswith(f"judge {verdict.detail['scores'][0] * 10:.0f}/10")
            assert verdict.variants == [fake.ref("good"), fake.ref("weak")] and verdict.shuffle == [0, 1]
            assert any(str(tiny_model_dir) in child.refs for child in servers.children)
        servers.stop_all()


async def test_a_models_own_settings_follow_it_through_the_shuffle():
    random.seed(1)
    with FakeChat(arena_reply) as fake:
        good, weak = fake.ref("good"), fake.ref("weak")
        screen = ChatScreen([good, weak])
        app = ChatApp(screen)
        async with app.run_test(size=(120, 32)) as pilot:
            await pilot.pause()
            screen.set_column_settings(0, "You are the tuned model.", temperature=0.0)
            await pilot.press("ctrl+b")
            columns_of_good = set()
            for i in range(4):
                fake.requests.clear()
                await _send(pilot, screen, f"hello {i}")
                columns_of_good.add(screen.blind.round.variants.index(good))
                sent = {r["model"]: r["messages"] for r in fake.requests}
                assert sent["good"][0] == {"role": "system", "content": "You are the tuned model."}
                assert sent["weak"][0]["role"] == "user"
                await pilot.press("t")
                assert await until(pilot, lambda: len(votes.list_votes()) == i + 1)
            assert columns_of_good == {0, 1}  # it was shown in both columns (seeded)
            await pilot.press("ctrl+b")
            assert screen.conversation.settings["columns"][0]["system"] == "You are the tuned model."
            assert [c.model for c in screen.columns] == [good, weak]


async def test_votes_export_from_the_evals_screen_to_a_dpo_dataset_train_accepts(cli, tmp_workspace):
    """ctrl+e beside the win-rate table writes the human votes into a workspace dataset: DPO pairs that
    `train --method dpo --dry-run` accepts, or SFT chat examples; a taken name is refused and shown."""
    import json
    import tomllib

    from tuneterm.tui.app import TunetermApp
    from tuneterm.workers.train.dpo import read_pairs

    for i, outcome in enumerate(["1", "2", "tie", "1"]):
        votes.record(votes.Round(f"question {i}?", ["openai:alpha", "openai:beta"], [f"alpha {i}", f"beta {i}"],
                                 [0, 1]), outcome)
    data = tmp_workspace.datasets_dir
    app = TunetermApp(start="evals")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        screen.set_focus(None)
        await pilot.press("ctrl+y")

        async def export(line: str) -> None:
            await pilot.press("ctrl+e")
            assert await until(pilot, lambda: app.screen is not screen)
            app.screen.query_one(Input).value = line
            await pilot.press("enter")
            assert await until(pilot, lambda: app.screen is screen)

        await export("dpo prefs")
        assert await until(pilot, lambda: (data / "prefs" / "data.jsonl").is_file(), tries=300)
        assert await until(pilot, lambda: any(n.title == "votes exported" for n in app._notifications), tries=100)
        rows = [json.loads(line) for line in (data / "prefs" / "data.jsonl").read_text().splitlines()]
        assert [r["preferred_output"][0]["content"] for r in rows] == ["alpha 0", "beta 1", "alpha 3"]
        assert [r["non_preferred_output"][0]["content"] for r in rows] == ["beta 0", "alpha 1", "beta 3"]
        screen.query(Input).first().focus()  # from a field of the launch form too
        await export("sft chosen")
        assert await until(pilot, lambda: (data / "chosen" / "data.jsonl").is_file(), tries=300)
        await export("dpo prefs")  # the name is taken: the error is shown, the dataset kept
        assert await until(pilot, lambda: any("already exists" in (n.title or "") for n in app._notifications),
                           tries=300)
        await export("prefs")  # not "dpo NAME" / "sft NAME": said so, nothing written
        assert await until(pilot, lambda: any("expected 'dpo NAME'" in n.message for n in app._notifications))
    code, out, err = cli("train", "--method", "dpo", "--model", "smollm2", "--data", "prefs", "--dry-run")
    assert code == 0, err
    config = tomllib.loads(out)
    pairs = read_pairs(config["data"])  # what the DPO job reads the data with
    assert len(pairs) == 3 and pairs[1]["chosen"][-1]["content"] == "beta 1"
    sft = [json.loads(line) for line in (data / "chosen" / "data.jsonl").read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in sft] == ["alpha 0", "beta 1", "alpha 3"]
