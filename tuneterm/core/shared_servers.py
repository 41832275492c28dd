"""One chat model server per workspace, shared by every process that chats with the same models.

`tuneterm web` gives each browser tab its own `tuneterm tui` process; with :class:`LocalServers`
each tab's Chat screen started its own ``tuneterm serve`` child, so three tabs held three copies
of the weights. :class:`SharedServers` has the same interface (``ensure``, ``served``,
``stop_all``) but its servers are found through the workspace:

- ``<workspace>/run/chat-servers/<key>.json`` names a running server (port, pid, refs, log), where
  ``key`` is a digest of the sorted references; ``<key>.lock`` (a file lock) makes sure one process
  starts it while the others wait for it;
- ``<key>.leases/<pid>-<n>`` is one user's lease (its content: the pid). ``stop_all`` removes this
  process's leases; a process that dies leaves a lease whose pid is gone, which counts for nothing.
- The server process (:mod:`tuneterm.workers.shared_serve`) watches its leases and stops itself
  (SIGTERM to its own ``tuneterm serve``, a clean stop) once none is held by a live process: it is
  started on first use, shared, and gone when the last tab leaves, even a tab that was killed.

A running server that serves every reference asked for is used as it is (a superset will do).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tuneterm.core.errors import OpenAIError, RuntimeFailure

SHARED_ENV = "TUNETERM_SHARED_CHAT_SERVERS"  # "1": the Chat screen uses SharedServers (set by `tuneterm web`)
_counter = itertools.count()


def registry_dir() -> Path:
    from tuneterm.core.workspace import workspace

    return workspace().root / "run" / "chat-servers"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_leases(folder: Path) -> list[Path]:
    """The lease files in ``folder`` held by live processes (stale ones are removed)."""
    out = []
    for lease in sorted(folder.glob("*")) if folder.is_dir() else []:
        try:
            pid = int(lease.read_text().strip() or lease.name.split("-")[0])
        except (OSError, ValueError):
            continue
        if pid_alive(pid):
            out.append(lease)
        else:
            lease.unlink(missing_ok=True)
    return out


def key_for(refs: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(set(refs))).encode()).hexdigest()[:16]


class SharedServers:
    """:class:`tuneterm.core.chat_client.LocalServers`'s interface over workspace-wide servers."""

    def __init__(self, root: Path | None = None, python: str | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.python = python or sys.executable
        self.leases: dict[str, Path] = {}  # server key -> this object's lease
        self.urls: dict[str, str] = {}  # ref -> its server's base URL
        self._lock = threading.Lock()
        import atexit

        atexit.register(self.stop_all)

    @property
    def dir(self) -> Path:
        if self.root is None:
            self.root = registry_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    # --- the registry -------------------------------------------------------------------------

    def _entries(self) -> list[dict]:
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if pid_alive(int(entry.get("pid", 0))):
                out.append(entry)
        return out

    def _lease(self, key: str) -> Path:
        folder = self.dir / f"{key}.leases"
        folder.mkdir(parents=True, exist_ok=True)
        lease = folder / f"{os.getpid()}-{next(_counter)}"
        lease.write_text(str(os.getpid()))
        return lease

    def served(self, ref: str) -> str | None:
        url = self.urls.get(ref)
        return f"{url}#{ref}" if url else None

    def ensure(self, refs: list[str], timeout: float = 300.0, cancel: threading.Event | None = None) -> dict[str, str]:
        """An ``http://…#ref`` reference for each ref, from a running shared server that serves them all,
        else from one started now (other processes asking for the same refs wait for it and share it).
        Blocking (may load models): call it from a worker thread."""
        from filelock import FileLock

        refs = list(dict.fromkeys(refs))
        with self._lock:
            if all(r in self.urls for r in refs):
                return {r: f"{self.urls[r]}#{r}" for r in refs}
            key = key_for(refs)
            for attempt in (1, 2):
                with FileLock(str(self.dir / f"{key}.lock")):
                    entry = next((e for e in self._entries() if set(refs) <= set(e["refs"])), None)
                    joined = entry is not None
                    if entry is None:
                        entry = self._start(key, refs)
                    else:
                        self._hold(entry["key"])
                try:
                    self._wait_ready(entry, timeout, cancel)
                    break
                except BaseException:
                    self._drop(entry["key"])
                    # a server joined just as it stopped itself (its last tab had left): start a new one
                    if not (joined and attempt == 1 and not pid_alive(int(entry["pid"]))):
                        raise
            base = f"http://127.0.0.1:{entry['port']}/v1"
            for r in entry["refs"]:
                self.urls[r] = base
            return {r: f"{base}#{r}" for r in refs}

    def _hold(self, key: str) -> None:
        if key not in self.leases:
            self.leases[key] = self._lease(key)

    def _drop(self, key: str) -> None:
        lease = self.leases.pop(key, None)
        if lease is not None:
            lease.unlink(missing_ok=True)
        self.urls = {r: u for r, u in self.urls.items() if r not in self._refs_of(key)}

    def _refs_of(self, key: str) -> list[str]:
        try:
            return json.loads((self.dir / f"{key}.json").read_text())["refs"]
        except (OSError, ValueError, KeyError):
            return []

    def _start(self, key: str, refs: list[str]) -> dict:
        from tuneterm.core.chat_client import free_port
        from tuneterm.core.generation import inference_thread_env

        self._hold(key)  # before the server starts: it never sees itself without a user
        port = free_port()
        log_path = self.dir / f"{key}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "tuneterm.workers.shared_serve", "--leases", str(self.dir / f"{key}.leases"),
                 "--entry", str(self.dir / f"{key}.json"), "--port", str(port), "--", *refs],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**inference_thread_env(), "TUNETERM_API_KEY": ""},
            )
        entry = {"key": key, "refs": refs, "port": port, "pid": proc.pid, "log": str(log_path),
                 "started_at": time.time()}
        from tuneterm.core.fsutil import atomic_write_json

        atomic_write_json(self.dir / f"{key}.json", entry)
        return entry

    def _wait_ready(self, entry: dict, timeout: float, cancel: threading.Event | None) -> None:
        from tuneterm.core.chat_client import list_models

        base = f"http://127.0.0.1:{entry['port']}/v1"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                raise RuntimeFailure("cancelled while the model server was starting", [("models", ", ".join(entry["refs"]))])
            if not pid_alive(int(entry["pid"])):
                tail = Path(entry["log"]).read_text(errors="replace").strip().splitlines()[-8:]
                raise RuntimeFailure("the shared model server exited while loading",
                                     [("models", ", ".join(entry["refs"])), ("log", entry["log"])]
                                     + [("", line) for line in tail],
                                     "run `tuneterm serve " + " ".join(entry["refs"]) + "` to see the error")
            try:
                if set(entry["refs"]) <= set(list_models(base, timeout=1.0)):
                    return
            except OpenAIError:
                pass
            time.sleep(0.1)
        raise RuntimeFailure("the shared model server did not become ready in time",
                             [("models", ", ".join(entry["refs"])), ("waited", f"{timeout:.0f} s"), ("log", entry["log"])])

    def stop_all(self) -> None:
        """Give up this object's leases; each server stops itself when it has no live lease left."""
        with self._lock:
            for key in list(self.leases):
                self._drop(key)
            self.urls.clear()

    def __enter__(self) -> "SharedServers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def chat_servers():
    """What the Chat screen starts its local models with: workspace-wide :class:`SharedServers` when
    ``$TUNETERM_SHARED_CHAT_SERVERS`` is 1 (as `tuneterm web` sets it for its tabs), else its own
    :class:`~tuneterm.core.chat_client.LocalServers`."""
    if os.environ.get(SHARED_ENV) == "1":
        return SharedServers()
    from tuneterm.core.chat_client import LocalServers

    return LocalServers()
