"""The system prompt a job was trained with, recorded in its artifact and used where it is chatted with.

A model tuned on data that always begins with one system prompt (a classification dataset's generated
"Classify the text. Answer with exactly one of these labels ...") answers as trained only when it is
given that prompt again. The train worker records it in ``output/artifact.json`` as
``system_prompt`` (``None`` when the data had no single one); a quantize job over a tuned job copies
it. ``tuneterm chat``, ``chat --compare``, the workbench's Chat screen and ``tuneterm serve`` use it for
that model when the user gives no system prompt of their own, and say so (:meth:`TrainedPrompt.announce`).

Torch-free: it reads JSON files.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

KEY = "system_prompt"  # the artifact.json field
TUNED_KINDS = ("adapter", "model")  # artifacts a train job writes (a classifier has no chat prompt)
_MAX_DEPTH = 4  # quantize over quantize over train ...


@dataclass(frozen=True)
class TrainedPrompt:
    """``text`` is the system prompt that job ``job_id`` was trained with."""

    job_id: str
    text: str

    def announce(self, override: str = "--system to override") -> str:
        return f"using the system prompt job {self.job_id} was trained with ({len(self.text)} chars); {override}"


def has_system(messages: list) -> bool:
    """Whether a conversation brings a system (or developer) message of its own."""
    return any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages)


def apply(prompt: TrainedPrompt | None, messages: list[dict]) -> list[dict]:
    """``messages`` with ``prompt`` as the system message first when they have none of their own: what
    every engine of ``tuneterm serve`` (and chat) sends the model."""
    if prompt is None or has_system(messages):
        return messages
    return [{"role": "system", "content": prompt.text}, *messages]


def common_system_prompt(path: str | Path) -> str | None:
    """The system prompt every example of a training file starts with, or None (no file, a row
    without one, two different ones). Chat rows (``{"messages": [...]}``) and preference pairs
    (``{"input": {"messages": [...]}}``) both count."""
    found: str | None = None
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                row = json.loads(line)
                messages = row.get("messages")
                if messages is None and isinstance(row.get("input"), dict):
                    messages = row["input"].get("messages")
                first = messages[0] if isinstance(messages, list) and messages else None
                if not isinstance(first, dict) or first.get("role") not in ("system", "developer"):
                    return None
                text = first.get("content")
                if not isinstance(text, str) or not text.strip() or (found is not None and text != found):
                    return None
                found = text
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return found


def for_ref(ref: str, jobs_dir: Path | None = None) -> TrainedPrompt | None:
    """The trained system prompt for model reference ``ref`` (``job:ID`` of a train job, a quantize job
    over one, or a few-shot reference over either); None for every other model or when there is none."""
    from tuneterm.core import modelref

    try:
        parsed = modelref.parse(ref)
        if parsed.kind == "fewshot":
            parsed = modelref.parse(parsed.target)
        if parsed.kind != "job":
            return None
        if jobs_dir is None:
            from tuneterm.core.workspace import workspace

            jobs_dir = workspace().jobs_dir
        return _for_job(parsed.target, jobs_dir, 0)
    except Exception:  # noqa: BLE001 - a missing or damaged job has no prompt; using it reports the error
        return None


def _for_job(job_id: str, jobs_dir: Path, depth: int) -> TrainedPrompt | None:
    from tuneterm.core import modelref
    from tuneterm.core.jobs.store import resolve_id

    if not (jobs_dir / job_id).is_dir():
        job_id = resolve_id(job_id, jobs_dir)
    manifest = json.loads((jobs_dir / job_id / "output" / "artifact.json").read_text())
    if KEY in manifest:
        text = manifest[KEY]
        return TrainedPrompt(str(manifest.get("trained_by") or job_id), text) if text else None
    base = str(manifest.get("base") or "")
    if manifest.get("kind") in ("quantized", "gguf") and base.startswith("job:") and depth < _MAX_DEPTH:
        return _for_job(modelref.parse(base).target, jobs_dir, depth + 1)
    if manifest.get("kind") in TUNED_KINDS:  # a job trained before the prompt was recorded
        text = _from_frozen_config(jobs_dir / job_id / "output" / "config.toml")
        return TrainedPrompt(job_id, text) if text else None
    return None


def _from_frozen_config(config_path: Path) -> str | None:
    try:
        config = tomllib.loads(config_path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    data = config.get("data")
    return common_system_prompt(data) if isinstance(data, str) and data else None


def artifact_fields(data_path: str | Path | None) -> dict:
    """The artifact.json field a train job writes: ``{"system_prompt": TEXT or None}``."""
    return {KEY: common_system_prompt(data_path) if data_path else None}


def inherited_fields(model_ref: str) -> dict:
    """The artifact.json fields a quantize job over ``model_ref`` copies from it (none for a base model)."""
    found = for_ref(model_ref)
    return {KEY: found.text, "trained_by": found.job_id} if found else {}
