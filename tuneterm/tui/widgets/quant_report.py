"""QuantReport: the quality gate of a quantize job (output/quality.json), and its progress.

The report is what tuneterm.workers.quantize.gate.measure writes: parent and quantized side by
side (size, memory, load time, TTFT, tokens/s, perplexity), then the comparison (perplexity
increase, KL, top-1 agreement, exact match) and the gate's verdict with the failed thresholds.
The functions are pure (dict in, text out) so the screen only draws.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

ROWS = (  # label, key in report["parent"] / report["quantized"], format
    ("size on disk (MB)", "size_mb", "{:,.2f}"),
    ("memory loaded (MB)", "memory_mb", "{:,.2f}"),
    ("load time (s)", "load_s", "{:.3f}"),
    ("time to 1st token (ms)", "ttft_ms", "{:,.1f}"),
    ("decode (tok/s)", "decode_tok_s", "{:,.1f}"),
    ("perplexity", "ppl", "{:.4f}"),
)

PHASES = {  # (type, phase) -> what the job is doing, with the event's fields
    ("quantize", "merged"): "merged the adapter into {base}",
    ("quantize", "load_parent"): "loading the parent {model}",
    ("quantize", "quantize"): "quantizing ({method} on {device})",
    ("quantize", "saved"): "saved the artifact: {size_mb} MB in {seconds} s",
    ("gate", "distributions"): "gate: perplexity, KL and top-1 on {texts} texts",
    ("gate", "generation"): "gate: greedy generations on {prompts} prompts",
    ("gate", "done"): "gate: {verdict}",
}
FIELDS = ("base", "model", "method", "device", "size_mb", "seconds", "texts", "prompts")
STEPS = ("load_parent", "quantize", "saved", "distributions", "generation", "done")


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def phase_line(events: list[dict], state: str = "running") -> str:
    """``step 3/6 · saved the artifact: 0.2 MB in 0.4 s`` from a job's events."""
    last = None
    for event in events:
        key = (event.get("type"), event.get("phase"))
        if key in PHASES:
            last = (key, event)
    if last is None:
        return f"{state}: waiting for the first event" if state in ("queued", "running") else state
    (kind, phase), event = last
    fields = {k: event.get(k, "?") for k in FIELDS}
    fields["verdict"] = {True: "passed", False: "FAILED"}.get(event.get("passed"), "measured")
    try:
        text = PHASES[(kind, phase)].format(**fields)
    except (KeyError, IndexError, ValueError):
        text = f"{kind}: {phase}"
    step = STEPS.index(phase) + 1 if phase in STEPS else None
    head = f"step {step}/{len(STEPS)} · " if step and state in ("queued", "running") else ""
    return f"{head}{text}"


def report_text(report: dict, ref: str = "") -> str:
    """The report as aligned plain text (monospace), the verdict first."""
    parent, quant = report.get("parent") or {}, report.get("quantized") or {}
    passed = bool(report.get("passed"))
    lines = [f"Gate: {'PASSED' if passed else 'FAILED'}"]
    for failure in report.get("failures") or []:
        lines.append(f"  ✗ {failure}")
    what = f"{report.get('method', '?')} of {parent.get('label') or '?'}"
    if ref:
        what += f" → {ref}"
    lines += [what, "", f"{'':24}{'parent':>14}{'quantized':>14}"]
    for label, key, fmt in ROWS:
        lines.append(f"{label:24}{_fmt(parent.get(key), fmt):>14}{_fmt(quant.get(key), fmt):>14}")
    inc = report.get("ppl_increase")
    lines += [
        "",
        f"perplexity increase     {'-' if inc is None else f'{100 * inc:+.2f}%'}"
        f" on {report.get('scored_tokens', '?')} tokens ({report.get('data', '?')})",
        f"mean KL(parent‖quant)   {_fmt(report.get('mean_kl'), '{:.3g}')} per token",
        f"top-1 agreement         {_pct(report.get('top1_agreement'))}",
        f"exact match             {_pct(report.get('exact_match'))} of {report.get('prompts', '?')} greedy generations",
        f"size ×{_fmt(report.get('size_ratio'), '{:.3f}')} · memory ×{_fmt(report.get('memory_ratio'), '{:.3f}')}"
        f" · decode speed ×{_fmt(report.get('speedup'), '{:.2f}')}",
    ]
    limits = {k: v for k, v in (report.get("thresholds") or {}).items() if v is not None}
    if limits:
        lines.append("thresholds: " + ", ".join(f"gate.{k}={v}" for k, v in limits.items()))
    return "\n".join(lines)


class QuantReport(Static):
    """Shows one report, or a message (no report yet, the job's progress, an error)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.report: dict | None = None
        self.text = ""

    def show_report(self, report: dict, ref: str = "") -> None:
        self.report = report
        self.text = report_text(report, ref)
        self.set_class(bool(report.get("passed")), "-passed")
        self.set_class(not report.get("passed"), "-failed")
        self.update(Content(self.text))

    def show_message(self, text: str) -> None:
        self.report = None
        self.text = text
        self.remove_class("-passed", "-failed")
        self.update(Content(text))
