"""A fake Mistral fine-tuning API: /v1/files, /v1/fine_tuning/jobs (?dry_run=true), /{id}, /{id}/cancel,
with Mistral's states (QUEUED > VALIDATING > RUNNING > SUCCESS), events and checkpoints inside the job."""

from __future__ import annotations

import json
import re
import uuid

from .base import FakeREST, count_tokens

MODELS = ("open-mistral-7b", "open-mistral-nemo", "mistral-small-latest", "codestral-latest", "ministral-8b-latest")
RATE = 1.0  # USD per 1M tokens: a stand-in for the server's own rate
MIN_FEE = 4.0


class FakeMistral(FakeREST):
    def _dry_run(self, body: dict) -> dict:
        fid = body["training_files"][0]["file_id"]
        n, tokens = count_tokens(self.files[fid], body["model"], "mistral")
        epochs = (body.get("hyperparameters") or {}).get("epochs") or 1
        train = round(tokens * epochs * self.faults.estimate_scale)
        return {"object": "job.metadata", "expected_duration_seconds": 120, "cost": max(MIN_FEE, round(train * RATE / 1e6, 4)),
                "cost_currency": "USD", "train_tokens_per_step": 131072, "train_tokens": train, "data_tokens": tokens,
                "epochs": epochs}

    def route(self, verb, path, query, body, form):
        if verb == "POST" and path == "/files":
            if not form or "file" not in form:
                return 422, {"detail": [{"loc": ["body", "file"], "msg": "field required"}]}
            fid = str(uuid.uuid4())
            self.files[fid] = form["file"][1]
            return 200, {"id": fid, "object": "file", "bytes": len(form["file"][1]), "filename": form["file"][0],
                         "purpose": form.get("purpose", "fine-tune"), "num_lines": form["file"][1].count(b"\n")}
        data = json.loads(body) if body and form is None else {}
        if verb == "POST" and path == "/fine_tuning/jobs":
            if data.get("model") not in MODELS:
                return 400, {"message": f"Model {data.get('model')} is not available for fine-tuning", "type": "invalid_model"}
            files = [f["file_id"] for f in data.get("training_files") or []]
            if not files or any(f not in self.files for f in files):
                return 404, {"message": "training file not found"}
            if query.get("dry_run") == "true":
                return 200, self._dry_run(data)
            jid = str(uuid.uuid4())
            job = {"id": jid, "object": "job", "auto_start": data.get("auto_start", True), "model": data["model"],
                   "status": "QUEUED", "created_at": self.tick(), "modified_at": self.clock, "training_files": files,
                   "validation_files": data.get("validation_files") or [], "hyperparameters":
                   {"epochs": (data.get("hyperparameters") or {}).get("epochs", 1.0), "learning_rate": 1e-4},
                   "fine_tuned_model": None, "suffix": data.get("suffix"), "trained_tokens": None,
                   "events": [], "checkpoints": [], "_fail": self.faults.fail_next}
            self.faults.fail_next = False
            self.jobs[jid] = job
            self._event(job, "QUEUED")
            if self.faults.create_5xx_after > 0:
                self.faults.create_5xx_after -= 1
                return 503, {"message": "Service unavailable"}
            return 200, _public(job)
        if verb == "GET" and path == "/fine_tuning/jobs":
            return 200, {"object": "list", "data": [_public(j) for j in self.jobs.values()], "total": len(self.jobs)}
        m = re.fullmatch(r"/fine_tuning/jobs/([^/]+)(?:/(cancel|start))?", path)
        if m:
            job = self.jobs.get(m.group(1))
            if job is None:
                return 404, {"message": f"Job {m.group(1)} not found"}
            if verb == "GET" and m.group(2) is None:
                self._advance(job)
                return 200, _public(job)
            if verb == "POST" and m.group(2) == "cancel":
                job["status"] = "CANCELLED"
                job["modified_at"] = self.tick()
                self._event(job, "CANCELLED")
                return 200, _public(job)
        return 404, {"message": f"no route {verb} {path}"}

    def _event(self, job: dict, status: str, error: str | None = None) -> None:
        data = {"status": status}
        if error:
            data["error"] = error
        job["events"].append({"name": "status-updated", "data": data, "created_at": self.tick()})

    def _advance(self, job: dict) -> None:
        s = job["status"]
        if s == "QUEUED":
            job["status"] = "VALIDATING"
            self._event(job, "VALIDATING")
        elif s == "VALIDATING":
            if job["_fail"]:
                job["status"] = "FAILED_VALIDATION"
                self._event(job, "FAILED_VALIDATION", "line 3: messages must end with an assistant message")
                return
            job["status"] = "RUNNING"
            self._event(job, "RUNNING")
        elif s == "RUNNING":
            n, tokens = count_tokens(self.files[job["training_files"][0]], job["model"], "mistral")
            epochs = job["hyperparameters"]["epochs"]
            for step in (1, 2):
                job["checkpoints"].append({"metrics": {"train_loss": round(2.0 / step, 3), "valid_loss": None},
                                           "step_number": step * 10, "created_at": self.tick()})
            job.update(status="SUCCESS", trained_tokens=int(tokens * epochs), modified_at=self.tick(),
                       fine_tuned_model=f"ft:{job['model']}:{job['suffix'] or 'tuned'}:{job['id'][:8]}")
            self._event(job, "SUCCESS")


def _public(job: dict) -> dict:
    return {k: v for k, v in job.items() if not k.startswith("_")}
