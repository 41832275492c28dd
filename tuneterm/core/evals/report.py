"""Eval reports: ``report.json`` (versioned schema), ``samples.jsonl``, ``report.md`` and a
terminal table. Torch-free: the TUI reads the same files.

Schema ``tuneterm.eval-report/1``::

    {"schema": ..., "created_at", "duration_s", "settings": {...},
     "variants": [{"id", "ref", "shots", "parent", "kind" (model|adapter|quantized|classifier|fewshot|remote),
                   "fingerprint": {"id", "weights", "adapter", "classifier", ...}}],
     "tasks": {NAME: {"version", "type", "source", "metrics": [NAME...],
                      "variants": {VID: {"n", "metrics": {M: {"value", "ci95", "ci_method", "higher_is_better"}},
                                         "speed": {"tokens_per_s", "items_per_s", "latency_p50_s", "latency_p95_s",
                                                   "peak_memory_bytes", "size_bytes", "computed", "cached"}}},
                      "comparisons": [{"variant", "baseline", "metric", "n", "value", "baseline_value", "delta",
                                       "ci95", "test", "p_value", "fixed", "broken", "significant",
                                       "regression", "warning"?}]}}}
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from tuneterm.core.errors import InputError, NotFoundError
from tuneterm.core.fsutil import atomic_write_json, atomic_write_text

SCHEMA = "tuneterm.eval-report/1"


def build_report(tasks: dict, variants: list[dict], settings: dict, started: float) -> dict:
    return {
        "schema": SCHEMA,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(time.time() - started, 2),
        "settings": settings,
        "variants": variants,
        "tasks": tasks,
    }


def write_report(out_dir: Path, report: dict, samples: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "samples.jsonl",
                      "".join(json.dumps(s, ensure_ascii=False, default=str) + "\n" for s in samples))
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    atomic_write_json(out_dir / "report.json", report)


def load_report(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise NotFoundError("no eval report", [("expected", str(path))], "run `tuneterm eval ... --out DIR` first")
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA:
        raise InputError("unknown eval report schema", [("file", str(path)), ("schema", str(data.get("schema")))])
    return data


def regressions(report: dict) -> list[dict]:
    """Comparisons where a variant is significantly worse than its baseline."""
    return [{"task": name, **c} for name, t in report["tasks"].items() for c in t["comparisons"] if c.get("regression")]


# --- formatting --------------------------------------------------------------------------------


def fmt_metric(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "–"
    v = m["value"]
    lo, hi = (m.get("ci95") or [None, None])
    scale = 100 if m.get("unit", "fraction") == "fraction" else 1
    if lo is None or hi is None:
        return f"{v * scale:.1f}"
    return f"{v * scale:.1f} [{lo * scale:.1f}, {hi * scale:.1f}]"


def fmt_delta(c: dict) -> str:
    if c.get("delta") is None:
        return "–"
    d = c["delta"]
    scale, unit = (100, " pt") if c.get("unit", "fraction") == "fraction" else (1, "")
    star = " *" if c.get("significant") else ""
    flips = f" (+{c['fixed']}/-{c['broken']})" if "fixed" in c else ""
    p = c.get("p_value")
    p_text = "p<0.001" if p is not None and p < 0.001 else f"p={p:.3g}" if p is not None else ""
    return f"{d * scale:+.1f}{unit}{star} {p_text}{flips}"


def _speed(s: dict) -> str:
    parts = []
    if s.get("tokens_per_s"):
        parts.append(f"{s['tokens_per_s']:.0f} tok/s")
    if s.get("latency_p50_s") is not None:
        parts.append(f"p50 {1000 * s['latency_p50_s']:.0f} ms / p95 {1000 * (s.get('latency_p95_s') or 0):.0f} ms")
    if s.get("peak_memory_bytes"):
        parts.append(f"peak {s['peak_memory_bytes'] / 2**20:.0f} MiB")
    if s.get("size_bytes"):
        parts.append(f"size {s['size_bytes'] / 2**20:.0f} MiB")
    if s.get("cached"):
        parts.append(f"{s['cached']} cached")
    return ", ".join(parts) or "–"


def rows(report: dict) -> list[list[str]]:
    """Table rows: task, variant, n, each metric, Δ vs baseline (first metric), speed."""
    out = []
    for name, task in report["tasks"].items():
        comps = {(c["variant"], c["metric"]): c for c in task["comparisons"]}
        for vid, res in task["variants"].items():
            if res.get("skipped"):
                out.append([name, vid, "0", f"skipped: {res['skipped']}", "", ""])
                continue
            metrics = "; ".join(f"{m} {fmt_metric(res['metrics'].get(m))}" for m in task["metrics"])
            deltas = "; ".join(f"{m} {fmt_delta(comps[(vid, m)])} vs {comps[(vid, m)]['baseline']}"
                               for m in task["metrics"] if (vid, m) in comps)
            out.append([name, vid, str(res["n"]), metrics, deltas or "(baseline)", _speed(res.get("speed", {}))])
    return out


HEADERS = ["task", "variant", "n", "metrics (95% CI)", "Δ vs baseline (paired)", "speed"]


def warnings(report: dict) -> list[str]:
    out = []
    for name, task in report["tasks"].items():
        if task.get("duplicate_rows"):
            out.append(f"{name}: {task['duplicate_rows']} duplicate row(s) in the data, each scored as an item "
                       "of its own")
        for c in task["comparisons"]:
            if c.get("warning"):
                out.append(f"{name}: {c['variant']} vs {c['baseline']} ({c['metric']}): {c['warning']}")
    return out


def render_markdown(report: dict) -> str:
    lines = ["# Eval report", "", f"created {report['created_at']}, {report['duration_s']} s", ""]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for r in rows(report):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    lines += ["", "`*` = significant at p < 0.05 (McNemar exact for right/wrong scores, paired bootstrap otherwise);"
              " (+fixed/-broken) counts items that changed.", ""]
    warns = warnings(report)
    if warns:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warns] + [""]
    lines += ["## Variants", ""]
    for v in report["variants"]:
        fp = v.get("fingerprint") or {}
        lines.append(f"- `{v['id']}`: ref `{v['ref']}`, parent `{v.get('parent')}`, fingerprint `{str(fp.get('id', ''))[:16]}`")
    return "\n".join(lines) + "\n"


WIDE = 150  # from this many columns on, the full table (every metric's delta and the speed in words)


def terminal_width() -> int:
    """The terminal's width (``$COLUMNS`` first, as :func:`shutil.get_terminal_size` reads it)."""
    import shutil

    return max(40, shutil.get_terminal_size((100, 24)).columns)


def render_table(report: dict, width: int | None = None) -> str:
    """The terminal table (rich), as text, fitted to ``width`` columns (default: the terminal's).

    From :data:`WIDE` columns on, one table with every column; narrower, one compact table per task:
    variant names wrap, the metric names become column titles, the baseline is named once under the
    table, and the speed is tokens/s only (the full figures are in report.md)."""
    from rich.console import Console

    width = width or terminal_width()
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    if width >= WIDE:
        console.print(_wide_table(report))
    else:
        for name, task in report["tasks"].items():
            console.print(_compact_table(name, task, width))
    for w in warnings(report):
        console.print(f"warning: {w}")
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


def _wide_table(report: dict):
    from rich.table import Table

    table = Table(title="tuneterm eval", show_lines=False)
    for h in HEADERS:
        table.add_column(h, overflow="fold")
    for r in rows(report):
        table.add_row(*r)
    return table


def _compact_delta(c: dict, common: str | None, metric: str | None) -> str:
    """``-10.0 pt * p=0.013`` then ``(+2/-12)`` on a line of its own; names only what is not in the titles."""
    if c.get("delta") is None:
        return "–"
    d = c["delta"]
    scale, unit = (100, " pt") if c.get("unit", "fraction") == "fraction" else (1, "")
    p = c.get("p_value")
    p_text = " p<0.001" if p is not None and p < 0.001 else f" p={p:.2g}" if p is not None else ""
    head = (f"{metric} " if metric else "") + f"{d * scale:+.1f}{unit}{' *' if c.get('significant') else ''}{p_text}"
    if c["baseline"] != common:
        head += f" vs {c['baseline']}"
    return head + (f"\n(+{c['fixed']}/-{c['broken']})" if "fixed" in c else "")


def _compact_table(name: str, task: dict, width: int):
    from rich import box
    from rich.table import Table

    baselines = [c["baseline"] for c in task["comparisons"]]
    common = max(set(baselines), key=baselines.count) if baselines else None
    metrics = task["metrics"]
    caption = (f"Δ: paired difference to {common}" + (f" ({metrics[0]})" if len(metrics) > 1 and width < 100 else "")
               + "; * = significant at p < 0.05" if common else None)
    table = Table(title=f"{name} ({task.get('type', '')})", caption=caption, box=box.SIMPLE_HEAD,
                  title_justify="left", caption_justify="left", pad_edge=False)
    table.add_column("variant", overflow="fold", min_width=12)
    table.add_column("n", justify="right", no_wrap=True)
    narrow = width < 100
    for m in metrics:
        table.add_column(f"{m} (95% CI)" if not narrow else m, overflow="fold")
    if common:
        table.add_column("Δ", overflow="fold")
    table.add_column("tok/s", justify="right", no_wrap=True)
    comps = {(c["variant"], c["metric"]): c for c in task["comparisons"]}
    for vid, res in task["variants"].items():
        if res.get("skipped"):
            cells = [vid, "0", f"skipped: {res['skipped']}", *[""] * (len(metrics) - 1)]
            table.add_row(*cells, *([""] if common else []), "")
            continue
        cells = [vid, str(res["n"])]
        for m in metrics:
            v = res["metrics"].get(m)
            cells.append(fmt_metric(v).replace(" [", "\n[", 1) if narrow else fmt_metric(v))
        if common:
            shown = metrics[:1] if narrow else metrics
            deltas = [_compact_delta(comps[(vid, m)], common, m if len(shown) > 1 else None)
                      for m in shown if (vid, m) in comps]
            cells.append("\n".join(deltas) or "(baseline)")
        tps = (res.get("speed") or {}).get("tokens_per_s")
        cells.append(f"{tps:.0f}" if tps else "–")
        table.add_row(*cells)
    return table
