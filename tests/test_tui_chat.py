"""The chat screen with Pilot: columns streaming from a real `tuneterm serve` on the tiny model
(in-process, and as a child the screen starts), plus a scripted OpenAI-compatible server on
127.0.0.1 that records what it is sent and can hold a stream open."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from textual.app import App

from tuneterm.core.chat_client import LocalServers
from tuneterm.tui.screens.chat import ChatScreen
from tuneterm.tui.widgets.chat_column import ChatColumn


class ChatApp(App):
    def __init__(self, screen: ChatScreen) -> None:
        super().__init__()
        self.chat = screen
        self.errors: list[BaseException] = []

    def on_mount(self) -> None:
        self.push_screen(self.chat)

    def report_error(self, exc: BaseException) -> None:
        self.errors.append(exc)


async def wait_for(pilot, cond, what: str, give_up_s: float = 300.0) -> None:
    """Poll ``cond`` between UI ticks. A give-up bound, not a timing assertion: generous, and in
    wall-clock time, because a loaded machine makes each tick (and a serve child's start) slow."""
    deadline = time.monotonic() + give_up_s
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"gave up waiting for {what}")


# --- a scripted OpenAI-compatible server -------------------------------------------------------


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.requests: list[dict] = []
        self.release = threading.Event()  # streams of model "slow" wait for it after one piece
        self.aborted = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        model = body["model"]
        words = f"{model} heard {len(body['messages'])} messages".split(" ")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def event(delta, finish=None):
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        try:
            event({"role": "assistant", "content": ""})
            for i, w in enumerate(words):
                event({"content": (" " if i else "") + w})
                if model == "slow":
                    self.server.release.wait(30)
                    for _ in range(200):  # keep writing until the client hangs up
                        event({"content": " more"})
                        self.server.release.wait(0.02)
            event({}, "stop")
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            self.server.aborted.set()


@pytest.fixture
def scripted():
    srv = ScriptedServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


# --- a real server on the tiny model ------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("tui-adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir, adapter_dir):
    from tuneterm.workers.server import make_server, serve_in_thread

    srv = make_server([str(tiny_model_dir), str(adapter_dir)], port=0)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def _answer(server, model: str, messages: list[dict], max_tokens: int) -> str:
    from openai import OpenAI

    r = OpenAI(base_url=server.url, api_key="x", max_retries=0).chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    return r.choices[0].message.content


async def test_two_columns_stream_diff_save_and_export(tiny_server, tiny_model_dir, adapter_dir, tmp_path):
    refs = [f"{tiny_server.url}#{tiny_model_dir}", f"{tiny_server.url}#{adapter_dir}"]
    screen = ChatScreen(models=refs)
    app = ChatApp(screen)
    async with app.run_test(size=(140, 40)) as pilot:
        screen.set_settings(max_tokens=8)
        await pilot.click("#chat-prompt")
        await pilot.press(*"hello there", "enter")
        cols = screen.columns
        await wait_for(pilot, lambda: not screen.streaming, "both answers")
        assert all(c.status == "done" for c in cols)
        messages = [{"role": "user", "content": "hello there"}]
        assert cols[0].answer == _answer(tiny_server, str(tiny_model_dir), messages, 8)
        assert cols[1].answer == _answer(tiny_server, str(adapter_dir), messages, 8)
        assert cols[0].answer != cols[1].answer
        for col in cols:
            stats_line = str(col.query_one(".col-stats").render())
            assert "ttft" in stats_line and "tok/s" in stats_line and "8 tokens" in stats_line
            assert col.stats["completion_tokens"] == 8 and col.stats["tokens_exact"]
        assert "MiB" in str(cols[1].query_one(".col-title").render())  # the variant's memory
        conv = screen.conversation
        assert conv.answer(0, 1).content == cols[1].answer and conv.answer(0, 1).model == refs[1]
        # the second turn carries each column's own history
        await pilot.press(*"and then?", "enter")
        await wait_for(pilot, lambda: conv.n_turns == 2 and not screen.streaming and conv.answer(1, 0) is not None
                       and conv.answer(1, 1) is not None, "second answers")
        history = [*messages, {"role": "assistant", "content": conv.answer(0, 1).content},
                   {"role": "user", "content": "and then?"}]
        assert cols[1].answer == _answer(tiny_server, str(adapter_dir), history, 8)
        # the diff view
        await pilot.press("ctrl+d")
        diff = screen.query_one("#chat-diff")
        assert not diff.has_class("-hidden")
        assert "vs" in str(diff.render())
        await pilot.press("ctrl+d")
        assert diff.has_class("-hidden")
        # save, reopen, export, a turn into a dataset file
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: conv.id is not None, "save")
        from tuneterm.core import conversations

        again = conversations.load(conv.id)
        assert again.history(1) == conv.history(1) and len(again.history(1)) == 4
        screen.export(str(tmp_path / "c.md"))
        await wait_for(pilot, lambda: (tmp_path / "c.md").exists(), "export")
        screen.save_turn(1, str(tmp_path / "fixes.jsonl"), edited="a better answer")
        await wait_for(pilot, lambda: (tmp_path / "fixes.jsonl").exists(), "turn saved")
        example = json.loads((tmp_path / "fixes.jsonl").read_text())
        assert example["messages"][-1] == {"role": "assistant", "content": "a better answer"}
        assert example["messages"][-2] == {"role": "user", "content": "and then?"}
    assert app.errors == []


async def test_settings_overrides_swap_and_escape(scripted):
    screen = ChatScreen(models=[f"{scripted.url}#echo", f"{scripted.url}#other"])
    app = ChatApp(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        # shared settings through the dialog, then an override for column 2
        await pilot.press("ctrl+g")
        await pilot.pause()
        modal = app.screen
        modal.query_one("#system").value = "Be brief."
        modal.query_one("#p-seed").value = "42"
        modal.query_one("#p-temperature").value = "0.7"
        await pilot.click("#ok")
        await pilot.pause()
        assert screen.conversation.settings["params"]["seed"] == 42
        screen.set_column_settings(1, system="Answer in French.", temperature=0.0)
        await pilot.press("i", *"hi", "enter")  # i: to the message box (the columns have focus)
        await wait_for(pilot, lambda: len(scripted.requests) == 2 and not screen.streaming, "answers")
        by_model = {r["model"]: r for r in scripted.requests}
        assert by_model["echo"]["messages"][0] == {"role": "system", "content": "Be brief."}
        assert by_model["echo"]["temperature"] == 0.7 and by_model["echo"]["seed"] == 42
        assert by_model["other"]["messages"][0] == {"role": "system", "content": "Answer in French."}
        assert by_model["other"]["temperature"] == 0.0 and by_model["other"]["seed"] == 42
        assert screen.columns[0].answer == "echo heard 2 messages"
        # swap column 1's model: the conversation stays
        screen.swap_model(0, f"{scripted.url}#slow")
        assert screen.columns[0].model.endswith("#slow")
        scripted.requests.clear()
        await pilot.press(*"more", "enter")
        col = screen.columns[0]
        await wait_for(pilot, lambda: col.answer.startswith("slow"), "first piece from the slow model")
        assert screen.streaming
        sent = next(r for r in scripted.requests if r["model"] == "slow")["messages"]
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
        assert sent[2]["content"] == "echo heard 2 messages"  # the old model's answer stays in history
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.streaming, "streams to stop")
        assert col.status == "stopped"
        assert screen.conversation.answer(1, 0).stats["stopped"] is True
    assert app.errors == []


async def test_add_and_remove_columns_with_keys(scripted):
    screen = ChatScreen(models=[f"{scripted.url}#echo"])
    app = ChatApp(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press(*f"{scripted.url}#second", "enter")
        await pilot.pause()
        assert [c.model for c in screen.columns] == [f"{scripted.url}#echo", f"{scripted.url}#second"]
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press(*"no-such-model", "enter")  # a bad reference is an error, not a crash
        await pilot.pause()
        assert len(screen.columns) == 2 and app.errors
        await pilot.press("ctrl+left", "ctrl+x")
        await pilot.pause()
        assert [c.model for c in screen.columns] == [f"{scripted.url}#second"]
        assert screen.columns[0].index == 0


def _pool(tmp_path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"ticket {i}"}, {"role": "assistant", "content": f"queue-{i}"}]}
            for i in range(3)]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def test_local_model_and_fewshot_column_through_one_serve_child(tiny_model_dir, tmp_path):
    shot_ref = f"fewshot:2:{_pool(tmp_path)}@{tiny_model_dir}"
    servers = LocalServers(log_dir=tmp_path / "logs")
    screen = ChatScreen(models=[str(tiny_model_dir), shot_ref], servers=servers)
    app = ChatApp(screen)
    async with app.run_test(size=(120, 30)) as pilot:
        screen.set_settings(max_tokens=5)
        screen.send("hello")
        cols: list[ChatColumn] = screen.columns
        await wait_for(pilot, lambda: not screen.streaming, "the served answers")
        for col in cols:
            assert col.status == "done", col.query_one(".col-stats").render()
            assert col.stats["completion_tokens"] == 5
        # one child serves both columns: the few-shot column shares the base's weights
        assert len(servers.children) == 1 and set(servers.children[0].refs) == {str(tiny_model_dir), shot_ref}
        child = servers.children[0]
        assert child.process.poll() is None
    servers.stop_all()
    assert child.process.poll() is not None


async def test_fewshot_column_over_a_remote_model_sends_the_examples(scripted, tmp_path):
    screen = ChatScreen(models=[f"fewshot:2:{_pool(tmp_path)}@{scripted.url}#echo"])
    app = ChatApp(screen)
    async with app.run_test(size=(100, 30)) as pilot:
        screen.send("where does this go?")
        await wait_for(pilot, lambda: not screen.streaming, "the answer")
        assert screen.columns[0].status == "done"
        sent = scripted.requests[0]["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
        assert sent[1]["content"].startswith("queue-") and sent[-1]["content"] == "where does this go?"
        assert screen.columns[0].answer == "echo heard 5 messages"
        # the saved conversation keeps the user's turns only, not the examples
        assert screen.conversation.history(0) == [{"role": "user", "content": "where does this go?"},
                                                  {"role": "assistant", "content": "echo heard 5 messages"}]
    assert app.errors == []


async def test_the_workbench_opens_the_chat_screen():
    from tuneterm.tui.app import TunetermApp

    app = TunetermApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        app.action_goto("chat")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)
        assert [c.model for c in app.screen.columns] == ["smollm2-135m-instruct"]
        assert not app.screen.query_one("#chat-prompt").has_focus  # a number key must not type into it
        await pilot.press("i")
        assert app.screen.query_one("#chat-prompt").has_focus
