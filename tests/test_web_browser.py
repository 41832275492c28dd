"""`tuneterm web` in a real browser: Debian's Chromium driven by Playwright (never `playwright install`;
the system's chromium through ``executable_path``). Skipped, with the reason, when either is missing;
`.ci/run` installs both."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.web_server import TOKEN, alive, start_web

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("TUNETERM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if sync_playwright is None or CHROMIUM is None:
    pytest.skip("needs Playwright for Python (pip install '.[web-test]') and Debian's chromium "
                "(apt-get install chromium)", allow_module_level=True)

REMOTE_NAME = "gpu-box.test"  # resolved to 127.0.0.1 by Chromium itself (--host-resolver-rules)
SCREENS = [  # F-key, text that only that screen draws in an empty workspace
    ("F4", "no jobs yet"), ("F6", "no eval jobs yet"), ("F3", "lora.toml"), ("F2", "provider"),
    ("F5", "int8-dynamic"), ("F7", "message every column"), ("F8", "no sweeps yet"),
    ("F1", "1 Datasets"),
]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--no-proxy-server", f"--host-resolver-rules=MAP {REMOTE_NAME} 127.0.0.1"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def web(tmp_workspace):
    server = start_web()
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop()


class Tab:
    """A browser page with what it saw: websocket frames, page errors, every request's URL."""

    def __init__(self, context):
        self.page = context.new_page()
        self.frames: list[bytes] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("response", lambda r: self.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        self.page.on("websocket", lambda ws: ws.on(
            "framereceived", lambda data: self.frames.append(data if isinstance(data, bytes) else data.encode())))

    def wait_for(self, text: str, seconds: float = 60, since: int = 0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text.encode() in b"".join(self.frames[since:]):
                return True
            self.page.wait_for_timeout(200)
        return False


def _wait(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_the_page_with_the_token_draws_the_workbench_and_every_screen(browser, web):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = Tab(context)
    response = tab.page.goto(web.url)
    assert response.status == 200 and tab.page.title() == "tuneterm"
    assert "token" not in tab.page.url  # exchanged for a cookie, out of the address bar
    cookie = next(c for c in context.cookies() if c["name"] == f"tuneterm-web-{web.port}")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert tab.wait_for("1 Datasets"), b"".join(tab.frames)[-2000:]
    tab.page.locator(".xterm").click()
    for key, marker in SCREENS:
        since = len(tab.frames)
        tab.page.keyboard.press(key)
        assert tab.wait_for(marker, 60, since), f"{key}: no {marker!r} on screen"
    assert tab.errors == []
    outside = [url for url in tab.requests if not url.startswith((web.base + "/", "data:"))]
    assert outside == []  # no font or script from outside the machine
    context.close()


def test_closing_a_tab_ends_its_processes(browser, web):
    context = browser.new_context()
    first, second = Tab(context), Tab(context)
    first.page.goto(web.url)
    second.page.goto(web.base + "/")  # the cookie is enough from now on
    assert first.wait_for("1 Datasets") and second.wait_for("1 Datasets")
    apps = web.children()
    assert len(apps) == 2
    first.page.close()
    assert _wait(lambda: len([pid for pid in apps if alive(pid)]) == 1, 15), "the closed tab's app still runs"
    second.page.close()
    assert _wait(lambda: not any(alive(pid) for pid in apps), 15)
    assert web.proc.poll() is None
    context.close()


class _ForeignPage(http.server.BaseHTTPRequestHandler):
    """A page from another origin on this machine that tries to drive the workbench."""

    target = ""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = f"""<!DOCTYPE html><title>foreign</title><script>
          window.result = "pending";
          const ws = new WebSocket("{self.target}");
          ws.onopen = () => {{ window.result = "open"; }};
          ws.onmessage = () => {{ window.result = "message"; }};
          ws.onerror = () => {{ if (window.result === "pending") window.result = "refused"; }};
          ws.onclose = () => {{ if (window.result === "pending") window.result = "refused"; }};
        </script>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_page_on_another_origin_cannot_open_the_websocket(browser, web):
    context = browser.new_context()
    own = Tab(context)
    own.page.goto(web.url)  # the user's own tab: the browser now holds the cookie
    assert own.wait_for("1 Datasets")
    apps = web.children()
    _ForeignPage.target = f"ws://127.0.0.1:{web.port}/ws"
    foreign_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForeignPage)
    threading.Thread(target=foreign_server.serve_forever, daemon=True).start()
    try:
        # 127.0.0.1 on another port: the same site, so the SameSite cookie goes along; Origin must stop it
        foreign = context.new_page()
        foreign.goto(f"http://127.0.0.1:{foreign_server.server_address[1]}/")
        foreign.wait_for_function("window.result !== 'pending'", timeout=30000)
        assert foreign.evaluate("window.result") == "refused"
        assert web.children() == apps  # no workbench started for it
    finally:
        foreign_server.shutdown()
        foreign_server.server_close()
    context.close()


def test_without_the_token_the_page_is_refused(browser, web):
    context = browser.new_context()
    page = context.new_page()
    assert page.goto(web.base + "/").status == 403
    assert page.goto(f"{web.base}/?token=not-{TOKEN}").status == 403
    assert web.children() == set()  # no workbench started
    assert page.goto(f"http://localhost:{web.port}/?token={TOKEN}").status == 200
    context.close()


def test_a_foreign_host_is_refused_on_loopback(browser, web):
    context = browser.new_context()
    page = context.new_page()  # a DNS name rebound to 127.0.0.1
    assert page.goto(f"http://{REMOTE_NAME}:{web.port}/?token={TOKEN}").status == 403
    context.close()


def test_on_all_interfaces_a_browser_that_uses_another_name_loads_the_workbench(browser, tmp_workspace):
    server = start_web("--host", "0.0.0.0")
    try:
        context = browser.new_context()
        assert context.new_page().goto(f"http://{REMOTE_NAME}:{server.port}/").status == 403
        tab = Tab(context)
        assert tab.page.goto(f"http://{REMOTE_NAME}:{server.port}/?token={TOKEN}").status == 200
        assert tab.wait_for("1 Datasets"), b"".join(tab.frames)[-2000:]
        assert all(url.startswith(f"http://{REMOTE_NAME}:{server.port}/") for url in tab.requests
                   if not url.startswith("data:"))
        assert tab.errors == []
        context.close()
    finally:
        server.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_with_two_browser_tabs_open_leaves_no_process_behind(browser, tmp_workspace, sig):
    server = start_web()
    context = browser.new_context()
    first, second = Tab(context), Tab(context)
    first.page.goto(server.url)
    second.page.goto(server.base + "/")
    assert first.wait_for("1 Datasets") and second.wait_for("1 Datasets")
    apps = server.children()
    assert len(apps) == 2
    elapsed = server.stop(sig)
    assert not any(alive(pid) for pid in apps)
    assert server.proc.returncode == 0
    output = server.text()
    assert "Exception ignored" not in output and "Traceback" not in output, output
    for tab in (first, second):  # each page says its session ended
        tab.page.wait_for_selector("body.-closed", timeout=15000)
    print(f"{signal.Signals(sig).name} with two browser tabs open: server and tabs gone in {elapsed:.2f} s")
    context.close()


def test_chat_keys_reach_the_page(browser, web):
    """Issue 24: Chat's keys are ones Chromium hands to the page (ctrl+n/t/w never reach it)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = Tab(context)
    tab.page.goto(web.url)
    assert tab.wait_for("1 Datasets"), b"".join(tab.frames)[-2000:]
    tab.page.locator(".xterm").click()
    tab.page.keyboard.press("F7")
    assert tab.wait_for("message every column")
    for key, marker in (("Control+o", "Model for the new column"), ("Control+e", "Eval spec or suite"),
                        ("F2", "Overrides for column 1")):
        since = len(tab.frames)
        tab.page.keyboard.press(key)
        assert tab.wait_for(marker, 30, since), f"{key}: no {marker!r} on screen"
        tab.page.keyboard.press("Escape")
        tab.page.wait_for_timeout(300)
    since = len(tab.frames)
    tab.page.keyboard.press("Control+k")  # keep the turn: there is none yet, and the app says so
    assert tab.wait_for("nothing to save yet", 30, since)
    assert tab.errors == []
    context.close()


def _rss_mb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _tree(pid: int) -> set[int]:
    from tests.web_server import children_of

    out, todo = set(), [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


@pytest.mark.slow
def test_three_chatting_tabs_share_one_model(browser, web, tmp_workspace):
    """Issue 24 item 6: tabs that chat with the same model share one model server (one copy of the
    weights); three chatting tabs use at most 1.3x the memory of one; the server leaves with the last tab."""
    import json

    registry = tmp_workspace.root / "run" / "chat-servers"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tabs = []

    def chat(tab: Tab, first: bool) -> None:
        tab.page.goto(web.url if first else web.base + "/")
        assert tab.wait_for("1 Datasets")
        tab.page.locator(".xterm").click()
        since = len(tab.frames)
        tab.page.keyboard.press("F7")
        assert tab.wait_for("message every column", 60, since)
        since = len(tab.frames)
        tab.page.wait_for_timeout(1000)
        tab.page.keyboard.press("i")
        tab.page.wait_for_timeout(500)
        tab.page.keyboard.type("hi", delay=100)
        tab.page.wait_for_timeout(500)
        tab.page.keyboard.press("Enter")
        assert _wait(lambda: list(registry.glob("*.json")), 60), "no message sent: no chat server was asked for"
        if not tab.wait_for("tok/s", 420 if first else 120, since):
            logs = "".join(p.read_text(errors="replace")[-1500:] for p in registry.glob("*.log"))
            raise AssertionError((logs, [p.name for p in registry.glob("*")], b"".join(tab.frames)[-600:]))

    tabs.append(Tab(context))
    chat(tabs[0], True)
    [entry] = [json.loads(p.read_text()) for p in registry.glob("*.json")]
    one = _rss_mb(_tree(web.proc.pid) | {entry["pid"]})
    for _ in range(2):
        tabs.append(Tab(context))
        chat(tabs[-1], False)
    entries = [json.loads(p.read_text()) for p in registry.glob("*.json")]
    assert [e["pid"] for e in entries] == [entry["pid"]]  # one server for the three tabs
    three = _rss_mb(_tree(web.proc.pid) | {entry["pid"]})
    print(f"memory: one chatting tab {one:.0f} MB, three {three:.0f} MB ({three / one:.2f}x)")
    assert three <= 1.3 * one, (one, three)
    for tab in tabs:
        tab.page.close()
    assert _wait(lambda: not alive(entry["pid"]), 30), "the shared server outlived its last tab"
    context.close()
