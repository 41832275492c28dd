"""One chat server per workspace for the tabs of `tuneterm web` (issue 24 item 6): tabs that chat
with the same model share one `tuneterm serve` process (one copy of the weights); it starts on first
use and stops itself when the last tab leaves, even when that tab was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tuneterm.core.shared_servers import SharedServers, chat_servers, pid_alive

REPO = Path(__file__).resolve().parents[1]

TAB = """
import sys, time
from pathlib import Path
from tuneterm.core.shared_servers import SharedServers
servers = SharedServers(root=Path(sys.argv[1]))
print(servers.ensure([sys.argv[2]])[sys.argv[2]], flush=True)
time.sleep(600)
"""


def _entries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in root.glob("*.json")]


def _until(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_tabs_share_one_server_that_stops_after_the_last_tab(tmp_path, tiny_model_dir):
    from openai import OpenAI

    root, ref = tmp_path / "chat-servers", str(tiny_model_dir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    killed_tab = subprocess.Popen([sys.executable, "-c", TAB, str(root), ref], stdout=subprocess.PIPE, text=True,
                                  env=env, cwd=REPO)
    try:
        first_url = killed_tab.stdout.readline().strip()
        assert first_url.endswith("#" + ref), first_url
        a, b = SharedServers(root=root), SharedServers(root=root)
        url_a, url_b = a.ensure([ref])[ref], b.ensure([ref])[ref]
        assert url_a == url_b == first_url  # the same server for three tabs
        [entry] = _entries(root)
        server_pid = entry["pid"]
        assert len(list((root / f"{entry['key']}.leases").iterdir())) == 3
        base, _, model = url_a.partition("#")
        answer = OpenAI(base_url=base, api_key="x").chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert answer.choices[0].message.content is not None

        killed_tab.send_signal(signal.SIGKILL)  # a tab that dies without cleaning up
        killed_tab.wait(10)
        a.stop_all()
        time.sleep(2.5)  # longer than the server's grace: b still holds a lease, so it keeps serving
        assert pid_alive(server_pid) and b.served(ref) == url_b
        b.stop_all()  # the last tab leaves: the server stops itself and leaves no entry behind
        assert _until(lambda: not pid_alive(server_pid) or _zombie(server_pid), 30)
        assert _until(lambda: not _entries(root), 10)
        # the next tab starts a new one
        c = SharedServers(root=root)
        try:
            c.ensure([ref])
            [again] = _entries(root)
            assert again["pid"] != server_pid
        finally:
            c.stop_all()
            assert _until(lambda: not _entries(root), 30)
    finally:
        if killed_tab.poll() is None:
            killed_tab.kill()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_the_web_command_turns_sharing_on_for_its_tabs(monkeypatch):
    from tuneterm.core.chat_client import LocalServers

    monkeypatch.delenv("TUNETERM_SHARED_CHAT_SERVERS", raising=False)
    assert isinstance(chat_servers(), LocalServers)
    monkeypatch.setenv("TUNETERM_SHARED_CHAT_SERVERS", "1")
    assert isinstance(chat_servers(), SharedServers)


async def test_the_chat_screen_of_a_web_tab_uses_the_shared_server(tiny_model_dir, monkeypatch, tmp_workspace):
    """The hook: with sharing on (as `tuneterm web` sets it), the Chat screen's local model is served by the
    workspace's shared server, and leaving the screen gives its lease back (the server then stops itself)."""
    from test_tui_chat import ChatApp

    from tuneterm.core.shared_servers import registry_dir
    from tuneterm.tui.screens.chat import ChatScreen

    monkeypatch.setenv("TUNETERM_SHARED_CHAT_SERVERS", "1")
    screen = ChatScreen(models=[str(tiny_model_dir)])
    assert isinstance(screen.servers, SharedServers)
    app = ChatApp(screen)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("i", *"hi", "enter")
        for _ in range(1200):
            await pilot.pause(0.1)
            if screen.columns[0].answer and not screen.streaming:
                break
        assert screen.columns[0].answer and not screen.streaming
        [entry] = _entries(registry_dir())
        assert entry["refs"] == [str(tiny_model_dir)]
    assert _until(lambda: not pid_alive(entry["pid"]) or _zombie(entry["pid"]), 30)
