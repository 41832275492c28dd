"""Submitting and following OpenAI fine-tuning jobs with the official ``openai`` SDK.

- The API key comes from ``OPENAI_API_KEY`` only. It is handed to the SDK and nowhere else:
  never logged, stored in the DB or a job folder, or shown in an error (:func:`redact`).
- The endpoint: ``--base-url``, else ``OPENAI_BASE_URL``, else the ``openai_base_url`` setting,
  else OpenAI.
- ``jobs.create`` runs with the SDK's retries turned off and a ``tuneterm_submit`` metadata
  tag: after a 5xx or a timeout, :func:`create_job` looks the tag up with
  ``jobs.list(metadata=...)`` before trying again, so a network fault never bills twice.
- Every job tuneterm sees is recorded in the workspace DB table ``openai_jobs``.
- SDK errors become :class:`~tuneterm.core.errors.OpenAIError` with what happened and what to do
  (:func:`explain`).

``openai`` is imported inside functions only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from tuneterm.core.errors import ConfigError, JobError, OpenAIError

TERMINAL = ("succeeded", "failed", "cancelled")
SUBMIT_TAG = "tuneterm_submit"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


# --- the client --------------------------------------------------------------------------------


def base_url(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("OPENAI_BASE_URL"):
        return os.environ["OPENAI_BASE_URL"]
    try:
        from tuneterm.core.settings import get_settings

        configured = get_settings().openai_base_url
    except Exception:  # settings problems are reported elsewhere; fall back to OpenAI
        configured = None
    return configured or DEFAULT_BASE_URL


def safe_url(url: str) -> str:
    """``url`` without user:password@ (safe to print and store)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts)


def _api_key() -> str:
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise ConfigError(
            "OPENAI_API_KEY is not set",
            [("needed by", "tuneterm openai (submit, jobs, status, events, wait, cancel, models)")],
            "export OPENAI_API_KEY=... (create a key at https://platform.openai.com/api-keys); "
            "tuneterm never stores it",
        )
    return key


def redact(text: str) -> str:
    """``text`` without the API key or anything shaped like one."""
    for var in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        key = os.environ.get(var, "").strip()
        if key and len(key) >= 4:
            text = text.replace(key, "[redacted]")
    text = re.sub(r"\bsk-[A-Za-z0-9_\-*]{3,}", "sk-[redacted]", text)
    return re.sub(r"(Bearer\s+)\S+", r"\1[redacted]", text)


def make_client(url: str | None = None, max_retries: int = 2, timeout: float = 60.0):
    from openai import OpenAI  # deferred: ~0.3 s import, only for the openai commands

    return OpenAI(api_key=_api_key(), base_url=base_url(url), max_retries=max_retries, timeout=timeout)


# --- errors ------------------------------------------------------------------------------------


def _server_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        msg = err.get("message") if isinstance(err, dict) else None
        if msg:
            return redact(str(msg))
    return redact(str(getattr(exc, "message", exc)))


def _retry_after(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return f"{float(ms) / 1000:g}"
        except ValueError:
            pass
    return headers.get("retry-after")


def _is_azure(url: str | None) -> bool:
    """True when ``url`` is the Azure OpenAI endpoint in use (the same SDK, Azure's accounts)."""
    return bool(url) and url in {os.environ.get("AZURE_OPENAI_ENDPOINT"), os.environ.get("TUNETERM_AZURE_BASE_URL")}


def _explain_azure(exc: Exception, facts: list) -> OpenAIError | None:
    import openai

    if isinstance(exc, openai.AuthenticationError):
        return OpenAIError("Azure OpenAI rejected the API key (401)", facts,
                           "check AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT (the key of that resource)")
    if isinstance(exc, openai.PermissionDeniedError):
        return OpenAIError("Azure OpenAI refused fine-tuning for this resource (403)", facts,
                           "training of gpt-4o/gpt-4.1 fine-tunes continues only for existing customers (until no "
                           "earlier than 2027-04-01 / 2027-04-14); check the resource's region and quota")
    if isinstance(exc, openai.NotFoundError):
        return OpenAIError("Azure OpenAI does not know this object or API version (404)", facts,
                           "check the id and OPENAI_API_VERSION; `tuneterm hosted jobs --provider azure` lists jobs")
    return None


def explain(exc: Exception, action: str, url: str | None = None) -> OpenAIError:
    """An SDK exception as an OpenAIError that says what happened and what to do."""
    import openai

    where = safe_url(url or base_url())
    facts = [("action", action), ("endpoint", where)]
    message = _server_message(exc)
    status = getattr(exc, "status_code", None)
    if status is not None:
        facts.append(("status", str(status)))
    if message:
        facts.append(("server said", message))
    code = getattr(exc, "code", None)
    if code:
        facts.append(("code", str(code)))
    if _is_azure(url):
        azure = _explain_azure(exc, facts)
        if azure is not None:
            return azure
    if isinstance(exc, openai.AuthenticationError):
        return OpenAIError("OpenAI rejected the API key (401)", facts,
                           "check OPENAI_API_KEY: it may be mistyped, revoked or for another project; "
                           "create one at https://platform.openai.com/api-keys")
    if isinstance(exc, openai.PermissionDeniedError):
        return OpenAIError(
            "fine-tuning is unavailable for this organization (403)", facts,
            "OpenAI is winding down self-serve fine-tuning: since 2026-05-07 orgs that never fine-tuned, and "
            "since 2026-07-02 orgs without fine-tuned-model use in the past 60 days, cannot create jobs; from "
            "2027-01-06 nobody can. Existing fine-tuned models serve until their base shuts down. "
            "Train locally instead: `tuneterm train`")
    if isinstance(exc, openai.RateLimitError):
        wait = _retry_after(exc)
        if wait:
            facts.append(("retry after", f"{wait} s"))
        if code == "insufficient_quota":
            return OpenAIError("the OpenAI account is out of quota (429)", facts,
                               "add credit or raise the limit at https://platform.openai.com/settings/organization/billing")
        return OpenAIError("OpenAI is rate-limiting these requests (429)", facts,
                           f"wait {wait or 'a few'} seconds and run the command again")
    if isinstance(exc, openai.InternalServerError):
        return OpenAIError("OpenAI had a server error", facts,
                           "try again in a minute; `tuneterm openai jobs` shows whether a job was created")
    if isinstance(exc, openai.APITimeoutError):
        return OpenAIError("the request to OpenAI timed out", facts,
                           "check the network and try again; `tuneterm openai jobs` shows whether a job was created")
    if isinstance(exc, openai.APIConnectionError):
        return OpenAIError("cannot reach the OpenAI endpoint", facts,
                           "check the network, OPENAI_BASE_URL or --base-url")
    if isinstance(exc, openai.NotFoundError):
        return OpenAIError("OpenAI does not know this object (404)", facts,
                           "check the id; `tuneterm openai jobs` lists your jobs")
    if isinstance(exc, openai.APIStatusError):
        param = getattr(exc, "param", None)
        if param:
            facts.append(("parameter", str(param)))
        return OpenAIError(f"OpenAI refused the request ({status})", facts,
                           "fix the parameter named above and submit again")
    return OpenAIError("the OpenAI request failed", facts + [("problem", redact(str(exc)))])


def call(action: str, fn: Callable[[], Any], url: str | None = None) -> Any:
    """Run one SDK call, turning its exceptions into OpenAIError."""
    import openai

    try:
        return fn()
    except openai.OpenAIError as exc:
        raise explain(exc, action, url) from None


# --- the workspace record --------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _dump(obj: Any) -> dict:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return dict(obj)


def record_job(job: Any, url: str, dataset: str | None = None, estimated_cost: float | None = None,
               provider: str = "openai") -> None:
    """Insert or update one job in ``openai_jobs`` (the raw JSON holds no secret: it is the API's object).

    The table keeps every hosted provider's jobs; the provider is stored in the raw JSON (``_provider``).
    """
    from tuneterm.core import db

    raw = _dump(job)
    raw["_provider"] = provider
    now = _now()
    with db.connect() as conn:
        conn.execute(
            """INSERT INTO openai_jobs (id, base_url, model, dataset, training_file, validation_file, status,
                   fine_tuned_model, estimated_cost_usd, trained_tokens, created_at, updated_at, raw)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET status=excluded.status, fine_tuned_model=excluded.fine_tuned_model,
                   trained_tokens=excluded.trained_tokens, updated_at=excluded.updated_at, raw=excluded.raw,
                   dataset=COALESCE(excluded.dataset, openai_jobs.dataset),
                   estimated_cost_usd=COALESCE(excluded.estimated_cost_usd, openai_jobs.estimated_cost_usd)""",
            (raw["id"], safe_url(url), raw.get("model") or "", dataset, raw.get("training_file"),
             raw.get("validation_file"), raw.get("status") or "unknown", raw.get("fine_tuned_model"),
             estimated_cost, raw.get("trained_tokens"),
             datetime.fromtimestamp(raw.get("created_at") or time.time(), timezone.utc).isoformat(timespec="seconds"),
             now, json.dumps(raw)),
        )


def local_jobs() -> list[dict]:
    from tuneterm.core import db

    with db.connect() as conn:
        rows = conn.execute("SELECT * FROM openai_jobs ORDER BY created_at DESC").fetchall()
    return [_with_provider(dict(r)) for r in rows]


def _with_provider(row: dict) -> dict:
    try:
        row["provider"] = json.loads(row.get("raw") or "{}").get("_provider", "openai")
    except ValueError:
        row["provider"] = "openai"
    return row


def local_job(job_id: str) -> dict | None:
    from tuneterm.core import db

    with db.connect() as conn:
        row = conn.execute("SELECT * FROM openai_jobs WHERE id = ?", (job_id,)).fetchone()
    return _with_provider(dict(row)) if row else None


# --- submission ----------------------------------------------------------------------------------


def build_request(model: str, training_file: str, validation_file: str | None = None, suffix: str | None = None,
                  n_epochs: int | str | None = None, batch_size: int | str | None = None,
                  lr_multiplier: float | str | None = None, seed: int | None = None, method: str = "supervised",
                  beta: float | str | None = None, tag: str | None = None) -> dict:
    """The ``jobs.create`` arguments; checks the limits of reference §8 before anything is sent."""
    if suffix is not None and not 1 <= len(suffix) <= 64:
        raise ConfigError("--suffix must be 1 to 64 characters", [("suffix", suffix)])
    if seed is not None and not 0 <= seed <= 2_147_483_647:
        raise ConfigError("--seed must be 0 to 2147483647", [("seed", str(seed))])
    hp: dict[str, Any] = {}
    for name, value, lo, hi in (("n_epochs", n_epochs, 1, 50), ("batch_size", batch_size, 1, 256)):
        if value in (None, "auto"):
            hp[name] = "auto"
        else:
            if not lo <= int(value) <= hi:
                raise ConfigError(f"{name} must be {lo}-{hi} or auto", [(name, str(value))])
            hp[name] = int(value)
    if lr_multiplier in (None, "auto"):
        hp["learning_rate_multiplier"] = "auto"
    else:
        if float(lr_multiplier) <= 0:
            raise ConfigError("--lr-multiplier must be > 0", [("lr-multiplier", str(lr_multiplier))])
        hp["learning_rate_multiplier"] = float(lr_multiplier)
    if method == "dpo":
        hp["beta"] = "auto" if beta in (None, "auto") else float(beta)
    request: dict[str, Any] = {
        "model": model, "training_file": training_file,
        "method": {"type": method, method: {"hyperparameters": hp}},
        "metadata": {SUBMIT_TAG: tag or secrets.token_hex(8)},
    }
    if validation_file:
        request["validation_file"] = validation_file
    if suffix:
        request["suffix"] = suffix
    if seed is not None:
        request["seed"] = seed
    return request


def upload(client, path: Path, url: str) -> Any:
    with open(path, "rb") as fh:
        return call(f"upload {path.name}", lambda: client.files.create(file=(path.name, fh), purpose="fine-tune"), url)


def find_tagged(client, tag: str, url: str) -> Any | None:
    page = call("look for the job just created", lambda: client.fine_tuning.jobs.list(metadata={SUBMIT_TAG: tag}, limit=10), url)
    for job in page.data:
        if (job.metadata or {}).get(SUBMIT_TAG) == tag:
            return job
    return None


def create_job(client, request: dict, url: str, attempts: int = 3, backoff: float = 1.0,
               sleep: Callable[[float], None] = time.sleep, say: Callable[[str], None] = lambda s: None) -> Any:
    """``jobs.create`` without SDK retries; after a 5xx or timeout, adopt the tagged job if it exists."""
    import openai

    once = client.with_options(max_retries=0)
    tag = request["metadata"][SUBMIT_TAG]
    for attempt in range(1, attempts + 1):
        try:
            return once.fine_tuning.jobs.create(**request)
        except (openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError) as exc:
            say(f"create failed ({type(exc).__name__}); checking whether the job exists before retrying")
            existing = find_tagged(client, tag, url)
            if existing is not None:
                say(f"the job was created despite the error: {existing.id}")
                return existing
            if attempt == attempts:
                raise explain(exc, "create the fine-tuning job", url) from None
            sleep(backoff * 2 ** (attempt - 1))
        except openai.OpenAIError as exc:
            raise explain(exc, "create the fine-tuning job", url) from None
    raise AssertionError("unreachable")  # pragma: no cover


def check_model_open(model: str, on=None, provider: str = "openai") -> tuple[Any, list[str]]:
    """The price row of ``model``; raises when the model is past shutdown or new jobs have ended."""
    from tuneterm.core import cost
    from tuneterm.core.prices import load_prices

    table = load_prices(None, provider)
    row = table.get(model)
    warnings, blocked = cost.shutdown_warnings(row, table, on)
    if provider != "openai":
        if blocked:
            raise OpenAIError(f"{provider} no longer trains or serves {row.id}", [("model", model)] +
                              [("dates", w) for w in warnings],
                              "pick another model (`tuneterm cost DATASET --compare` shows the dates)")
        return row, warnings
    if cost.is_shut_down(row, on):
        raise OpenAIError(f"{row.id} is past its shutdown date", [("model", model), ("shutdown", str(row.shutdown_date))],
                          "pick a model that still serves (`tuneterm cost DATASET --compare` shows the dates)")
    if cost.new_jobs_closed(table, on):
        raise OpenAIError("OpenAI no longer accepts new fine-tuning jobs",
                          [("since", str(table.no_new_jobs_after)), ("model", model)],
                          "existing fine-tuned models keep serving until their base shuts down; "
                          "train locally with `tuneterm train`")
    return row, warnings


def check_server_shutdown(client, model: str, url: str, on=None) -> str | None:
    """Ask the server for the base model's ``shutdown_date`` (in the spec since 2026-08-14).

    Raises when the date has passed; returns a warning line when one is announced; None otherwise
    (also when the server does not know the field or the model).
    """
    import datetime as dt

    import openai

    from tuneterm.core.openai_tokens import base_model
    from tuneterm.core.prices import today

    base = base_model(model)
    try:
        info = client.models.retrieve(base)
    except openai.NotFoundError:
        return None
    except openai.OpenAIError as exc:
        raise explain(exc, f"read model {base}", url) from None
    raw = getattr(info, "shutdown_date", None) or (getattr(info, "model_extra", None) or {}).get("shutdown_date")
    if not raw:
        return None
    try:
        date = dt.date.fromisoformat(str(raw)[:10])
    except ValueError:
        return None
    if date <= (on or today()):
        raise OpenAIError(f"{base} is past its shutdown date", [("model", model), ("shutdown", str(date)),
                          ("according to", safe_url(url))],
                          "pick a model that still serves (`tuneterm cost DATASET --compare` shows the dates)")
    return f"the server says {base} shuts down on {date}"


# --- following a job -----------------------------------------------------------------------------


def retrieve(client, job_id: str, url: str) -> Any:
    return call(f"read job {job_id}", lambda: client.fine_tuning.jobs.retrieve(job_id), url)


def new_events(client, job_id: str, last_seen: str | None, url: str, page_size: int = 100) -> list:
    """Events after ``last_seen``, oldest first (the API lists newest first; page with ``after``)."""
    collected: list = []
    after = None
    while True:
        kwargs = {"limit": page_size}
        if after:
            kwargs["after"] = after
        page = call(f"read events of {job_id}", lambda: client.fine_tuning.jobs.list_events(job_id, **kwargs), url)
        stop = False
        for event in page.data:
            if event.id == last_seen:
                stop = True
                break
            collected.append(event)
        if stop or not page.has_more or not page.data:
            break
        after = page.data[-1].id
    collected.reverse()
    return collected


def follow(client, job_id: str, url: str, interval: float = 2.0, max_interval: float = 30.0,
           sleep: Callable[[float], None] = time.sleep, events: bool = True) -> Iterator[tuple[str, Any]]:
    """Yield ("event", e) and ("status", job) until the job ends; polls with backoff.

    The interval grows x1.5 up to ``max_interval`` while nothing changes and resets on news.
    A paused job is reported once and followed further (it may be resumed).
    """
    last_seen = None
    last_status = None
    wait = interval
    while True:
        job = retrieve(client, job_id, url)
        news = False
        if job.status != last_status:
            last_status = job.status
            news = True
            yield "status", job
        if events:
            fresh = new_events(client, job_id, last_seen, url)
            if fresh:
                last_seen = fresh[-1].id
                news = True
                for event in fresh:
                    yield "event", event
        if job.status in TERMINAL:
            return
        wait = interval if news else min(max_interval, wait * 1.5)
        sleep(wait)


def failure(job: Any) -> JobError:
    err = job.error
    code = getattr(err, "code", None) if err else None
    message = getattr(err, "message", None) if err else None
    param = getattr(err, "param", None) if err else None
    facts = [("job", job.id), ("model", job.model), ("code", code or "unknown"), ("message", redact(message or "none given"))]
    if param:
        facts.append(("file", str(param)))
    hint = "read the events: `tuneterm openai events " + job.id + "`"
    if code == "invalid_training_file" or param in ("training_file", "validation_file"):
        hint = "fix the file (`tuneterm data validate` names the line) and submit again"
    if message and "moderation" in message.lower():
        hint = ("the fine-tuned model failed OpenAI's safety evaluation; pre-filter the data with the "
                "Moderation API and submit again")
    return JobError("the fine-tuning job failed", facts, hint)


def actual_cost(job: Any, provider: str = "openai") -> float | None:
    """``trained_tokens`` x the training price (reconciles the estimate after success)."""
    if not getattr(job, "trained_tokens", None):
        return None
    from tuneterm.core.prices import load_prices

    row = load_prices(None, provider).find(job.model)
    if row is None or row.training is None:
        return None
    return round(job.trained_tokens * row.training / 1e6, 6)


def fine_tuned_models(client, url: str) -> list:
    page = call("list models", lambda: client.models.list(), url)
    if getattr(client, "provider", None) is not None:  # a hosted provider's client lists only fine-tunes
        return list(page.data)
    return [m for m in page.data if m.id.startswith("ft:")]
