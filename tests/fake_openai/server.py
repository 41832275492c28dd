"""A fake OpenAI fine-tuning API on 127.0.0.1 for tests: real HTTP, real JSON shapes.

It speaks the REST protocol of shared/reference/openai-fine-tuning.md §9: ``/v1/files``,
``/v1/fine_tuning/jobs`` (create, list with ``metadata[k]=v``, retrieve, cancel, pause, resume,
events newest-first with ``after``, checkpoints) and ``/v1/models``. The real ``openai`` client
talks to it through ``base_url``.

Time is compressed: every ``GET`` of a job (retrieve, events, checkpoints) advances it one stage:

    validating_files -> queued -> running (hyperparameters become numbers) -> one epoch per poll,
    with a metrics event per step and a checkpoint per epoch (last 3 kept) -> succeeded
    (trained_tokens, fine_tuned_model, a result file)

Faults are injected through :class:`Faults` (or decided by the uploaded file's content):
invalid-token file, fewer than 10 examples, moderation failure, 401, 403 on create,
429 + Retry-After, 5xx on create (before or after the job is stored), a paused job.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import math
import random
import re
import string
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

ORG = "org-fake0000000000000000"
VALID_KEY = "sk-fake-valid-key-0123456789"
SPECIAL_TOKENS = ("<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>")
ALIASES = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06", "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}
BASE_MODELS = {  # id -> shutdown_date
    "gpt-4o-mini-2024-07-18": "2027-01-14", "gpt-4o-2024-08-06": "2027-01-14", "gpt-4.1-2025-04-14": "2027-01-14",
    "gpt-4.1-mini-2025-04-14": "2027-01-14", "gpt-4.1-nano-2025-04-14": "2026-10-23",
    "gpt-3.5-turbo-0125": "2026-10-23", "davinci-002": None, "babbage-002": None,
}
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Faults:
    """What goes wrong. Counters count down as the faults fire."""

    forbid_create: bool = False  # 403: the organization cannot create fine-tuning jobs (wind-down)
    rate_limit: int = 0  # next N requests get 429
    retry_after: int = 7  # seconds, in the Retry-After header of a 429
    create_5xx_before: int = 0  # next N creates fail with 500 and store nothing
    create_5xx_after: int = 0  # next N creates store the job, then answer 502 (a duplicate risk)
    moderation_failure: bool = False  # jobs fail after training: moderation eval
    pause_at_running: bool = False  # jobs go to `paused` when they would start running


def _rid(prefix: str, n: int = 24) -> str:
    return prefix + "".join(random.choices(string.ascii_letters + string.digits, k=n))


def _err(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.files: dict[str, dict] = {}
        self.contents: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}  # id -> {"job": obj, "events": [...], "checkpoints": [...], ...}
        self.order: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: list[str] = []
        self.models: dict[str, dict] = {
            m: {"id": m, "object": "model", "created": 1700000000, "owned_by": "system", "shutdown_date": d}
            for m, d in BASE_MODELS.items()
        }


class FakeOpenAI:
    """``with FakeOpenAI() as fake: OpenAI(base_url=fake.base_url, api_key=fake.key)``."""

    def __init__(self, faults: Faults | None = None, key: str = VALID_KEY, steps_per_poll: int | None = None,
                 azure: bool = False):
        # azure=True speaks Azure OpenAI's dialect: /openai/... paths with ?api-version=, the `api-key`
        # header, and `pending` where OpenAI says `validating_files`.
        self.azure = azure
        self.faults = faults or Faults()
        self.key = key
        self.state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.clock = int(time.time())

    # -- lifecycle --
    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}" + ("" if self.azure else "/v1")

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    # -- jobs --
    def _event(self, rec: dict, message: str, type_: str = "message", data: Any = "empty", level: str = "info"):
        rec["events"].append({
            "object": "fine_tuning.job.event", "id": _rid("ftevent-"), "created_at": self.tick(),
            "level": level, "message": message, "type": type_, "data": {} if data == "empty" else data,
        })

    def create_job(self, body: dict) -> tuple[int, dict]:
        model = body.get("model")
        training_file = body.get("training_file")
        if not model or not training_file:
            return 400, _err("Missing required parameter: 'model' or 'training_file'.", param="model")
        base = model.split(":")[1] if model.startswith("ft:") else ALIASES.get(model, model)
        if base not in BASE_MODELS:
            return 400, _err(f"Model {model} is not available for fine-tuning or does not exist.",
                             param="model", code="model_not_available")
        if training_file not in self.state.files:
            return 400, _err(f"invalid training_file: {training_file}", param="training_file")
        suffix = body.get("suffix")
        if suffix is not None and not 1 <= len(suffix) <= 64:
            return 400, _err("suffix must be 1-64 characters", param="suffix")
        method = body.get("method") or {"type": "supervised", "supervised": {"hyperparameters": body.get("hyperparameters") or {}}}
        mtype = method.get("type", "supervised")
        hp = dict((method.get(mtype) or {}).get("hyperparameters") or {})
        for key in ("n_epochs", "batch_size", "learning_rate_multiplier"):
            hp.setdefault(key, "auto")
        if mtype == "dpo":
            hp.setdefault("beta", "auto")
        job_id = _rid("ftjob-")
        job = {
            "object": "fine_tuning.job", "id": job_id, "created_at": self.tick(), "error": {}, "finished_at": None,
            "fine_tuned_model": None, "hyperparameters": None if mtype == "dpo" else dict(hp), "model": base,
            "organization_id": ORG, "result_files": [], "status": "pending" if self.azure else "validating_files",
            "trained_tokens": None,
            "training_file": training_file, "validation_file": body.get("validation_file"),
            "seed": body.get("seed") if body.get("seed") is not None else random.randint(0, 2**31 - 1),
            "estimated_finish": None, "integrations": body.get("integrations") or [],
            "method": {"type": mtype, mtype: {"hyperparameters": dict(hp)}}, "metadata": body.get("metadata"),
            "user_provided_suffix": suffix, "usage_metrics": None, "shared_with_openai": False,
        }
        rec = {"job": job, "events": [], "checkpoints": [], "epoch": 0, "suffix": suffix}
        with self.state.lock:
            self.state.jobs[job_id] = rec
            self.state.order.append(job_id)
            self._event(rec, f"Created fine-tuning job: {job_id}")
            vf = job["validation_file"]
            self._event(rec, f"Validating training file: {training_file}" + (f" and validation file: {vf}" if vf else ""))
        return 200, job

    def _examples(self, file_id: str) -> tuple[list, str | None]:
        """Parsed lines of a file and the first problem a real validator reports, if any."""
        raw = self.state.contents.get(file_id, b"")
        rows = []
        for i, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            for tok in SPECIAL_TOKENS:
                if tok in line:
                    return rows, f"Invalid file format. Example {i} message contains an invalid token: {tok}"
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                return rows, f"Invalid file format. Line {i}, key \"messages\": not valid JSON."
        if len(rows) < 10:
            return rows, f"Training file has {len(rows)} example(s), but must have at least 10 examples"
        return rows, None

    def _fail(self, rec: dict, code: str, message: str, param: str | None) -> None:
        job = rec["job"]
        job["status"] = "failed"
        job["error"] = {"code": code, "message": message, "param": param}
        job["finished_at"] = self.tick()
        self._event(rec, message, level="error", data=None)

    def advance(self, job_id: str) -> None:
        """One stage further (called on each GET of the job)."""
        with self.state.lock:
            rec = self.state.jobs[job_id]
            job = rec["job"]
            status = job["status"]
            if status in ("validating_files", "pending"):
                rows, problem = self._examples(job["training_file"])
                if problem:
                    self._fail(rec, "invalid_training_file", problem, "training_file")
                    return
                rec["n"] = len(rows)
                rec["tokens"] = sum(_rough_tokens(r, job["model"]) for r in rows)
                job["status"] = "queued"
                self._event(rec, "Files validated, moving job to queued state")
            elif status == "queued":
                if self.faults.pause_at_running:
                    job["status"] = "paused"
                    self._event(rec, "Fine-tuning job paused")
                    return
                self._start(rec)
            elif status == "running":
                self._run_epoch(rec)

    def _start(self, rec: dict) -> None:
        job = rec["job"]
        n = rec["n"]
        mtype = job["method"]["type"]
        hp = job["method"][mtype]["hyperparameters"]
        if hp["n_epochs"] == "auto":
            hp["n_epochs"] = 3 if 100 <= 3 * n <= 25000 else (min(25, 100 // n) if 3 * n < 100 else max(1, 25000 // n))
        if hp["batch_size"] == "auto":
            hp["batch_size"] = 1 if n <= 1000 else math.ceil(n / 1000)
        if hp["learning_rate_multiplier"] == "auto":
            hp["learning_rate_multiplier"] = 1.8
        if "beta" in hp and hp["beta"] == "auto":
            hp["beta"] = 0.1
        if job["hyperparameters"] is not None:
            job["hyperparameters"] = {k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
        rec["steps_per_epoch"] = math.ceil(n / hp["batch_size"])
        rec["total_steps"] = rec["steps_per_epoch"] * hp["n_epochs"]
        job["status"] = "running"
        job["estimated_finish"] = self.clock + 600
        self._event(rec, "Fine-tuning job started", data=None)

    def _run_epoch(self, rec: dict) -> None:
        job = rec["job"]
        hp = job["method"][job["method"]["type"]]["hyperparameters"]
        spe, total = rec["steps_per_epoch"], rec["total_steps"]
        rec["epoch"] += 1
        loss = 2.0 / rec["epoch"]
        for k in range(spe * (rec["epoch"] - 1) + 1, spe * rec["epoch"] + 1):
            step_loss = round(loss * (1 - 0.3 * k / total), 4)
            data = {"step": k, "total_steps": total, "train_loss": step_loss,
                    "train_mean_token_accuracy": round(min(1.0, 0.5 + 0.5 * k / total), 4)}
            if job["validation_file"] and k % spe == 0:
                data.update(valid_loss=step_loss + 0.05, valid_mean_token_accuracy=data["train_mean_token_accuracy"])
            self._event(rec, f"Step {k}/{total}: training loss={step_loss:.2f}", type_="metrics", data=data)
        step = spe * rec["epoch"]
        final = _ft_name(job, rec)
        ckpt = {"object": "fine_tuning.job.checkpoint", "id": _rid("ftckpt_"), "created_at": self.tick(),
                "fine_tuned_model_checkpoint": f"{final}:ckpt-step-{step}", "fine_tuning_job_id": job["id"],
                "step_number": step, "metrics": {"step": step, "train_loss": loss}}
        rec["checkpoints"].append(ckpt)
        rec["checkpoints"] = rec["checkpoints"][-3:]
        self._event(rec, f"Checkpoint created at step {step} with Snapshot ID: {ckpt['fine_tuned_model_checkpoint']}")
        if rec["epoch"] < hp["n_epochs"]:
            return
        if self.faults.moderation_failure:
            self._fail(rec, "invalid_training_file", "Error while running moderation eval refusals_v3 for the "
                       "fine-tuned model: the model failed the safety evaluation.", None)
            return
        rec["checkpoints"][-1]["fine_tuned_model_checkpoint"] = final
        job.update(status="succeeded", fine_tuned_model=final, finished_at=self.tick(),
                   trained_tokens=rec["tokens"] * hp["n_epochs"], estimated_finish=None)
        result = self._store_file(b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n",
                                  "step_metrics.csv", "fine-tune-results")
        job["result_files"] = [result["id"]]
        self.state.models[final] = {"id": final, "object": "model", "created": self.clock, "owned_by": ORG}
        self._event(rec, f"New fine-tuned model created: {final}")
        self._event(rec, "The job has successfully completed")

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict:
        obj = {"id": _rid("file-"), "object": "file", "bytes": len(data), "created_at": self.tick(),
               "expires_at": None, "filename": filename, "purpose": purpose, "status": "processed",
               "status_details": None}
        self.state.files[obj["id"]] = obj
        self.state.contents[obj["id"]] = data
        return obj

    def job_count(self) -> int:
        return len(self.state.jobs)


def _ft_name(job: dict, rec: dict) -> str:
    suffix = rec.get("suffix") or ""
    return f"ft:{job['model']}:personal:{suffix}:{job['id'][-8:]}" if suffix else f"ft:{job['model']}:personal::{job['id'][-8:]}"


def _rough_tokens(example: Any, model: str = "gpt-4o-mini-2024-07-18") -> int:
    """The server's token count of one example (the real tokenizer, as OpenAI bills)."""
    from tuneterm.core.openai_tokens import count_example_tokens

    return count_example_tokens(example, model)


def _page(items: list[dict], after: str | None, limit: int, with_ids: bool = False) -> dict:
    start = 0
    if after:
        ids = [i["id"] for i in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    data = items[start:start + limit]
    page = {"object": "list", "data": data, "has_more": start + limit < len(items)}
    if with_ids:
        page["first_id"] = data[0]["id"] if data else None
        page["last_id"] = data[-1]["id"] if data else None
    return page


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", _rid("req_", 16))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _guard(self) -> bool:
        fake = self.server_fake
        auth = self.headers.get("Authorization", "")
        if fake.azure:
            auth = "Bearer " + self.headers.get("api-key", "")
            if "api-version=" not in (urlsplit(self.path).query or ""):
                self._send(404, _err("Resource not found: api-version is missing"))
                return False
        fake.state.auth_headers.append(auth)
        if auth != f"Bearer {fake.key}":
            key = auth.removeprefix("Bearer ")
            masked = key[:3] + "*" * 6 + key[-4:] if len(key) > 8 else "***"
            self._send(401, _err(f"Incorrect API key provided: {masked}. You can find your API key at "
                                 "https://platform.openai.com/account/api-keys.", code="invalid_api_key"))
            return False
        if fake.faults.rate_limit > 0:
            fake.faults.rate_limit -= 1
            self._send(429, _err("Rate limit reached for requests", type_="requests", code="rate_limit_exceeded"),
                       {"Retry-After": str(fake.faults.retry_after)})
            return False
        return True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, verb: str) -> None:
        fake = self.server_fake
        url = urlsplit(self.path)
        path = url.path.removeprefix("/openai") if fake.azure else url.path.removeprefix("/v1")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        body = self._body()
        fake.state.requests.append((verb, path))
        if not self._guard():
            return
        limit = int(query.get("limit", 20))
        after = query.get("after")
        st = fake.state
        with st.lock:
            if verb == "POST" and path == "/files":
                return self._upload(body)
            if verb == "GET" and path == "/files":
                files = sorted(st.files.values(), key=lambda f: f["created_at"], reverse=True)
                return self._send(200, _page(files, after, limit, with_ids=True))
            m = re.fullmatch(r"/files/([^/]+)(/content)?", path)
            if m:
                fid = m.group(1)
                if fid not in st.files:
                    return self._send(404, _err(f"No such File object: {fid}", param="id"))
                if verb == "DELETE":
                    st.files.pop(fid)
                    return self._send(200, {"id": fid, "object": "file", "deleted": True})
                return self._send(200, st.contents[fid] if m.group(2) else st.files[fid])
            if path == "/fine_tuning/jobs" and verb == "POST":
                return self._create(json.loads(body or b"{}"))
            if path == "/fine_tuning/jobs" and verb == "GET":
                wanted = {k[len("metadata["):-1]: v for k, v in query.items() if k.startswith("metadata[")}
                jobs = [st.jobs[j]["job"] for j in reversed(st.order)]
                if wanted:
                    jobs = [j for j in jobs if all((j.get("metadata") or {}).get(k) == v for k, v in wanted.items())]
                return self._send(200, _page(jobs, after, limit))
            m = re.fullmatch(r"/fine_tuning/jobs/([^/]+)(?:/(events|checkpoints|cancel|pause|resume))?", path)
            if m:
                return self._job(verb, m.group(1), m.group(2), after, limit if "limit" in query else None)
            if verb == "GET" and path == "/models":
                return self._send(200, {"object": "list", "data": list(st.models.values())})
            m = re.fullmatch(r"/models/(.+)", path)
            if m:
                mid = m.group(1)
                if mid not in st.models:
                    return self._send(404, _err(f"The model '{mid}' does not exist", param="model",
                                                code="model_not_found"))
                if verb == "DELETE":
                    st.models.pop(mid)
                    return self._send(200, {"id": mid, "object": "model", "deleted": True})
                return self._send(200, st.models[mid])
        self._send(404, _err(f"Invalid URL ({verb} {url.path})"))

    def _upload(self, body: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        fields: dict[str, Any] = {}
        filename = "upload.jsonl"
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                filename = part.get_filename()
            fields[name] = part.get_payload(decode=True)
        purpose = (fields.get("purpose") or b"").decode()
        if "file" not in fields or not purpose:
            return self._send(400, _err("Missing file or purpose", param="file"))
        if purpose not in ("fine-tune", "batch", "assistants", "vision", "user_data"):
            return self._send(400, _err(f"Invalid purpose: {purpose}", param="purpose"))
        self._send(200, self.server_fake._store_file(fields["file"], filename, purpose))

    def _create(self, body: dict) -> None:
        fake = self.server_fake
        if fake.faults.forbid_create:
            return self._send(403, _err("This organization cannot create fine-tuning jobs.", code="permission_denied"))
        if fake.faults.create_5xx_before > 0:
            fake.faults.create_5xx_before -= 1
            return self._send(500, _err("The server had an error while processing your request.", type_="server_error"))
        status, job = fake.create_job(body)
        if status == 200 and fake.faults.create_5xx_after > 0:
            fake.faults.create_5xx_after -= 1
            return self._send(502, _err("Bad gateway.", type_="server_error"))
        self._send(status, job)

    def _job(self, verb: str, job_id: str, action: str | None, after: str | None, limit: int | None) -> None:
        fake = self.server_fake
        rec = fake.state.jobs.get(job_id)
        if rec is None:
            return self._send(404, _err(f"Could not find fine-tune: {job_id}", param="fine_tune_id"))
        job = rec["job"]
        if verb == "GET" and action in (None, "events", "checkpoints") and job["status"] not in TERMINAL + ("paused",):
            fake.advance(job_id)
        if verb == "GET" and action is None:
            return self._send(200, job)
        if verb == "GET" and action == "events":
            return self._send(200, _page(list(reversed(rec["events"])), after, limit or 20))
        if verb == "GET" and action == "checkpoints":
            return self._send(200, _page(list(reversed(rec["checkpoints"])), after, limit or 10, with_ids=True))
        if verb == "POST" and action == "cancel":
            if job["status"] in TERMINAL:
                return self._send(400, _err(f"Job {job_id} has already completed.", param="fine_tune_id"))
            job.update(status="cancelled", finished_at=fake.tick())
            fake._event(rec, "Fine-tuning job cancelled")
            return self._send(200, job)
        if verb == "POST" and action == "pause":
            if job["status"] not in ("queued", "running"):
                return self._send(400, _err(f"Job {job_id} cannot be paused in state {job['status']}."))
            job["status"] = "paused"
            fake._event(rec, "Fine-tuning job paused")
            return self._send(200, job)
        if verb == "POST" and action == "resume":
            if job["status"] != "paused":
                return self._send(400, _err(f"Job {job_id} is not paused."))
            fake.faults.pause_at_running = False
            job["status"] = "queued"
            fake._event(rec, "Fine-tuning job resumed")
            return self._send(200, job)
        self._send(405, _err("Method not allowed"))
