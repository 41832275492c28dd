"""Together AI over its REST API (``https://api.together.xyz/v1``, ``TOGETHER_API_KEY``).

Calls (docs.together.ai): ``POST /files/upload`` (multipart ``file``, ``file_name``, ``purpose=fine-tune``),
``POST /fine-tunes``, ``GET /fine-tunes[/{id}]``, ``GET /fine-tunes/{id}/events``,
``POST /fine-tunes/{id}/cancel`` and ``POST /fine-tunes/estimate-price`` (Together's own estimate:
price, token counts, ``allowed_to_proceed``). Job states pending, queued, running, compressing,
uploading, cancel_requested, cancelled, error, user_error, completed map onto OpenAI's.
A fine-tuned model is referenced as ``together:OUTPUT_NAME``.
"""

from __future__ import annotations

from typing import Any

from tuneterm.core.providers.base import Obj, Provider, RestClient, epoch_seconds, hyper, spec_of

STATES = {"pending": "queued", "queued": "queued", "running": "running", "compressing": "running",
          "uploading": "running", "cancel_requested": "running", "cancelled": "cancelled", "error": "failed",
          "user_error": "failed", "completed": "succeeded"}


def _job(raw: dict) -> Obj:
    status = STATES.get(str(raw.get("status")), str(raw.get("status")))
    return Obj(id=raw["id"], status=status, model=raw.get("model") or "", created_at=epoch_seconds(raw.get("created_at")),
               finished_at=epoch_seconds(raw.get("updated_at")) if status in ("succeeded", "failed", "cancelled") else None,
               fine_tuned_model=raw.get("output_name") if status == "succeeded" else None,
               trained_tokens=raw.get("trained_tokens"), training_file=raw.get("training_file"),
               validation_file=raw.get("validation_file") or None,
               hyperparameters=hyper(raw.get("n_epochs"), raw.get("batch_size"), raw.get("learning_rate")),
               error=Obj(code=raw.get("status"), message=raw.get("error") or "", param=None)
               if status == "failed" else None,
               provider_status=raw.get("status"), raw=raw)


class TogetherClient(RestClient):
    def _upload(self, file: tuple[str, Any], purpose: str = "fine-tune") -> Obj:
        name, fh = file
        raw = self.request("POST", "/files/upload", f"upload {name}", files={"file": (name, fh)},
                           data={"file_name": name, "purpose": purpose})
        return Obj(**raw)

    def _body(self, request: dict) -> dict:
        spec = spec_of(request)
        body: dict[str, Any] = {"model": spec["model"], "training_file": spec["training_file"],
                                "training_method": {"method": "dpo" if spec["method"] == "dpo" else "sft"},
                                "training_type": {"type": "Lora"}}
        if spec["n_epochs"] != "auto":
            body["n_epochs"] = int(spec["n_epochs"])
        if spec["batch_size"] != "auto":
            body["batch_size"] = int(spec["batch_size"])
        if spec["validation_file"]:
            body["validation_file"] = spec["validation_file"]
            body["n_evals"] = 1
        if spec["suffix"]:
            body["suffix"] = spec["suffix"]
        return body

    def _create(self, **request: Any) -> Obj:
        return _job(self.request("POST", "/fine-tunes", "create the fine-tuning job", json=self._body(request)))

    def _retrieve(self, job_id: str) -> Obj:
        return _job(self.request("GET", f"/fine-tunes/{job_id}", f"read job {job_id}"))

    def _jobs(self) -> list[Obj]:
        return [_job(r) for r in self.request("GET", "/fine-tunes", "list jobs").get("data", [])]

    def _events(self, job_id: str) -> list[Obj]:
        rows = self.request("GET", f"/fine-tunes/{job_id}/events", f"read events of {job_id}").get("data", [])
        return [Obj(id=f"{job_id}-ev{i}", created_at=epoch_seconds(r.get("created_at")), level=r.get("level") or "info",
                    message=r.get("message", ""), type=r.get("type"), data=r) for i, r in enumerate(rows)]

    def _cancel(self, job_id: str) -> Obj:
        return _job(self.request("POST", f"/fine-tunes/{job_id}/cancel", f"cancel {job_id}"))

    def estimate(self, request: dict) -> dict | None:
        body = self._body(request)
        raw = self.request("POST", "/fine-tunes/estimate-price", "ask Together for its estimate", json=body)
        return {"cost_usd": raw.get("estimated_total_price"), "train_tokens": raw.get("estimated_train_token_count"),
                "eval_tokens": raw.get("estimated_eval_token_count"), "allowed": raw.get("allowed_to_proceed"),
                "raw": raw}


class _Together(Provider):
    def client(self, url: str | None = None):
        return TogetherClient(self, self.base_url(url))


PROVIDER = _Together(
    name="together", title="Together AI", key_env="TOGETHER_API_KEY", default_url="https://api.together.xyz/v1",
    default_model="meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", min_examples=1, max_examples=None,
    ref_prefix="together", chat_default="https://api.together.xyz/v1",
    billing="(n_epochs x training tokens) + (n_evals x validation tokens) x a rate by model-size bracket; no "
            "minimum; without packing each example is billed at max_seq_length; cancelled jobs pay the steps "
            "completed (docs.together.ai fine-tuning pricing and FAQ)",
    token_accounting="the model's own tokenizer and chat template (Llama 3: llama-models) where installed, else "
                     "an o200k_base estimate with its band; Together's estimate endpoint reports its own count",
    data_format="JSONL: messages (optional system first, then user/assistant alternating), prompt/completion, "
                "text, or OpenAI's DPO pair shape",
    sdk="REST over httpx2 (TOGETHER_API_KEY)", roles=("system", "user", "assistant"), strict_order=True,
    server_estimate=True,
)
