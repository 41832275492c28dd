"""A fake Together AI fine-tuning API: /v1/files/upload, /v1/fine-tunes (+ /{id}, /events, /cancel,
/estimate-price), with Together's job states (pending > queued > running > completed) and objects."""

from __future__ import annotations

import json
import re

from .base import FakeREST, count_tokens, rid

MODELS = ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference",
          "meta-llama/Llama-3.3-70B-Instruct-Reference", "mistralai/Mistral-7B-Instruct-v0.2", "Qwen/Qwen2.5-7B-Instruct")
RATE = 0.48  # USD per 1M tokens: a stand-in for the server's own rate


class FakeTogether(FakeREST):
    def _event(self, job: dict, message: str, level: str = "info") -> None:
        job["_events"].append({"object": "fine-tune-event", "created_at": self.tick(), "level": level,
                               "message": message, "type": "JOB_START"})

    def _estimate(self, body: dict) -> dict:
        n, tokens = count_tokens(self.files[body["training_file"]], body["model"], "together")
        epochs = body.get("n_epochs") or 1
        train = round(tokens * epochs * self.faults.estimate_scale)
        return {"estimated_total_price": round(train * RATE / 1e6, 6), "estimated_train_token_count": train,
                "estimated_eval_token_count": 0, "user_limit": 100.0, "allowed_to_proceed": True}

    def route(self, verb, path, query, body, form):
        if verb == "POST" and path == "/files/upload":
            if not form or "file" not in form or form.get("purpose") != "fine-tune":
                return 400, {"error": {"message": "file and purpose=fine-tune are required"}}
            fid = rid("file-")
            self.files[fid] = form["file"][1]
            return 200, {"id": fid, "object": "file", "filename": form.get("file_name"), "purpose": "fine-tune",
                         "bytes": len(form["file"][1])}
        data = json.loads(body or b"{}") if form is None and body else {}
        if verb == "POST" and path == "/fine-tunes/estimate-price":
            return 200, self._estimate(data)
        if verb == "POST" and path == "/fine-tunes":
            if data.get("model") not in MODELS:
                return 400, {"error": {"message": f"model {data.get('model')} is not available for fine-tuning"}}
            if data.get("training_file") not in self.files:
                return 400, {"error": {"message": "training_file not found"}}
            jid = rid("ft-")
            job = {"id": jid, "status": "pending", "model": data["model"], "training_file": data["training_file"],
                   "validation_file": data.get("validation_file", ""), "n_epochs": data.get("n_epochs", 1),
                   "batch_size": data.get("batch_size", 8), "learning_rate": 1e-5, "suffix": data.get("suffix"),
                   "created_at": "2026-12-05T10:00:00Z", "updated_at": "2026-12-05T10:00:00Z",
                   "output_name": None, "token_count": None, "_events": [], "_fail": self.faults.fail_next}
            self.faults.fail_next = False
            self.jobs[jid] = job
            self._event(job, "Fine tune request created")
            if self.faults.create_5xx_after > 0:
                self.faults.create_5xx_after -= 1
                return 502, {"error": {"message": "bad gateway"}}
            return 200, _public(job)
        if verb == "GET" and path == "/fine-tunes":
            return 200, {"data": [_public(j) for j in self.jobs.values()]}
        m = re.fullmatch(r"/fine-tunes/([^/]+)(?:/(events|cancel))?", path)
        if m:
            job = self.jobs.get(m.group(1))
            if job is None:
                return 404, {"error": {"message": f"fine-tune job {m.group(1)} not found"}}
            if verb == "GET" and m.group(2) is None:
                self._advance(job)
                return 200, _public(job)
            if verb == "GET" and m.group(2) == "events":
                return 200, {"data": job["_events"]}
            if verb == "POST" and m.group(2) == "cancel":
                if job["status"] in ("completed", "cancelled", "error"):
                    return 400, {"error": {"message": "job already finished"}}
                job["status"] = "cancelled"
                self._event(job, "Job cancelled by user")
                return 200, _public(job)
        return 404, {"error": {"message": f"no route {verb} {path}"}}

    def _advance(self, job: dict) -> None:
        s = job["status"]
        if s == "pending":
            job["status"] = "queued"
            self._event(job, "Job queued")
        elif s == "queued":
            if job["_fail"]:
                job["status"] = "error"
                job["error"] = "training file has an invalid format"
                self._event(job, "Job failed: training file has an invalid format", "error")
                return
            job["status"] = "running"
            self._event(job, "Training started")
        elif s == "running":
            n, tokens = count_tokens(self.files[job["training_file"]], job["model"], "together")
            job["status"] = "completed"
            job["token_count"] = tokens
            job["trained_tokens"] = tokens * job["n_epochs"]
            job["output_name"] = f"fakeuser/{job['model'].split('/')[-1]}-{job['suffix'] or 'ft'}-{job['id'][-6:]}"
            job["updated_at"] = "2026-12-05T10:30:00Z"
            self._event(job, f"Training completed; model {job['output_name']} uploaded")


def _public(job: dict) -> dict:
    return {k: v for k, v in job.items() if not k.startswith("_")}
