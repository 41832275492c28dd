"""Dataset statistics, streamed: tokens per example with the target model's tokenizer, a
length histogram against a cutoff (how many examples would be truncated), messages per
example, the label distribution of classification data, and duplicates.

Memory: 4 bytes per example for the token counts (an ``array``), 8 per distinct example for
duplicate detection; nothing else grows with the file.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from tuneterm.core.datasets import formats
from tuneterm.core.datasets.containers import row_estimate
from tuneterm.core.datasets.labels import LabelTally
from tuneterm.core.datasets.tokens import TokenCounter, counter_for, loading_text
from tuneterm.core.datasets.rules import problem
from tuneterm.core.datasets.validate import ValidationReport, Validator, example_digest

if TYPE_CHECKING:
    from tuneterm.core.progress_line import ProgressLine


def _percentile(sorted_values: array, q: float) -> int:
    if not sorted_values:
        return 0
    k = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return int(sorted_values[k])


def histogram(values: array, cutoff: int | None, bins: int = 12) -> list[dict]:
    """Equal-width bins from 0 to max(values, cutoff); each with lo (inclusive), hi (exclusive), count."""
    if not values:
        return []
    biggest = max(values)
    # Show the cutoff only when it is near the data; a 64k limit would squash 80-token examples into one bar.
    top = (max(biggest, cutoff) if cutoff is not None and cutoff <= 2 * biggest else biggest) + 1
    width = max(1, math.ceil(top / bins))
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, v // width)] += 1
    return [{"lo": i * width, "hi": (i + 1) * width, "count": c,
             "over_cutoff": bool(cutoff is not None and (i + 1) * width > cutoff)} for i, c in enumerate(counts)]


def _messages_of(ex: dict) -> list:
    if "messages" in ex:
        msgs = ex.get("messages")
    else:
        inp = ex.get("input") if isinstance(ex.get("input"), dict) else {}
        msgs = inp.get("messages")
    return msgs if isinstance(msgs, list) else []


def compute(examples: Iterable[dict], counter: TokenCounter | None, cutoff: int | None = None,
            bins: int = 12, per_example: bool = False) -> dict:
    """Stats of a stream of canonical examples (``counter=None`` skips token counts)."""
    return _compute(((ex, None, None, "line") for ex in examples), counter, cutoff, bins, per_example)


def _compute(items: Iterable[tuple[dict, bytes | None, int | None, str]], counter: TokenCounter | None,
             cutoff: int | None, bins: int = 12, per_example: bool = False, batch: int = 512,
             on_over: Callable[[int | None, str, int], None] | None = None) -> dict:
    """``items``: (example, digest or None, line, unit). ``on_over(line, unit, n)`` hears of each
    example longer than the cutoff."""
    lengths = array("I")
    n_messages: Counter[int] = Counter()
    roles: Counter[str] = Counter()
    labels = LabelTally()
    seen: set[bytes] = set()
    dup_examples = 0
    with_tools = weight_zero = n = 0
    buf: list[dict] = []
    where: list[tuple[int | None, str]] = []
    cut = cutoff if cutoff is not None else (counter.limit if counter is not None else None)

    # Tokenizers run in C/Rust without the GIL: count one batch in a worker thread while this
    # thread parses and validates the next (at most two batches in flight, results in order).
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokens") if counter is not None else None
    pending: deque = deque()

    def collect(until: int) -> None:
        while len(pending) > until:
            future, places = pending.popleft()
            counts = future.result()
            lengths.extend(counts)
            if on_over is not None and cut is not None:
                for (line, unit), k in zip(places, counts):
                    if k > cut:
                        on_over(line, unit, k)

    def flush() -> None:
        if pool is not None and buf:
            pending.append((pool.submit(counter.count_many, list(buf)), list(where)))
            collect(until=2)
        buf.clear()
        where.clear()

    try:
        for ex, digest, line, unit in items:
            n += 1
            msgs = _messages_of(ex)
            n_messages[len(msgs)] += 1
            for m in msgs:
                if isinstance(m, dict):
                    roles[str(m.get("role"))] += 1
                    if m.get("weight") == 0:
                        weight_zero += 1
            if ex.get("tools") or (isinstance(ex.get("input"), dict) and ex["input"].get("tools")):
                with_tools += 1
            labels.add(ex)
            d = digest if digest is not None else example_digest(ex)
            if d in seen:
                dup_examples += 1
            else:
                seen.add(d)
            if counter is not None:
                buf.append(ex)
                where.append((line, unit))
                if len(buf) >= batch:
                    flush()
        flush()
        collect(until=0)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    result: dict = {
        "n_examples": n,
        "messages_per_example": {
            "min": min(n_messages) if n_messages else 0, "max": max(n_messages) if n_messages else 0,
            "mean": round(sum(k * v for k, v in n_messages.items()) / n, 2) if n else 0.0,
            "distribution": {str(k): v for k, v in sorted(n_messages.items())},
        },
        "roles": dict(sorted(roles.items())),
        "examples_with_tools": with_tools,
        "assistant_messages_weight_0": weight_zero,
        "labels": labels.distribution(),
        "duplicates": {"duplicate_examples": dup_examples, "distinct_examples": len(seen)},
    }
    if counter is not None:
        ordered = array("I", sorted(lengths))
        over = [v for v in lengths if cut is not None and v > cut]
        result["tokens"] = {
            "tokenizer": counter.name, "model": counter.model, "total": int(sum(lengths)),
            "min": int(ordered[0]) if ordered else 0, "max": int(ordered[-1]) if ordered else 0,
            "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
            "p10": _percentile(ordered, 10), "p50": _percentile(ordered, 50),
            "p90": _percentile(ordered, 90), "p95": _percentile(ordered, 95), "p99": _percentile(ordered, 99),
            "cutoff": cut, "truncated": len(over), "tokens_lost": int(sum(v - cut for v in over)) if over else 0,
            "histogram": histogram(lengths, cut, bins),
        }
        if per_example:
            result["tokens"]["per_example"] = list(lengths)
    return result


def analyze_file(path: str | Path, model: str | None = None, cutoff: int | None = None, fmt: str | None = None,
                 mapping: dict | None = None, tokens: bool = True, per_example: bool = False,
                 keep: int = 200, progress: ProgressLine | None = None) -> tuple[ValidationReport, dict]:
    """Validate and measure a file in one streaming pass: (validation report, stats of its valid examples).

    With an explicit ``model``, examples over its token limit are reported as ``over_token_limit``
    (counted once, with the same tokenizer as the stats). ``progress`` hears of the tokenizer's load
    (a note) and of every row read (the pass that counts tokens), against the file's rows when a
    byte scan tells them (JSONL, CSV/TSV).
    """
    path = Path(path)
    form = formats.detect(path, fmt, mapping)
    validator = Validator(str(path), fmt=str(form), keep=keep)
    if tokens and progress is not None and loading_text(model):
        progress.note(loading_text(model))
    counter = counter_for(model) if tokens else None
    report = validator.report
    if counter is not None and model:
        report.model, report.tokenizer, report.token_limit = model, counter.name, counter.limit
        validator.openai = counter.is_openai
    skipped = read = 0
    if progress is not None:
        progress.start("counting tokens" if counter is not None else "reading", row_estimate(path, form.container))

    def good():
        nonlocal skipped, read
        for rec in formats.iter_records(path, form, mapping):
            if progress is not None:
                read += 1
                progress.update(read)
            found = validator.feed(rec)
            if any(p.severity == "error" for p in found):
                skipped += 1
            elif rec.example is not None:
                yield rec.example, validator.last_digest, rec.line, rec.unit

    def over(line: int | None, unit: str, n: int) -> None:
        validator._record(problem(str(path), line, "over_token_limit",
                                  f"{n:,} tokens, the limit for {counter.model} is {counter.limit:,}", unit=unit))
        report.n_valid -= 1

    limit_check = over if (counter is not None and model and counter.limit and cutoff is None) else None
    try:
        result = _compute(good(), counter, cutoff, per_example=per_example, on_over=limit_check)
    except BaseException:
        if progress is not None:
            progress.end()  # the error follows on a line of its own
        raise
    if progress is not None:
        progress.close()
    result["file"] = str(path)
    result["format"] = str(form)
    result["skipped_invalid"] = skipped
    report = validator.finish(path.stat().st_size if path.is_file() else None)
    result["validation"] = {"status": report.status, "errors": report.n_errors, "warnings": report.n_warnings,
                            "counts": dict(sorted(report.counts.items()))}
    return report, result


def stats_file(path: str | Path, model: str | None = None, cutoff: int | None = None, fmt: str | None = None,
               mapping: dict | None = None, tokens: bool = True, per_example: bool = False,
               progress: ProgressLine | None = None) -> dict:
    """Stats of a file's valid examples; rows with validation errors are counted as ``skipped_invalid``."""
    return analyze_file(path, model, cutoff, fmt, mapping, tokens, per_example, keep=0, progress=progress)[1]


def render_histogram(hist: list[dict], cutoff: int | None, width: int = 40) -> list[str]:
    """Text bars; bins past the cutoff are marked with '!'."""
    if not hist:
        return []
    peak = max(b["count"] for b in hist) or 1
    lines = []
    for b in hist:
        bar = "#" * max(1 if b["count"] else 0, round(b["count"] / peak * width))
        mark = "!" if b["over_cutoff"] else " "
        lines.append(f"  {b['lo']:>7,}-{b['hi'] - 1:<7,} {mark} {b['count']:>7,} {bar}")
    return lines
