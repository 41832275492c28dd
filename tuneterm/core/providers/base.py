"""What every hosted provider declares, and the REST client the non-OpenAI ones share.

:class:`Provider` holds the declarations; :class:`RestClient` is an OpenAI-SDK-shaped facade over a
provider's own REST API (``files.create``, ``fine_tuning.jobs.*``, ``models.list``), built on the
HTTP client the ``openai`` SDK already brings (``httpx2``), so :mod:`tuneterm.core.openai_jobs` and
the ``hosted`` command drive every provider the same way. Keys come from the environment only and
are redacted from every message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuneterm.core.errors import ConfigError, OpenAIError

TERMINAL = ("succeeded", "failed", "cancelled")


class HostedError(OpenAIError):
    """A hosted provider refused or failed a request (same exit code as OpenAI's errors)."""


class Obj:
    """An API object with attributes, like the SDK's models (``model_dump`` included)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:  # absent optional fields read as None, as in the SDK
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def model_dump(self, mode: str = "json") -> dict:
        return {k: v.model_dump() if isinstance(v, Obj) else v for k, v in self.__dict__.items()}


def epoch_seconds(value: Any) -> int | None:
    """An API timestamp (epoch seconds or ISO 8601) as epoch seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


@dataclass(frozen=True)
class Provider:
    name: str
    title: str
    key_env: str  # the SDK's own variable for the API key
    default_url: str
    default_model: str
    min_examples: int
    max_examples: int | None
    ref_prefix: str  # chat/eval reference of a fine-tuned model: PREFIX:MODEL
    billing: str  # the billing rule, with its source
    token_accounting: str  # what is counted and billed per example, with its source
    data_format: str
    sdk: str  # how tuneterm talks to it
    chat_default: str = ""  # the OpenAI-compatible chat completions endpoint of its models
    roles: tuple[str, ...] = ("system", "user", "assistant", "tool", "function")
    strict_order: bool = False  # Together: system?, then user/assistant alternating from user
    server_estimate: bool = False

    @property
    def url_env(self) -> str:
        return f"TUNETERM_{self.name.upper()}_BASE_URL"

    def table(self, override: Any = None):
        from tuneterm.core.prices import load_prices

        return load_prices(override, self.name)

    def api_key(self) -> str:
        key = os.environ.get(self.key_env, "").strip()
        if not key:
            raise ConfigError(f"{self.key_env} is not set", [("provider", self.name)],
                              f"export {self.key_env}=... ; tuneterm reads it from the environment and never stores it")
        return key

    def base_url(self, explicit: str | None = None) -> str:
        return explicit or os.environ.get(self.url_env) or self.default_url

    def chat_url(self) -> str:
        """Where ``PROVIDER:MODEL`` references chat (``TUNETERM_<PROVIDER>_CHAT_URL`` overrides)."""
        return os.environ.get(f"TUNETERM_{self.name.upper()}_CHAT_URL") or self.chat_default

    def model_ref(self, model: str) -> str:
        return f"{self.ref_prefix}:{model}"

    def client(self, url: str | None = None):
        raise NotImplementedError

    # --- data rules ----------------------------------------------------------------------------

    def check_example(self, example: Any) -> list[tuple[str, str]]:
        """(field, problem) for one training example under this provider's data rules."""
        if not isinstance(example, dict):
            return [("line", "not a JSON object")]
        if isinstance(example.get("input"), dict):
            if not any(k in example for k in ("preferred_output", "preferred_completion")):
                return [("preferred_output", "a preference pair needs preferred_output and non_preferred_output")]
            return []
        msgs = example.get("messages")
        if not isinstance(msgs, list) or not msgs:
            if self.name == "together" and (isinstance(example.get("text"), str) or "prompt" in example):
                return []
            return [("messages", "missing or empty")]
        problems: list[tuple[str, str]] = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                problems.append((f"messages[{i}]", "not an object"))
                continue
            if m.get("role") not in self.roles:
                problems.append((f"messages[{i}].role", f"{m.get('role')!r} is not one of {', '.join(self.roles)}"))
            if "weight" in m and m.get("weight") not in (0, 1):
                problems.append((f"messages[{i}].weight", "must be 0 or 1"))
        if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs):
            problems.append(("messages", "no assistant message"))
        if self.strict_order and not problems:
            roles = [m.get("role") for m in msgs]
            body = roles[1:] if roles[0] == "system" else roles
            expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
            if body != expected:
                problems.append(("messages", "roles must be: an optional system message, then user and assistant "
                                             "alternating, starting with user (got " + " > ".join(map(str, roles)) + ")"))
        return problems

    def check_file(self, path: Path) -> tuple[int, list[tuple[int, str, str]]]:
        """(examples, [(line, field, problem)]) of a training file under this provider's rules."""
        from tuneterm.core.cost import iter_jsonl

        invalid: list[int] = []
        problems: list[tuple[int, str, str]] = []
        n = 0
        for lineno, example in iter_jsonl(Path(path), invalid):
            n += 1
            problems += [(lineno, f, p) for f, p in self.check_example(example)]
        problems += [(line, "line", "not valid JSON") for line in invalid]
        if n < self.min_examples:
            problems.append((0, "file", f"{n} examples; {self.title} needs at least {self.min_examples}"))
        if self.max_examples is not None and n > self.max_examples:
            problems.append((0, "file", f"{n} examples; {self.title} accepts at most {self.max_examples:,}"))
        return n, sorted(problems)


# --- the REST facade -------------------------------------------------------------------------------


def redact(text: str, key: str | None) -> str:
    if key and len(key) >= 4:
        text = text.replace(key, "[redacted]")
    return re.sub(r"(Bearer\s+)\S+", r"\1[redacted]", text)


class _Section:
    def __init__(self, **methods: Any) -> None:
        self.__dict__.update(methods)


class RestClient:
    """An OpenAI-SDK-shaped client over one provider's REST API (see the provider modules)."""

    def __init__(self, provider: Provider, url: str, timeout: float = 60.0) -> None:
        import httpx2  # deferred: comes with the openai SDK

        self.provider = provider
        self.url = url.rstrip("/")
        self._key = provider.api_key()
        self._http = httpx2.Client(base_url=self.url, timeout=timeout,
                                   headers={"Authorization": f"Bearer {self._key}"})
        self.files = _Section(create=self._upload)
        jobs = _Section(create=self._create_once, retrieve=self._retrieve, list=self._list, cancel=self._cancel,
                        list_events=self._list_events)
        self.fine_tuning = _Section(jobs=jobs)
        self.models = _Section(list=self._models)

    def with_options(self, **_: Any) -> "RestClient":
        return self  # no retries here: creates are never retried blindly

    # -- HTTP --
    def request(self, method: str, path: str, action: str, **kwargs: Any) -> Any:
        import httpx2

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx2.TimeoutException as exc:
            raise self._error("the request timed out", action, None, str(exc), transient=True) from None
        except httpx2.HTTPError as exc:
            raise self._error(f"cannot reach the {self.provider.title} endpoint", action, None, str(exc),
                              transient=True) from None
        if response.status_code >= 400:
            raise self._status_error(response, action)
        return response.json() if response.content else {}

    def _status_error(self, response: Any, action: str) -> HostedError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:300]}
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        message = str(err.get("message") or err.get("detail") or body) if isinstance(err, dict) else str(err)
        env = self.provider.key_env
        titles = {401: (f"{self.provider.title} rejected the API key (401)", f"check {env}"),
                  403: (f"{self.provider.title} refused: no permission for this (403)",
                        "check the account's access to fine-tuning"),
                  404: (f"{self.provider.title} does not know this object (404)",
                        f"check the id; `tuneterm hosted jobs --provider {self.provider.name}` lists your jobs"),
                  429: (f"{self.provider.title} is rate-limiting these requests (429)",
                        f"wait {response.headers.get('retry-after') or 'a few'} seconds and run the command again")}
        title, hint = titles.get(status, (f"{self.provider.title} refused the request ({status})",
                                          "fix the parameter named above and submit again"))
        if status >= 500:
            title, hint = (f"{self.provider.title} had a server error ({status})",
                           f"try again later; `tuneterm hosted jobs --provider {self.provider.name}` shows whether "
                           "a job was created")
        exc = self._error(title, action, status, message, hint=hint, transient=status >= 500)
        return exc

    def _error(self, title: str, action: str, status: int | None, message: str, hint: str = "",
               transient: bool = False) -> HostedError:
        from tuneterm.core.openai_jobs import safe_url

        facts = [("provider", self.provider.name), ("action", action), ("endpoint", safe_url(self.url))]
        if status is not None:
            facts.append(("status", str(status)))
        facts.append(("server said", redact(message, self._key)[:500]))
        err = HostedError(title, facts, hint or f"check the network or {self.provider.url_env} / --base-url")
        err.transient = transient  # type: ignore[attr-defined]
        return err

    # -- the SDK shape, filled in by each provider --
    def _upload(self, file: tuple[str, Any], purpose: str = "fine-tune") -> Obj:
        raise NotImplementedError

    def _create(self, **request: Any) -> Obj:
        raise NotImplementedError

    def _retrieve(self, job_id: str) -> Obj:
        raise NotImplementedError

    def _jobs(self) -> list[Obj]:
        raise NotImplementedError

    def _events(self, job_id: str) -> list[Obj]:
        """Events oldest first."""
        raise NotImplementedError

    def _cancel(self, job_id: str) -> Obj:
        raise NotImplementedError

    def _models(self) -> Obj:
        done = [j for j in self._jobs() if j.status == "succeeded" and j.fine_tuned_model]
        return Obj(data=[Obj(id=j.fine_tuned_model, created=j.finished_at or j.created_at,
                             owned_by=self.provider.name) for j in done])

    def estimate(self, request: dict) -> dict | None:
        """The provider's own estimate of a job (Together, Mistral), or None."""
        return None

    # -- shared behaviour --
    def _create_once(self, **request: Any) -> Obj:
        """Create exactly one job: after a 5xx or timeout, adopt a job on the same uploaded file."""
        try:
            return self._create(**request)
        except HostedError as exc:
            if not getattr(exc, "transient", False):
                raise
            for job in self._jobs():
                if job.training_file == request["training_file"]:
                    return job
            raise

    def _list(self, limit: int = 20, after: str | None = None, metadata: dict | None = None) -> Obj:
        jobs = sorted(self._jobs(), key=lambda j: j.created_at or 0, reverse=True)
        return _page(jobs, after, limit)

    def _list_events(self, job_id: str, limit: int = 20, after: str | None = None) -> Obj:
        return _page(list(reversed(self._events(job_id))), after, limit)

    def upload_path(self, path: Path) -> Obj:
        with open(path, "rb") as fh:
            return self._upload(file=(path.name, fh), purpose="fine-tune")


def _page(items: list, after: str | None, limit: int) -> Obj:
    start = 0
    if after:
        ids = [i.id for i in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    return Obj(data=items[start:start + limit], has_more=start + limit < len(items))


def hyper(n_epochs: Any = None, batch_size: Any = None, lr: Any = None) -> Obj:
    return Obj(n_epochs=n_epochs, batch_size=batch_size, learning_rate_multiplier=lr)


def spec_of(request: dict) -> dict:
    """The provider-neutral parts of an OpenAI-shaped create request."""
    method = request.get("method") or {"type": "supervised", "supervised": {"hyperparameters": {}}}
    hp = dict((method.get(method["type"]) or {}).get("hyperparameters") or {})
    return {"model": request["model"], "training_file": request["training_file"],
            "validation_file": request.get("validation_file"), "suffix": request.get("suffix"),
            "method": method["type"], "n_epochs": hp.get("n_epochs", "auto"),
            "batch_size": hp.get("batch_size", "auto"), "lr": hp.get("learning_rate_multiplier", "auto"),
            "seed": request.get("seed")}
