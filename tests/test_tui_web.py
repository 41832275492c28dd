"""`tuneterm web` with plain HTTP and websocket clients: the token, the Origin and Host checks, a busy
port, a remote-style Host on 0.0.0.0, and a clean stop with tabs open. (The same in a real browser:
tests/test_web_browser.py.)"""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from tests.web_server import TOKEN, alive, http_get, start_web, websocket_screen


@pytest.fixture
def web(tmp_workspace):
    server = start_web()
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop()


def test_the_page_needs_the_token_then_a_strict_httponly_cookie(web):
    assert http_get(f"{web.base}/")[0] == 403
    assert http_get(f"{web.base}/?token=wrong-{TOKEN}")[0] == 403
    assert http_get(f"{web.base}/static/js/textual.js")[0] == 403
    status, headers, page = http_get(web.url)
    assert status == 200
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(web.cookie + ";") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "<title>tuneterm</title>" in page
    assert f'data-session-websocket-url="ws://127.0.0.1:{web.port}/ws"' in page
    assert "googleapis" not in page and "https://" not in page  # nothing fetched from outside the machine
    assert http_get(f"{web.base}/", {"Cookie": web.cookie})[0] == 200
    assert http_get(f"{web.base}/static/js/textual.js", {"Cookie": web.cookie})[0] == 200
    assert http_get(f"{web.base}/", {"Cookie": f"tuneterm-web-{web.port}=nope"})[0] == 403


def test_the_websocket_needs_the_token_and_the_pages_own_origin(web):
    ws = f"ws://127.0.0.1:{web.port}/ws?width=80&height=24"
    own = {"Origin": f"http://127.0.0.1:{web.port}"}
    assert websocket_screen(ws, own)[0] == 403  # no token, no cookie
    assert websocket_screen(ws, {**own, "Cookie": f"tuneterm-web-{web.port}=wrong"})[0] == 403
    for foreign in ("http://evil.example", f"http://127.0.0.1:{web.port + 1}", "null",
                    f"https://127.0.0.1:{web.port}"):
        assert websocket_screen(ws, {"Origin": foreign, "Cookie": web.cookie})[0] == 403, foreign
    status, text = websocket_screen(ws, {**own, "Cookie": web.cookie})
    assert status == 0 and "1 Datasets" in text and "5 Quantize" in text, text[-2000:]
    assert web.proc.poll() is None  # one tab closing leaves the server up


def test_a_rebound_dns_name_is_refused_on_loopback(web):
    for host in (f"evil.example:{web.port}", "attacker.test", f"192.0.2.7:{web.port}"):
        assert http_get(web.url, {"Host": host})[0] == 403, host
    for host in (f"localhost:{web.port}", f"127.0.0.1:{web.port}"):
        assert http_get(web.url, {"Host": host})[0] == 200, host
    status, _ = websocket_screen(f"ws://127.0.0.1:{web.port}/ws", {
        "Host": f"evil.example:{web.port}", "Origin": f"http://evil.example:{web.port}", "Cookie": web.cookie})
    assert status == 403


def test_on_all_interfaces_the_page_points_at_the_host_the_browser_used(tmp_workspace):
    server = start_web("--host", "0.0.0.0")
    try:
        banner = server.banner()
        assert "SSH tunnel" in banner and "token" in banner
        host = f"gpu-box.example:{server.port}"
        assert http_get(f"{server.base}/", {"Host": host})[0] == 403  # the token still guards
        status, _, page = http_get(server.url, {"Host": host})
        assert status == 200
        assert f'data-session-websocket-url="ws://{host}/ws"' in page
        assert f'href="http://{host}/static/css/xterm.css"' in page and "0.0.0.0" not in page
        status, text = websocket_screen(f"ws://127.0.0.1:{server.port}/ws", {
            "Host": host, "Origin": f"http://{host}", "Cookie": server.cookie})
        assert status == 0 and "1 Datasets" in text
    finally:
        server.stop()


def test_public_url_sets_the_page_urls_and_the_allowed_origin_and_host(tmp_workspace):
    server = start_web("--public-url", "https://wb.example.org")
    try:
        status, _, page = http_get(server.url, {"Host": "wb.example.org"})
        assert status == 200 and 'data-session-websocket-url="wss://wb.example.org/ws"' in page
        assert websocket_screen(f"ws://127.0.0.1:{server.port}/ws", {
            "Host": "wb.example.org", "Origin": "https://evil.example.org", "Cookie": server.cookie})[0] == 403
        status, text = websocket_screen(f"ws://127.0.0.1:{server.port}/ws", {
            "Host": "wb.example.org", "Origin": "https://wb.example.org", "Cookie": server.cookie})
        assert status == 0 and "1 Datasets" in text
    finally:
        server.stop()


def test_token_options(cli, tmp_workspace, monkeypatch):
    code, _, err = cli("web", "--host", "0.0.0.0", "--no-token")
    assert code == 2 and "--no-token is refused on 0.0.0.0" in err
    code, _, err = cli("web", "--token", "")
    assert code == 2 and "token is empty" in err
    server = start_web(token=None)
    try:  # a fresh random token each launch, printed in the URL
        line = next(x for x in server.output if "the workbench is at" in x)
        token = line.strip().rsplit("?token=", 1)[1]
        assert len(token) >= 24 and http_get(f"{server.base}/?token={token}")[0] == 200
        assert http_get(f"{server.base}/")[0] == 403
    finally:
        server.stop()
    monkeypatch.setenv("TUNETERM_WEB_TOKEN", "from-the-env")
    server = start_web(token=None)
    try:
        assert http_get(f"{server.base}/?token=from-the-env")[0] == 200
    finally:
        server.stop()
    server = start_web("--no-token", token=None)
    try:
        assert http_get(f"{server.base}/")[0] == 200
        assert http_get(f"{server.base}/", {"Host": "evil.example"})[0] == 403  # Host still checked
    finally:
        server.stop()


def test_a_busy_port_is_a_clean_usage_error(tmp_workspace):
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "tuneterm", "web", "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "pick another --port" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_with_two_tabs_open_ends_the_server_and_every_tab(tmp_workspace, sig):
    server = start_web()
    ws = f"ws://127.0.0.1:{server.port}/ws"
    headers = {"Origin": server.base, "Cookie": server.cookie}
    drawn: list[str] = []

    def tab() -> None:  # a tab that stays open until the server goes away
        drawn.append(websocket_screen(ws, headers, until="never-printed", timeout=120)[1])

    tabs = [threading.Thread(target=tab, daemon=True) for _ in range(2)]
    for t in tabs:
        t.start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(server.children()) < 2:
        time.sleep(0.2)
    apps = server.children()
    assert len(apps) == 2
    time.sleep(3)  # let both apps come up, as a person would have them
    elapsed = server.stop(sig)
    for t in tabs:
        t.join(timeout=10)
    assert not any(alive(pid) for pid in apps)
    assert server.proc.returncode == 0
    output = server.text()
    assert "Exception ignored" not in output and "Traceback" not in output, output
    print(f"{signal.Signals(sig).name} with two tabs open: server and tabs gone in {elapsed:.2f} s")


def test_guard_unit_checks():
    from tuneterm.web.guard import Guard, host_name, origin_of

    assert host_name("[::1]:8000") == "::1" and host_name("Example.org:80") == "example.org"
    assert origin_of("HTTP://Example.org:80/x") == "http://example.org"
    guard = Guard("127.0.0.1", 8000, "t0k")
    assert guard.token_ok("t0k") and not guard.token_ok("t0K") and not guard.token_ok(None)
    assert guard.host_ok("localhost:8000") and guard.host_ok("[::1]:8000") and not guard.host_ok("evil:8000")
    assert not guard.host_ok(None)
    assert guard.origin_ok("http://localhost:8000", "http", "localhost:8000")
    assert not guard.origin_ok("http://localhost:8001", "http", "localhost:8000")
    assert Guard("0.0.0.0", 8000, "t").host_ok("anything.example")
