"""Mistral over its REST API (``https://api.mistral.ai/v1``, ``MISTRAL_API_KEY``).

Calls (Mistral API reference): ``POST /files`` (multipart ``file``, ``purpose=fine-tune``),
``POST /fine_tuning/jobs`` (``training_files[{file_id, weight}]``, ``hyperparameters``, ``suffix``,
``auto_start``; with ``?dry_run=true`` it returns Mistral's own cost, token and duration figures
and creates nothing), ``GET /fine_tuning/jobs[/{id}]`` (a job carries its ``events`` and
``checkpoints``), ``POST /fine_tuning/jobs/{id}/cancel``. Fees: a minimum of $4 per job and $2 per
month of storage per fine-tuned model. Mistral's docs list text fine-tuning as deprecated (seen
2026-12-05). A fine-tuned model is referenced as ``mistral:MODEL``.
"""

from __future__ import annotations

from typing import Any

from tuneterm.core.providers.base import Obj, Provider, RestClient, epoch_seconds, hyper, spec_of

STATES = {"QUEUED": "queued", "STARTED": "validating_files", "VALIDATING": "validating_files",
          "VALIDATED": "queued", "RUNNING": "running", "FAILED_VALIDATION": "failed", "FAILED": "failed",
          "SUCCESS": "succeeded", "CANCELLED": "cancelled", "CANCELLATION_REQUESTED": "running"}


def _job(raw: dict) -> Obj:
    status = STATES.get(str(raw.get("status")), str(raw.get("status")).lower())
    files = raw.get("training_files") or []
    hp = raw.get("hyperparameters") or {}
    return Obj(id=raw["id"], status=status, model=raw.get("model") or "", created_at=epoch_seconds(raw.get("created_at")),
               finished_at=epoch_seconds(raw.get("modified_at")) if status in ("succeeded", "failed", "cancelled") else None,
               fine_tuned_model=raw.get("fine_tuned_model"), trained_tokens=raw.get("trained_tokens"),
               training_file=files[0] if files else None,
               validation_file=(raw.get("validation_files") or [None])[0],
               hyperparameters=hyper(hp.get("epochs"), None, hp.get("learning_rate")),
               error=Obj(code=raw.get("status"), message="; ".join(
                   str((e.get("data") or {}).get("error") or "") for e in raw.get("events") or []).strip("; "),
                   param="training_file" if raw.get("status") == "FAILED_VALIDATION" else None)
               if status == "failed" else None,
               provider_status=raw.get("status"), raw=raw)


class MistralClient(RestClient):
    def _upload(self, file: tuple[str, Any], purpose: str = "fine-tune") -> Obj:
        name, fh = file
        return Obj(**self.request("POST", "/files", f"upload {name}", files={"file": (name, fh)},
                                  data={"purpose": purpose}))

    def _body(self, request: dict) -> dict:
        spec = spec_of(request)
        hp: dict[str, Any] = {}
        if spec["n_epochs"] != "auto":
            hp["epochs"] = float(spec["n_epochs"])
        if spec["lr"] != "auto":
            hp["learning_rate"] = float(spec["lr"]) * 1e-4  # the multiplier of Mistral's default 1e-4
        body: dict[str, Any] = {"model": spec["model"], "training_files": [{"file_id": spec["training_file"], "weight": 1}],
                                "hyperparameters": hp, "auto_start": True}
        if spec["validation_file"]:
            body["validation_files"] = [spec["validation_file"]]
        if spec["suffix"]:
            body["suffix"] = spec["suffix"][:18]
        return body

    def _create(self, **request: Any) -> Obj:
        return _job(self.request("POST", "/fine_tuning/jobs", "create the fine-tuning job", json=self._body(request)))

    def _retrieve(self, job_id: str) -> Obj:
        return _job(self.request("GET", f"/fine_tuning/jobs/{job_id}", f"read job {job_id}"))

    def _jobs(self) -> list[Obj]:
        return [_job(r) for r in self.request("GET", "/fine_tuning/jobs", "list jobs").get("data", [])]

    def _events(self, job_id: str) -> list[Obj]:
        raw = self._retrieve(job_id).raw
        out = []
        for i, e in enumerate(raw.get("events") or []):
            data = e.get("data") or {}
            text = e.get("name", "event") + (f": {data.get('status')}" if data.get("status") else "")
            if data.get("error"):
                text += f" ({data['error']})"
            out.append(Obj(id=f"{job_id}-ev{i}", created_at=epoch_seconds(e.get("created_at")), level="info",
                           message=text, type="message", data=data))
        for c in raw.get("checkpoints") or []:
            m = c.get("metrics") or {}
            out.append(Obj(id=f"{job_id}-ck{c.get('step_number')}", created_at=epoch_seconds(c.get("created_at")),
                           level="info", type="metrics", data=m,
                           message=f"Step {c.get('step_number')}: training loss={m.get('train_loss')}"
                                   + (f", validation loss={m['valid_loss']}" if m.get("valid_loss") is not None else "")))
        return sorted(out, key=lambda e: e.created_at or 0)

    def _cancel(self, job_id: str) -> Obj:
        return _job(self.request("POST", f"/fine_tuning/jobs/{job_id}/cancel", f"cancel {job_id}"))

    def estimate(self, request: dict) -> dict | None:
        raw = self.request("POST", "/fine_tuning/jobs", "dry-run the job (Mistral's estimate)",
                           params={"dry_run": "true"}, json=self._body(request))
        return {"cost_usd": raw.get("cost"), "currency": raw.get("cost_currency"), "train_tokens": raw.get("train_tokens"),
                "data_tokens": raw.get("data_tokens"), "duration_s": raw.get("expected_duration_seconds"), "raw": raw}


class _Mistral(Provider):
    def client(self, url: str | None = None):
        return MistralClient(self, self.base_url(url))


PROVIDER = _Mistral(
    name="mistral", title="Mistral", key_env="MISTRAL_API_KEY", default_url="https://api.mistral.ai/v1",
    default_model="open-mistral-7b", min_examples=1, max_examples=None, ref_prefix="mistral",
    chat_default="https://api.mistral.ai/v1",
    billing="training tokens x epochs; a minimum fee of $4 per job; $2 per month of storage per fine-tuned model "
            "(Mistral fine-tuning docs)",
    token_accounting="the tokenizers mistral-common ships (tekken, SentencePiece v3), whole conversation in the "
                     "fine-tuning template; Mistral's dry_run reports its own train_tokens",
    data_format="JSONL messages (system, user, assistant, tool); 512 MB per file",
    sdk="REST over httpx2 (MISTRAL_API_KEY)", roles=("system", "user", "assistant", "tool"), server_estimate=True,
)
