"""What Chat opens with: the base model, the newest finished tuned job over it, and that job's newest
quantized artifact (the ones that exist), and whether the workbench opens on Chat at all.

Read from the job folders alone (``spec.toml``, ``status.json``, ``output/artifact.json``), torch-free and
without listing every job's events, so that the workbench can ask before its first frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TUNED_KINDS = ("adapter", "model")
START_SCREENS = ("auto", "chat", "datasets")


@dataclass(frozen=True)
class Lineup:
    """Model references for Chat's columns, with what each one is."""

    refs: tuple[str, ...]
    roles: tuple[str, ...]  # "base" | "tuned" | "quantized"

    def describe(self) -> str:
        return ", ".join(f"{r} ({role})" for r, role in zip(self.refs, self.roles))


def _jobs_dir(jobs_dir: Path | None) -> Path:
    if jobs_dir is not None:
        return Path(jobs_dir)
    from tuneterm.core.workspace import workspace

    return workspace(create=False).jobs_dir


def _finished(jobs_dir: Path) -> list[tuple[str, str, dict]]:
    """(job id, job kind, artifact manifest) of every succeeded job with an artifact, newest first."""
    from tuneterm.core.jobs.store import _all_ids, read_spec, read_status

    out = []
    for job_id in reversed(_all_ids(jobs_dir)):
        folder = jobs_dir / job_id
        manifest_path = folder / "output" / "artifact.json"
        if not manifest_path.is_file():
            continue
        try:
            if read_status(folder).get("state") != "succeeded":
                continue
            manifest = json.loads(manifest_path.read_text())
            kind = str(read_spec(folder).get("job", {}).get("kind", ""))
        except Exception:  # noqa: BLE001 - a damaged folder is not a candidate
            continue
        out.append((job_id, kind, manifest))
    return out


def newest_tuned(jobs_dir: Path | None = None) -> tuple[str, dict] | None:
    """(id, artifact manifest) of the newest succeeded train job that made a model or an adapter."""
    for job_id, kind, manifest in _finished(_jobs_dir(jobs_dir)):
        if kind == "train" and manifest.get("kind") in TUNED_KINDS:
            return job_id, manifest
    return None


def default_lineup(default_model: str | None = None, jobs_dir: Path | None = None) -> Lineup:
    """The base, the newest tuned job over it and its newest quantized artifact (up to three columns);
    ``default_model`` alone when no train job has finished."""
    jobs_dir = _jobs_dir(jobs_dir)
    if default_model is None:
        from tuneterm.core.settings import get_settings

        default_model = get_settings().default_model
    finished = _finished(jobs_dir)
    tuned = next(((j, m) for j, kind, m in finished if kind == "train" and m.get("kind") in TUNED_KINDS), None)
    if tuned is None:
        return Lineup((default_model,), ("base",))
    tuned_id, manifest = tuned
    refs, roles = [str(manifest.get("base") or default_model), f"job:{tuned_id}"], ["base", "tuned"]
    for job_id, kind, m in finished:
        if m.get("kind") in ("quantized", "gguf") and _names_job(str(m.get("base") or ""), tuned_id, jobs_dir):
            refs.append(f"job:{job_id}")
            roles.append("quantized")
            break
    return Lineup(tuple(refs), tuple(roles))


def _names_job(ref: str, job_id: str, jobs_dir: Path) -> bool:
    if not ref.startswith("job:"):
        return False
    if ref[4:] == job_id:
        return True
    from tuneterm.core.jobs.store import resolve_id

    try:
        return resolve_id(ref[4:], jobs_dir) == job_id
    except Exception:  # noqa: BLE001 - an unknown job is not this one
        return False


def start_screen(setting: str = "auto", jobs_dir: Path | None = None) -> str:
    """The workbench's first screen: ``chat`` or ``datasets`` as set; ``auto`` is Datasets while no
    tuned job has finished (a first run starts with data), Chat after."""
    if setting in ("chat", "datasets"):
        return setting
    try:
        return "chat" if newest_tuned(jobs_dir) is not None else "datasets"
    except Exception:  # noqa: BLE001 - no workspace yet: a first run
        return "datasets"
