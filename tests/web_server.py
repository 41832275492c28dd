"""A real `tuneterm web` process for the web tests, and small clients for it (plain HTTP, websocket)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

TOKEN = "test-token-7f3a"


@dataclass
class WebServer:
    proc: subprocess.Popen
    port: int
    token: str | None
    output: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/?token={self.token}" if self.token else f"{self.base}/"

    @property
    def cookie(self) -> str:
        return f"tuneterm-web-{self.port}={self.token}"

    def children(self) -> set[int]:
        """Pids of the server's direct children (one `tuneterm tui` per open tab)."""
        return children_of(self.proc.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> float:
        """Signal the server; returns the seconds it took to exit."""
        start = time.monotonic()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"tuneterm web did not exit {timeout} s after signal {sig}")
        return time.monotonic() - start

    def text(self) -> str:
        return "".join(self.output)

    def banner(self, timeout: float = 30) -> str:
        """Everything the start printed, through its last line ("press Ctrl+C to stop"): the lines after
        the URL arrive a moment later, read by a thread."""
        deadline = time.monotonic() + timeout
        while "press Ctrl+C to stop" not in self.text() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.text()


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _drain(proc: subprocess.Popen, lines: list[str]) -> None:
    for line in proc.stdout:  # keep the pipe empty, so the server never blocks on a write
        lines.append(line)


def start_web(*args: str, token: str | None = TOKEN, timeout: float = 60) -> WebServer:
    """Start `tuneterm web --port 0 ARGS` and wait for the URL line."""
    argv = [sys.executable, "-m", "tuneterm", "web", "--port", "0", *args]
    if token is not None:
        argv += ["--token", token]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"listening on \S+:(\d+);", line)
        if match:
            threading.Thread(target=_drain, args=(proc, lines), daemon=True).start()
            return WebServer(proc, int(match.group(1)), token, lines)
    proc.kill()
    proc.wait()
    raise AssertionError("tuneterm web did not print its URL:\n" + "".join(lines) + (proc.stdout.read() or ""))


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a GET straight to 127.0.0.1 (no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode("utf-8", "replace")


def websocket_screen(url: str, headers: dict[str, str], until: str = "1 Datasets", timeout: float = 90) -> tuple[int, str]:
    """Open ``url`` as a websocket with ``headers``: (0, screen text up to ``until``), or (HTTP status, '')
    when the handshake is refused."""
    import aiohttp

    async def go() -> tuple[int, str]:
        seen = b""
        async with aiohttp.ClientSession() as session:
            try:
                ws = await session.ws_connect(url, headers=headers)
            except aiohttp.WSServerHandshakeError as error:
                return error.status, ""
            async with ws:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and until.encode() not in seen:
                    try:
                        message = await ws.receive(timeout=5)
                    except asyncio.TimeoutError:
                        continue
                    if message.type == aiohttp.WSMsgType.BINARY:
                        seen += message.data
                    elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
        return 0, seen.decode("utf-8", "replace")

    return asyncio.run(go())
