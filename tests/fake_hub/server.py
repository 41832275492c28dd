"""The Hub endpoints ``huggingface_hub``'s ``create_repo`` and ``create_commit`` call, on 127.0.0.1.

- ``POST /api/repos/create`` (name, organization, visibility): 200 with the repo URL, 409 when it exists;
- ``POST /api/validate-yaml``: the README's front matter parsed, ``model-index`` checked with
  huggingface_hub's own parser (400 with errors, as the Hub answers);
- ``POST /api/models/{org}/{name}/preupload/{rev}``: every file is a regular (inline) upload;
- ``POST /api/models/{org}/{name}/commit/{rev}``: the NDJSON commit (header, base64 files), stored;
- ``GET /api/models/{org}/{name}``: the repo's info and file list.

Bearer tokens are checked (``VALID_TOKEN``); every request is recorded, so a test can assert that no
token went anywhere else and what was uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

VALID_TOKEN = "hf_fake_0123456789abcdef"


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # "org/name" -> {"private", "files": {path: bytes}, "commits": [...]}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code >= 400:
                self.send_header("X-Error-Message", body.get("error", ""))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorised(self) -> bool:
            auth = self.headers.get("Authorization")
            with hub.lock:
                hub.requests.append((self.command, self.path, auth))
            if auth != f"Bearer {VALID_TOKEN}":
                self._send(401, {"error": "Invalid credentials in Authorization header"})
                return False
            return True

        def do_GET(self):  # noqa: N802
            if not self._authorised():
                return
            parts = urlsplit(self.path).path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id = f"{parts[2]}/{parts[3]}"
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._send(404, {"error": "Repository not found"})
                sha = repo["commits"][-1] if repo["commits"] else "0" * 40
                return self._send(200, {"id": repo_id, "private": repo["private"], "sha": sha,
                                        "siblings": [{"rfilename": p} for p in sorted(repo["files"])]})
            self._send(404, {"error": "not found"})

        def do_POST(self):  # noqa: N802
            if not self._authorised():
                return
            path = unquote(urlsplit(self.path).path)
            body = self._body()
            if path == "/api/repos/create":
                return self._create(json.loads(body))
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] in ("preupload", "commit"):
                repo_id = f"{parts[2]}/{parts[3]}"
                if repo_id not in hub.repos:
                    return self._send(404, {"error": f"Repository {repo_id} not found"})
                if parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False, "oid": None} for f in files]})
                return self._commit(repo_id, body)
            self._send(404, {"error": f"no route {path}"})

        def _create(self, payload: dict) -> None:
            repo_id = f"{payload.get('organization')}/{payload['name']}"
            with hub.lock:
                if repo_id in hub.repos:
                    return self._send(409, {"error": "You already created this model repo", "url": ""})
                hub.repos[repo_id] = {"private": payload.get("visibility") == "private", "files": {},
                                      "commits": [], "type": payload.get("type", "model")}
            self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def _validate_yaml(self, payload: dict) -> None:
            content = payload.get("content", "")
            errors = []
            if content.startswith("---"):
                end = content.find("\n---", 3)
                try:
                    meta = yaml.safe_load(content[3:end]) or {}
                    if not isinstance(meta, dict):
                        errors.append("the metadata is not a mapping")
                    elif "model-index" in meta:
                        from huggingface_hub.repocard_data import model_index_to_eval_results

                        model_index_to_eval_results(meta["model-index"])
                except Exception as exc:  # noqa: BLE001 - reported as the Hub reports it
                    errors.append(f"{type(exc).__name__}: {exc}")
            if errors:
                return self._send(400, {"errors": [{"message": e} for e in errors], "error": "; ".join(errors)})
            self._send(200, {"errors": [], "warnings": []})

        def _commit(self, repo_id: str, body: bytes) -> None:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next((x["value"] for x in lines if x["key"] == "header"), None)
            if header is None or not header.get("summary"):
                return self._send(400, {"error": "a commit needs a header with a summary"})
            files = {}
            for item in lines:
                if item["key"] == "file":
                    value = item["value"]
                    if value.get("encoding") != "base64":
                        return self._send(400, {"error": f"unknown encoding {value.get('encoding')}"})
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "lfsFile":
                    return self._send(400, {"error": "this stand-in takes inline files only"})
            oid = hashlib.sha1(body).hexdigest()
            with hub.lock:
                repo = hub.repos[repo_id]
                repo["files"].update(files)
                repo["commits"].append(oid)
            self._send(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                             "pullRequestUrl": None, "success": True})

    return Handler
