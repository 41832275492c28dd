"""A job in plain sentences (torch-free): ``tuneterm jobs show``, and the quantize job's log lines.

Each sentence says one thing: the state and when, what the job waits for or how far it is (with
the time left), the error and how to continue, the artifact with its files and sizes, the report's
path, the folder.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from tuneterm.core.jobs.disk import human
from tuneterm.core.jobs.eta import eta_text, format_duration

REPORTS = ("quality.md", "report.md", "README.md", "metrics.json", "quality.json")  # first found is named


def progress_text(event: dict) -> str:
    """``step 5/20, loss 1.234`` from a progress event; "" for none."""
    if not event:
        return ""
    parts = []
    if "step" in event:
        total = event.get("total_steps") or event.get("max_steps")
        parts.append(f"step {event['step']}" + (f"/{total}" if total else ""))
    for key in ("loss", "eval_loss"):
        if isinstance(event.get(key), (int, float)):
            parts.append(f"{key.replace('_', ' ')} {event[key]:.4g}")
    if not parts and event.get("phase") and event.get("type") in ("quantize", "gate"):
        parts.append(quantize_sentence(event))  # a quantize job's PROGRESS: its phase in words
    if not parts and event.get("type") == "eval_report":  # a finished eval: its report, and what regressed
        n = int(event.get("regressions") or 0)
        parts.append(f"report written, {n} regression{'' if n == 1 else 's'}")
    if not parts and event.get("type") == "state":
        parts.append(str(event.get("state")))
    return ", ".join(parts)


def artifact_files(folder: Path, limit: int = 8) -> list[tuple[str, int]]:
    """(relative name, bytes) of the files under ``folder``, largest first."""
    folder = Path(folder)
    if folder.is_file():
        return [(folder.name, folder.stat().st_size)]
    files = [(str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")
             if p.is_file() and p.name != "artifact.json"]
    return sorted(files, key=lambda f: -f[1])[:limit]


def _duration(start: str | None, end: str | None) -> str | None:
    try:
        return format_duration((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    except (TypeError, ValueError):
        return None


def show_sentences(job, events: list[dict]) -> list[str]:
    """``jobs show`` for ``job`` (a JobInfo) and its events."""
    out = []
    if job.state == "queued":
        out.append(f"It is queued: {job.note}." if job.note else "It is queued and about to start.")
    elif job.state == "running":
        progress = progress_text(job.last_event)
        eta = eta_text(events)
        text = "It is running" + (f": {progress}" if progress else "") + (f", {eta}" if eta else "") + "."
        if job.heartbeat:
            text += f" Its last heartbeat was {time.time() - float(job.heartbeat):.0f} s ago (pid {job.pid})."
        out.append(text)
    else:
        took = _duration(job.started_at, job.finished_at)
        verb = "was cancelled" if job.state == "cancelled" else job.state
        out.append(f"It {verb} at {job.finished_at or 'an unknown time'}" + (f", {took} after it started" if took else "")
                   + ".")
        progress = progress_text(job.last_event)
        if progress and job.state != "succeeded":
            out.append(f"It got to {progress}.")
    if job.error:
        out.append(f"The error: {job.error.rstrip('.')}.")
    if job.state in ("failed", "cancelled") and (not job.error or "jobs resume" not in job.error):
        out.append(f"Continue it from its last checkpoint with `tuneterm jobs resume {job.id}`.")
    out.extend(_artifact_sentences(job))
    out.append(f"Its folder is {job.dir}.")
    return out


def _artifact_sentences(job) -> list[str]:
    manifest_path = Path(job.dir) / "output" / "artifact.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = None
    out = []
    if manifest:
        path = Path(job.dir) / "output" / manifest.get("path", ".")
        files = artifact_files(path)
        listing = ", ".join(f"{name} ({human(size)})" for name, size in files)
        kind = manifest.get("kind", "model")
        article = "an" if kind[:1] in "aeiou" else "a"
        out.append(f"It made {article} {kind} in {path}" + (f": {listing}" if listing else "") + ".")
        out.append(f"Use it as job:{job.id}, for example `tuneterm chat job:{job.id} \"...\"`.")
    for name in REPORTS:
        report = Path(job.dir) / "output" / name
        if report.is_file():
            out.append(f"Its report is {report}.")
            break
    return out


# --- quantize jobs: one sentence per phase ---------------------------------------------------------


def quantize_sentence(fields: dict) -> str:
    """A quantize or gate event (``type``, ``phase`` and its figures) as a sentence for the log."""
    f = fields
    phase = f.get("phase")
    if phase == "load_parent":
        return f"loading {f.get('model')}"
    if phase == "merged":
        return f"merged the adapter into {f.get('base')} in {f.get('seconds')} s"
    if phase == "quantize":
        return f"quantizing with {f.get('method')} on {f.get('device') or 'the CPU'}"
    if phase == "sensitivity":
        if "done" in f:
            return f"measured the sensitivity of {f['done']} of {f.get('layers')} layers"
        return f"measuring how sensitive each of {f.get('layers')} layers is"
    if phase == "sensitivity_done":
        kept = f.get("kept") or []
        return f"keeping {len(kept)} sensitive layer(s) in full precision" + (f": {', '.join(kept)}" if kept else "")
    if phase == "imatrix":
        return f"computing an importance matrix on {f.get('texts')} texts"
    if phase == "llama_quantize":
        return f"quantizing to {f.get('outtype')} with llama.cpp's quantizer"
    if phase == "saved":
        return f"saved the quantized model ({f.get('size_mb')} MB) in {f.get('seconds')} s"
    if phase == "distributions":
        return f"comparing next-token distributions with the parent on {f.get('texts')} texts"
    if phase == "generation":
        return f"comparing greedy generations with the parent on {f.get('prompts')} prompts"
    if phase == "done" and f.get("type") == "gate":
        failures = f.get("failures") or []
        figures = []
        if isinstance(f.get("ppl_increase"), (int, float)):
            figures.append(f"perplexity {100 * f['ppl_increase']:+.2f}%")
        if isinstance(f.get("top1_agreement"), (int, float)):
            figures.append(f"top-1 agreement {100 * f['top1_agreement']:.1f}%")
        if f.get("size_ratio") is not None:
            figures.append(f"size ratio {f['size_ratio']}")
        verdict = "the quality gate passed" if not failures else "the quality gate failed: " + "; ".join(failures)
        return verdict + (f" ({', '.join(figures)})" if figures else "")
    rest = {k: v for k, v in f.items() if k not in ("type", "phase", "parent", "quantized", "samples")}
    return f"{f.get('type', 'quantize')} {phase}" + ("".join(f", {k} {v}" for k, v in rest.items()))


def artifact_ready_sentence(job_id: str, output: Path, path: Path) -> str:
    """The quantize job's last log line: the reference, the files, the report."""
    files = ", ".join(f"{name} ({human(size)})" for name, size in artifact_files(path))
    report = next((output / n for n in REPORTS if (output / n).is_file()), None)
    return (f"artifact ready as job:{job_id} in {path}" + (f": {files}" if files else "")
            + (f"; report: {report}" if report else ""))
