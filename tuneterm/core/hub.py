"""``tuneterm push``: a job's artifact (adapter, merged model, GGUF, classifier) and its model card to a
Hugging Face Hub repo, through ``huggingface_hub`` (imported when a push runs).

The token comes from ``HF_TOKEN`` in the environment and nowhere else (not a saved login, not a
file), so what pushes is always what the shell says. ``HF_ENDPOINT`` points at another Hub (the
tests' local stand-in, a private Hub). One commit holds the weights and the card (``README.md``,
regenerated so that it has every eval of the job so far).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tuneterm.core import modelcard
from tuneterm.core.errors import InputError, OfflineError, RuntimeFailure, UsageError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
SKIP = ("training_args.bin",)  # a pickle nobody needs to load the model


@dataclass
class PushPlan:
    job_id: str
    repo_id: str
    kind: str
    files: list[tuple[Path, str]]  # (local file, path in the repo)
    card: str

    def describe(self) -> list[str]:
        lines = [f"job:{self.job_id} ({self.kind}) -> {self.repo_id}", "files:"]
        for local, remote in self.files:
            lines.append(f"  {remote}  ({local.stat().st_size:,} bytes)")
        lines.append(f"  README.md  ({len(self.card.encode()):,} bytes, generated model card)")
        return lines


def plan_push(job_ref: str, repo_id: str) -> PushPlan:
    """What a push of ``job_ref`` to ``repo_id`` uploads; checks everything that needs no network."""
    from tuneterm.core.jobs import store
    from tuneterm.core.modelref import job_artifact

    if not REPO_ID.match(repo_id or ""):
        raise UsageError("the Hub repo must be ORG/NAME", [("got", repr(repo_id))],
                         "letters, digits, '-', '_' and '.', e.g. my-org/smollm2-tickets-lora")
    job_id = store.resolve_id(job_ref)
    job_dir = store.jobs_root() / job_id
    artifact = job_artifact(job_id, store.jobs_root())
    if not artifact.path.exists():
        raise InputError(f"job {job_id}'s artifact is missing", [("expected", str(artifact.path))])
    files: list[tuple[Path, str]] = []
    if artifact.path.is_dir():
        for path in sorted(artifact.path.rglob("*")):
            rel = path.relative_to(artifact.path)
            if path.is_file() and not any(p.startswith(".") for p in rel.parts) and path.name not in SKIP \
                    and rel.as_posix() != "README.md":
                files.append((path, rel.as_posix()))
    else:
        files.append((artifact.path, artifact.path.name))
        modelfile = artifact.path.parent / "Modelfile"
        if modelfile.is_file():  # written by `tuneterm export --to ollama`
            files.append((modelfile, "Modelfile"))
    for name, remote in (("config.toml", "tuneterm_config.toml"), ("metrics.json", "tuneterm_metrics.json"),
                         ("quality.json", "tuneterm_quality.json")):
        if (job_dir / "output" / name).is_file():
            files.append((job_dir / "output" / name, remote))
    card = modelcard.render(job_dir, repo_id=repo_id)
    return PushPlan(job_id, repo_id, artifact.kind, files, card)


def token_from_env() -> str:
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise UsageError("HF_TOKEN is not set", [("read from", "the environment only")],
                         "export HF_TOKEN=hf_... (a token with write access, huggingface.co/settings/tokens); "
                         "--dry-run shows the files and the card without one")
    return token


def push(plan: PushPlan, private: bool = False) -> dict:
    """Create the repo (or use the existing one) and upload the files and the card in one commit."""
    from tuneterm.core.modelref import offline

    token = token_from_env()
    if offline():
        raise OfflineError("offline mode is on; a push needs the Hub", [("env", "HF_HUB_OFFLINE or TUNETERM_OFFLINE")],
                           "unset HF_HUB_OFFLINE and TUNETERM_OFFLINE for this command")
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    operations = [CommitOperationAdd(path_in_repo=remote, path_or_fileobj=str(local)) for local, remote in plan.files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=plan.card.encode("utf-8")))
    try:
        url = api.create_repo(plan.repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.create_commit(plan.repo_id, operations=operations, repo_type="model",
                                   commit_message=f"tuneterm push job:{plan.job_id}")
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        hint = "check that HF_TOKEN has write access to that organisation" if status in (401, 403) else \
            "see the Hub's message above"
        raise RuntimeFailure("the Hub refused the push", [("repo", plan.repo_id), ("status", str(status)),
                                                         ("message", str(exc).splitlines()[0][:300])], hint) from exc
    except ValueError as exc:  # e.g. the card's metadata rejected by /api/validate-yaml
        raise RuntimeFailure("the Hub refused the push", [("repo", plan.repo_id), ("message", str(exc)[:300])]) from exc
    return {"repo_url": str(url), "commit_url": commit.commit_url, "files": len(operations)}
