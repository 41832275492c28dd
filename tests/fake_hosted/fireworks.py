"""A fake Fireworks fine-tuning API: /v1/accounts/{acc}/datasets (+ :upload),
/v1/accounts/{acc}/supervisedFineTuningJobs (+ /{id}, /{id}:cancel), with JOB_STATE_* and jobProgress."""

from __future__ import annotations

import json
import re

from .base import FakeREST, count_tokens, rid

ACCOUNT = "fake-account"
MODELS = ("accounts/fireworks/models/llama-v3p1-8b-instruct", "accounts/fireworks/models/llama-v3p3-70b-instruct",
          "accounts/fireworks/models/mixtral-8x7b-instruct", "accounts/fireworks/models/qwen2p5-7b-instruct")


class FakeFireworks(FakeREST):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.datasets: dict[str, dict] = {}

    def route(self, verb, path, query, body, form):
        root = f"/accounts/{ACCOUNT}"
        if not path.startswith(root):
            return 403, {"error": {"code": 7, "message": "permission denied for this account", "status": "PERMISSION_DENIED"}}
        path = path[len(root):]
        data = json.loads(body) if body and form is None else {}
        if verb == "POST" and path == "/datasets":
            did = data.get("datasetId")
            if not did or did in self.datasets:
                return 400, {"error": {"message": "datasetId missing or taken"}}
            self.datasets[did] = {"name": f"accounts/{ACCOUNT}/datasets/{did}", "state": "UPLOADING",
                                  "exampleCount": data.get("dataset", {}).get("exampleCount")}
            return 200, self.datasets[did]
        m = re.fullmatch(r"/datasets/([^/:]+):upload", path)
        if verb == "POST" and m:
            ds = self.datasets.get(m.group(1))
            if ds is None or not form or "file" not in form:
                return 400, {"error": {"message": "no such dataset or no file"}}
            self.files[ds["name"]] = form["file"][1]
            ds["state"] = "READY"
            return 200, {}
        if verb == "POST" and path == "/supervisedFineTuningJobs":
            if data.get("baseModel") not in MODELS:
                return 400, {"error": {"message": f"base model {data.get('baseModel')} does not support fine-tuning"}}
            if data.get("dataset") not in self.files:
                return 400, {"error": {"message": "dataset is not READY"}}
            n = sum(1 for line in self.files[data["dataset"]].splitlines() if line.strip())
            if n < 3:
                return 400, {"error": {"message": f"dataset has {n} examples; at least 3 are required"}}
            jid = rid("sftj-")
            job = {"name": f"accounts/{ACCOUNT}/supervisedFineTuningJobs/{jid}", "state": "JOB_STATE_CREATING",
                   "baseModel": data["baseModel"], "dataset": data["dataset"], "epochs": data.get("epochs", 1),
                   "learningRate": 1e-4, "displayName": data.get("displayName"), "evaluationDataset": data.get("evaluationDataset"),
                   "createTime": "2026-12-05T10:00:00Z", "outputModel": f"accounts/{ACCOUNT}/models/{jid}"}
            self.jobs[jid] = job
            if self.faults.create_5xx_after > 0:
                self.faults.create_5xx_after -= 1
                return 500, {"error": {"message": "internal error"}}
            return 200, job
        if verb == "GET" and path == "/supervisedFineTuningJobs":
            return 200, {"supervisedFineTuningJobs": list(self.jobs.values()), "nextPageToken": ""}
        m = re.fullmatch(r"/supervisedFineTuningJobs/([^/:]+)(:cancel)?", path)
        if m:
            job = self.jobs.get(m.group(1))
            if job is None:
                return 404, {"error": {"code": 5, "message": "not found", "status": "NOT_FOUND"}}
            if verb == "GET" and not m.group(2):
                self._advance(job)
                return 200, job
            if verb == "POST" and m.group(2):
                job["state"] = "JOB_STATE_CANCELLED"
                job["completedTime"] = "2026-12-05T10:05:00Z"
                return 200, {}
        return 404, {"error": {"message": f"no route {verb} {path}"}}

    def _advance(self, job: dict) -> None:
        s = job["state"]
        if s == "JOB_STATE_CREATING":
            job["state"] = "JOB_STATE_PENDING"
        elif s == "JOB_STATE_PENDING":
            job["state"] = "JOB_STATE_RUNNING"
            job["jobProgress"] = {"percent": 50, "epoch": 1, "tokensProcessed": 0}
        elif s == "JOB_STATE_RUNNING":
            n, tokens = count_tokens(self.files[job["dataset"]], job["baseModel"], "fireworks")
            job["state"] = "JOB_STATE_COMPLETED"
            job["completedTime"] = "2026-12-05T10:30:00Z"
            job["jobProgress"] = {"percent": 100, "epoch": job["epochs"], "tokensProcessed": tokens * job["epochs"]}
