"""Fireworks over its REST API (``https://api.fireworks.ai/v1``, ``FIREWORKS_API_KEY``, ``FIREWORKS_ACCOUNT_ID``).

Calls (docs.fireworks.ai): ``POST /accounts/{account}/datasets`` then ``POST .../datasets/{id}:upload``
(multipart ``file``); ``POST /accounts/{account}/supervisedFineTuningJobs``, ``GET`` one or the list,
``POST .../supervisedFineTuningJobs/{id}:cancel`` (``firectl supervised-fine-tuning-job cancel``).
Jobs carry ``state`` (JOB_STATE_*) and ``jobProgress``; Fireworks has no event list, so events are
the job's state and progress as they change. Data: OpenAI SFT JSONL unchanged (``weight`` 0/1 too),
3 to 3,000,000 examples. A fine-tuned model is referenced as ``fireworks:accounts/ACCOUNT/models/NAME``.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from tuneterm.core.errors import ConfigError
from tuneterm.core.providers.base import Obj, Provider, RestClient, epoch_seconds, hyper, spec_of

STATES = {"JOB_STATE_CREATING": "validating_files", "JOB_STATE_VALIDATING": "validating_files",
          "JOB_STATE_PENDING": "queued", "JOB_STATE_RUNNING": "running", "JOB_STATE_WRITING_RESULTS": "running",
          "JOB_STATE_COMPLETED": "succeeded", "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLED": "cancelled",
          "JOB_STATE_CANCELLING": "running", "JOB_STATE_EXPIRED": "failed"}


def _job(raw: dict) -> Obj:
    status = STATES.get(str(raw.get("state")), str(raw.get("state")).lower())
    progress = raw.get("jobProgress") or {}
    err = raw.get("status") or {}
    return Obj(id=str(raw["name"]).rsplit("/", 1)[-1], status=status, model=raw.get("baseModel") or "",
               created_at=epoch_seconds(raw.get("createTime")),
               finished_at=epoch_seconds(raw.get("completedTime")) if status in ("succeeded", "failed", "cancelled") else None,
               fine_tuned_model=raw.get("outputModel") if status == "succeeded" else None,
               trained_tokens=progress.get("tokensProcessed") if status == "succeeded" else None,
               training_file=raw.get("dataset"), validation_file=raw.get("evaluationDataset"),
               hyperparameters=hyper(raw.get("epochs"), raw.get("batchSize"), raw.get("learningRate")),
               error=Obj(code=err.get("code"), message=err.get("message") or "", param=None) if status == "failed" else None,
               progress=progress, provider_status=raw.get("state"), raw=raw)


class FireworksClient(RestClient):
    def __init__(self, provider: Provider, url: str) -> None:
        super().__init__(provider, url)
        self.account = os.environ.get("FIREWORKS_ACCOUNT_ID", "").strip()
        if not self.account:
            raise ConfigError("FIREWORKS_ACCOUNT_ID is not set", [("provider", "fireworks")],
                              "export FIREWORKS_ACCOUNT_ID=your-account (firectl's account id)")
        self.seen: dict[str, list[Obj]] = {}

    @property
    def _root(self) -> str:
        return f"/accounts/{self.account}"

    def _upload(self, file: tuple[str, Any], purpose: str = "fine-tune") -> Obj:
        name, fh = file
        data = fh.read()
        dataset_id = "tuneterm-" + secrets.token_hex(6)
        count = sum(1 for line in data.splitlines() if line.strip())
        self.request("POST", f"{self._root}/datasets", f"create dataset for {name}",
                     json={"datasetId": dataset_id, "dataset": {"exampleCount": str(count), "userUploaded": {}}})
        self.request("POST", f"{self._root}/datasets/{dataset_id}:upload", f"upload {name}",
                     files={"file": (name, data)})
        return Obj(id=f"accounts/{self.account}/datasets/{dataset_id}", filename=name, bytes=len(data))

    def _create(self, **request: Any) -> Obj:
        spec = spec_of(request)
        body: dict[str, Any] = {"dataset": spec["training_file"], "baseModel": spec["model"]}
        if spec["n_epochs"] != "auto":
            body["epochs"] = int(spec["n_epochs"])
        if spec["batch_size"] != "auto":
            body["batchSize"] = int(spec["batch_size"])
        if spec["validation_file"]:
            body["evaluationDataset"] = spec["validation_file"]
        if spec["suffix"]:
            body["displayName"] = spec["suffix"]
        return _job(self.request("POST", f"{self._root}/supervisedFineTuningJobs", "create the fine-tuning job", json=body))

    def _retrieve(self, job_id: str) -> Obj:
        job = _job(self.request("GET", f"{self._root}/supervisedFineTuningJobs/{job_id}", f"read job {job_id}"))
        self._note(job)
        return job

    def _note(self, job: Obj) -> None:
        """Record a state or progress change as an event (Fireworks keeps no event list)."""
        events = self.seen.setdefault(job.id, [])
        p = job.progress or {}
        text = f"{job.provider_status}" + (f", {p.get('percent', 0)}% (epoch {p.get('epoch', 0)})" if p else "")
        if not events or events[-1].message != text:
            events.append(Obj(id=f"{job.id}-ev{len(events)}", created_at=job.created_at, level="info",
                              message=text, type="message", data=p))

    def _jobs(self) -> list[Obj]:
        raw = self.request("GET", f"{self._root}/supervisedFineTuningJobs", "list jobs")
        return [_job(r) for r in raw.get("supervisedFineTuningJobs", [])]

    def _events(self, job_id: str) -> list[Obj]:
        self._retrieve(job_id)
        return list(self.seen.get(job_id, []))

    def _cancel(self, job_id: str) -> Obj:
        self.request("POST", f"{self._root}/supervisedFineTuningJobs/{job_id}:cancel", f"cancel {job_id}", json={})
        return self._retrieve(job_id)


class _Fireworks(Provider):
    def client(self, url: str | None = None):
        return FireworksClient(self, self.base_url(url))


PROVIDER = _Fireworks(
    name="fireworks", title="Fireworks", key_env="FIREWORKS_API_KEY", default_url="https://api.fireworks.ai/v1",
    default_model="accounts/fireworks/models/llama-v3p1-8b-instruct", min_examples=3, max_examples=3_000_000,
    ref_prefix="fireworks", chat_default="https://api.fireworks.ai/inference/v1",
    billing="dataset tokens x epochs at a rate by model size (fireworks.ai/pricing); fine-tuned models serve on "
            "deployments billed per GPU-second",
    token_accounting="the model's own tokenizer and chat template (Llama 3: llama-models) where installed, else "
                     "an o200k_base estimate with its band",
    data_format="OpenAI SFT JSONL unchanged (messages, optional weight 0/1); 3 to 3,000,000 examples",
    sdk="REST over httpx2 (FIREWORKS_API_KEY, FIREWORKS_ACCOUNT_ID)",
)
