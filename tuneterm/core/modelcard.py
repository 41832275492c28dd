"""Model cards (torch-free): the ``README.md`` of every artifact, in the Hugging Face Hub's model-card
conventions, so that it renders the same in the workspace and once pushed.

The YAML header carries ``base_model``, ``library_name``, ``license``, ``tags``, ``datasets`` and a
``model-index`` with the eval results; the body says where the data came from (paths, row counts,
SHA-256), the method and the frozen recipe, the eval results with their 95% intervals, the
quantization gate report and the base model's licence. Everything is read from the job folder
(``spec.toml``, ``output/artifact.json``, ``metrics.json``, ``quality.json``) and from the eval reports
in the workspace that scored ``job:ID``; a kind's own summary (the DPO figures, a forgetting matrix)
is kept between ``<!-- tuneterm:details -->`` markers so that regenerating the card (``tuneterm push``
does, to include later evals) keeps it.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from tuneterm.core.fsutil import sha256_file

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was converted from
EMBEDDED_LICENSE = "apache-2.0"
DETAILS = re.compile(r"<!-- tuneterm:details -->\n(.*?)<!-- /tuneterm:details -->", re.S)
LIBRARY = {"adapter": "peft", "model": "transformers", "gguf": "gguf", "classifier": "sklearn"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _spec(job_dir: Path) -> dict:
    try:
        return tomllib.loads((Path(job_dir) / "spec.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _model_of(config: dict) -> str:
    return str(config.get("model") or config.get("teacher") or "")


def base_lineage(job_dir: Path) -> list[str]:
    """The model references from this job's starting model back to the first one that is not a job."""
    jobs_dir = Path(job_dir).parent
    chain, ref, seen = [], _model_of(_spec(job_dir).get("config", {})), set()
    while ref and ref not in seen:
        seen.add(ref)
        chain.append(ref)
        if not ref.startswith("job:"):
            break
        ref = _model_of(_spec(jobs_dir / ref[4:].split("@")[0]).get("config", {}))
    return chain


def trained_from(job_dir: Path) -> tuple[str, dict] | None:
    """(``job:ID``, frozen config) of the nearest job up the lineage that trained on data: the training
    job a quantized model came from, whose data and recipe its card carries. None when there is none."""
    jobs_dir = Path(job_dir).parent
    for ref in base_lineage(job_dir):
        if not ref.startswith("job:"):
            return None
        config = _spec(jobs_dir / ref[4:].split("@")[0]).get("config", {})
        if data_files(config):
            return ref, config
    return None


def hub_id(ref: str) -> str | None:
    """The Hub repo id of a model reference, when it has one."""
    from tuneterm.core.modelref import EMBEDDED_ALIASES

    if ref.lower() in EMBEDDED_ALIASES:
        return EMBEDDED_HUB_ID
    if ref.startswith("hf:"):
        return ref[3:].split("@")[0]
    return None


def front_matter(text: str) -> dict:
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        data = yaml.safe_load(text[3:end]) if end > 0 else {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def base_license(ref: str) -> str | None:
    """The licence the base model's own card declares (local folder, or the Hub cache; never a download)."""
    from tuneterm.core.modelref import EMBEDDED_ALIASES

    if ref.lower() in EMBEDDED_ALIASES:
        return EMBEDDED_LICENSE
    readme: Path | None = None
    if ref.startswith("hf:"):
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(ref[3:].split("@")[0], "README.md")
            readme = Path(found) if isinstance(found, str) else None
        except Exception:  # noqa: BLE001 - no cache, no card: the licence is then unknown
            readme = None
    elif Path(ref).is_dir():
        readme = Path(ref) / "README.md"
    if readme is None or not readme.is_file():
        return None
    value = front_matter(readme.read_text(encoding="utf-8", errors="replace")).get("license")
    return str(value) if value else None


def data_files(config: dict) -> list[tuple[str, str]]:
    """(role, path) of the data a job trained or calibrated on, a pipeline's stages included."""
    out = []
    for role, key in (("train", "data"), ("validation", "eval_data"), ("validation", "val_data")):
        if config.get(key):
            out.append((role, str(config[key])))
    for stage in config.get("stages") or []:
        for role, key in (("train", "data"), ("validation", "eval_data")):
            if stage.get(key):
                out.append((f"{role} (stage {stage.get('name')})", str(stage[key])))
    return out


def provenance(config: dict) -> list[dict]:
    rows = []
    for role, path in data_files(config):
        p = Path(path)
        row = {"role": role, "path": path}
        if p.is_file():
            row["sha256"] = sha256_file(p)
            with p.open("rb") as fh:
                row["rows"] = sum(1 for line in fh if line.strip())
        rows.append(row)
    return rows


def eval_reports(job_id: str, workspace_root: Path, extra: tuple = ()) -> list[tuple[Path, dict, str]]:
    """(report path, report, variant id) for every eval report in the workspace (and in ``extra``) that
    scored ``job:ID``."""
    out = []
    candidates = list((workspace_root / "jobs").glob("*/output/report.json")) + \
        list((workspace_root / "evals").glob("*/report.json"))
    candidates = sorted({p.resolve() for p in candidates} | {Path(p).resolve() for p in extra})
    for path in candidates:
        report = _read_json(path)
        for variant in report.get("variants", []):
            ref = str(variant.get("ref", ""))
            if ref.startswith("job:") and ref[4:].split("@")[0] == job_id and not variant.get("shots"):
                out.append((path, report, variant["id"]))
    return out


def eval_results(job_id: str, workspace_root: Path, metrics: dict, extra: tuple = ()) -> list[dict]:
    """Flat results: task, dataset, metric, value, ci95 (or None), source."""
    results = []
    if metrics.get("eval_loss") is not None:
        results.append({"task": "validation", "dataset": "validation split", "metric": "loss",
                        "value": float(metrics["eval_loss"]), "ci95": None, "source": "metrics.json"})
    for path, report, vid in eval_reports(job_id, workspace_root, extra):
        for task, body in (report.get("tasks") or {}).items():
            cell = (body.get("variants") or {}).get(vid) or {}
            for name, m in (cell.get("metrics") or {}).items():
                if isinstance(m.get("value"), (int, float)):
                    results.append({"task": task, "dataset": str(body.get("source") or task), "metric": name,
                                    "value": float(m["value"]), "ci95": m.get("ci95"), "n": cell.get("n"),
                                    "source": str(path)})
    return results


def refresh(job_dir: Path, reports: tuple = ()) -> bool:
    """Rewrites a finished job's card (after an eval that scored it); False when it has none."""
    from tuneterm.core.fsutil import atomic_write_text

    readme = Path(job_dir) / "output" / "README.md"
    if not readme.is_file() or not (Path(job_dir) / "output" / "artifact.json").is_file():
        return False
    atomic_write_text(readme, render(job_dir, reports=reports))
    return True


def _model_index(name: str, results: list[dict]) -> list[dict]:
    if not results:
        return []
    entries = []
    for r in results:
        entries.append({"task": {"type": "text-generation", "name": r["task"]},
                        "dataset": {"name": r["dataset"], "type": r["dataset"]},
                        "metrics": [{"type": r["metric"], "value": round(r["value"], 6),
                                     "name": f"{r['task']} {r['metric']}"}]})
    return [{"name": name, "results": entries}]


def _fmt_ci(ci) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return f"[{ci[0]:.4f}, {ci[1]:.4f}]"
    return "-"


def render(job_dir: Path, details: str | None = None, repo_id: str | None = None, reports: tuple = ()) -> str:
    """The model card of the job in ``job_dir``. ``details``: the kind's own summary (default: what the
    existing README holds between the markers); ``repo_id``: the name it is pushed under; ``reports``:
    eval reports outside the workspace to include."""
    job_dir = Path(job_dir)
    spec = _spec(job_dir)
    job, config = spec.get("job", {}), spec.get("config", {})
    job_id = str(job.get("id", job_dir.name))
    out = job_dir / "output"
    artifact = _read_json(out / "artifact.json")
    metrics = _read_json(out / "metrics.json")
    quality = _read_json(out / "quality.json")
    if details is None:
        found = DETAILS.search((out / "README.md").read_text(encoding="utf-8")) if (out / "README.md").is_file() else None
        details = found.group(1) if found else ""
    lineage = base_lineage(job_dir)
    root = lineage[-1] if lineage else ""
    base_hub = hub_id(root) if root else None
    licence = base_license(root) if root else None
    kind = artifact.get("kind") or ("model" if job.get("kind") != "feature" else "classifier")
    library = LIBRARY.get(kind, "transformers")
    if artifact.get("head") == "cls_head":  # a sequence-classification head: PEFT adapter or a full model
        library = "peft" if artifact.get("tune", "lora") == "lora" else "transformers"
    method = str(artifact.get("method") or config.get("method") or job.get("kind") or "")
    results = eval_results(job_id, job_dir.parent.parent, metrics, tuple(reports))
    name = repo_id or f"tuneterm-{job_id}"

    tags = ["tuneterm", job.get("kind", "")]
    tags += [t for t in (method, kind if kind in ("gguf", "adapter") else "", "quantized" if quality or artifact.get("quality") or job.get("kind") == "quantize" else "")
             if t and t not in tags]
    if kind == "adapter":
        tags.append("lora")
    header: dict = {}
    if base_hub:
        header["base_model"] = base_hub
    header["library_name"] = library
    if licence:
        header["license"] = licence
    header["tags"] = [t for t in dict.fromkeys(tags) if t]
    parent = None if data_files(config) else trained_from(job_dir)  # a quantized model: its training job's data
    data_config = parent[1] if parent else config
    datasets = [_dataset_name(str(data_config["dataset"]))] if data_config.get("dataset") else []
    datasets += [_dataset_name(str(s.get("dataset") or s["data"])) for s in data_config.get("stages") or []
                 if s.get("data")]
    if datasets:
        header["datasets"] = list(dict.fromkeys(datasets))
    index = _model_index(name, results)
    if index:
        header["model-index"] = index

    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {name}", "",
             f"{_what(kind, method)} made with tuneterm (job `{job_id}`, {job.get('kind', '?')})"
             + (f" from `{lineage[0]}`" if lineage else "") + ".", ""]
    if len(lineage) > 1:
        lines += ["Lineage: " + " → ".join(f"`{r}`" for r in lineage), ""]
    lines += ["<!-- tuneterm:details -->", details.rstrip("\n") + ("\n" if details.strip() else "")
              + "<!-- /tuneterm:details -->", ""]
    lines += _data_section(data_config, parent[0] if parent else None) + _recipe_section(config, method)
    if parent:
        lines += _recipe_section(parent[1], str(parent[1].get("method") or ""), parent[0])
    lines += _results_section(results, metrics)
    lines += _gate_section(quality, artifact) + _licence_section(root, licence) + _use_section(job_id, kind, base_hub)
    return "\n".join(lines).rstrip() + "\n"


def _dataset_name(name: str) -> str:
    """A workspace dataset or Hub id as given; a file by its name without folders."""
    return Path(name).stem if Path(name).expanduser().exists() else name


def _what(kind: str, method: str) -> str:
    return {"adapter": f"A {method} adapter", "gguf": "A GGUF model", "classifier": "A classifier",
            }.get(kind, f"A {method} model" if method else "A model")


def _data_section(config: dict, source: str | None = None) -> list[str]:
    rows = provenance(config)
    if not rows:
        return []
    lines = ["## Data", ""]
    if source:
        lines += [f"The data `{source}` was trained on; this model was made from it.", ""]
    lines += ["| role | file | rows | sha256 |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['role']} | `{r['path']}` | {r.get('rows', '-')} | `{r.get('sha256', 'missing')}` |")
    if config.get("dataset"):
        lines += ["", f"Dataset as named: `{config['dataset']}`."]
    return lines + [""]


def _recipe_section(config: dict, method: str, source: str | None = None) -> list[str]:
    """The frozen recipe; ``source``: the training job's, below a quantized model's own."""
    import tomli_w

    shown = {k: v for k, v in config.items() if k not in ("cwd",)}
    try:
        text = tomli_w.dumps(shown)
    except (TypeError, ValueError):
        text = json.dumps(shown, indent=2, default=str)
    head = ["## Method and recipe", "", f"Method: **{method or '?'}**. The frozen recipe:", ""] if source is None \
        else [f"Trained before that by `{source}` with **{method or '?'}**. Its frozen recipe:", ""]
    summary = "config" if source is None else f"config of {source}"
    return head + [f"<details><summary>{summary}</summary>", "", "```toml", text.rstrip(), "```", "", "</details>", ""]


def _results_section(results: list[dict], metrics: dict) -> list[str]:
    lines = ["## Results", ""]
    figures = [(k, metrics[k]) for k in ("final_loss", "eval_loss", "global_step", "train_seconds", "tokens",
                                         "trainable_params") if metrics.get(k) is not None]
    if figures:
        lines += [f"- {k}: {v}" for k, v in figures] + [""]
    if results:
        lines += ["| task | metric | value | 95% interval | n | report |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['task']} | {r['metric']} | {r['value']:.4f} | {_fmt_ci(r['ci95'])} | {r.get('n', '-')} | "
                  f"`{Path(r['source']).name if r['source'] != 'metrics.json' else 'metrics.json'}` |" for r in results]
        lines.append("")
    elif not figures:
        lines += ["No evaluation yet: `tuneterm eval SUITE --models job:ID` adds it to this card.", ""]
    return lines


def _gate_section(quality: dict, artifact: dict) -> list[str]:
    if not quality and not artifact.get("quality"):
        return []
    q = quality or artifact.get("quality") or {}
    passed = quality.get("passed", artifact.get("gate_passed"))
    lines = ["## Quantization gate", "", f"Gate: **{'passed' if passed else 'failed'}**"
             + (f" ({'; '.join(quality.get('failures', []))})" if quality.get("failures") else ""), ""]
    for key, label in (("ppl_increase", "perplexity increase"), ("mean_kl", "mean KL(parent || quantized)"),
                       ("top1_agreement", "top-1 agreement"), ("exact_match", "greedy exact match"),
                       ("size_ratio", "size ratio"), ("speedup", "decode speedup")):
        if isinstance(q.get(key), (int, float)):
            lines.append(f"- {label}: {q[key]:.4g}")
    return lines + [""]


def _licence_section(root: str, licence: str | None) -> list[str]:
    if not root:
        return []
    text = f"The base model `{root}` is licensed {licence}." if licence else \
        f"The base model `{root}` declares no licence tuneterm could read; check its card before sharing."
    return ["## Licence", "", text + " This derivative inherits its terms.", ""]


def _use_section(job_id: str, kind: str, base_hub: str | None) -> list[str]:
    lines = ["## Use it", "", "```console", f"$ tuneterm chat job:{job_id} \"...\""]
    if kind == "gguf":
        lines.append(f"$ tuneterm export job:{job_id} --to ollama")
    lines.append("```")
    return lines + [""]
