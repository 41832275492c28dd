"""`tuneterm web`: textual-serve on 127.0.0.1 serves the page, and a browser's websocket gets the
real workbench (a `tuneterm tui` process) drawing into it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, tries: int = 300) -> str:
    last = None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to 127.0.0.1
    for _ in range(tries):
        try:
            with opener.open(url, timeout=5) as response:
                return response.read().decode("utf-8")
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise AssertionError(f"no answer from {url}: {last}")


@pytest.fixture
def web_server(tmp_workspace):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuneterm", "web", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=dict(os.environ))
    try:
        yield port, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_web_serves_the_page_on_loopback_and_the_app_over_its_websocket(web_server):
    port, proc = web_server
    page = _get(f"http://127.0.0.1:{port}/")
    assert "<div>tuneterm</div>" in page  # the server's title (textual-serve's default is the command line)
    assert f'data-session-websocket-url="ws://127.0.0.1:{port}/ws"' in page

    import aiohttp

    async def screen_text() -> str:
        seen = b""
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws?width=80&height=24") as ws:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and b"1 Datasets" not in seen:
                    try:
                        message = await ws.receive(timeout=5)
                    except asyncio.TimeoutError:
                        continue
                    if message.type == aiohttp.WSMsgType.BINARY:
                        seen += message.data
                    elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                await ws.send_json(["stdin", "q"])
        return seen.decode("utf-8", "replace")

    text = asyncio.run(screen_text())
    assert "1 Datasets" in text and "5 Quantize" in text, text[-2000:]
    assert proc.poll() is None  # one tab closing leaves the server up


def test_web_binds_loopback_by_default_and_checks_its_arguments(cli):
    from tuneterm.commands.web import DEFAULT_HOST, app_command, is_loopback

    assert DEFAULT_HOST == "127.0.0.1" and is_loopback(DEFAULT_HOST) and is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert app_command("jobs").endswith("-m tuneterm tui --screen jobs")
    code, _, err = cli("web", "--screen", "nowhere")
    assert code == 2 and "unknown screen" in err
    code, _, err = cli("web", "--port", "70000")
    assert code == 2 and "port" in err
