"""Run eval tasks over variants: items -> cached or computed raw results -> scores -> report.

Local variants are grouped by the model they load (a base and its adapters share one copy);
remote ones (``openai:``, ``http://``) go through ``tuneterm.core.chat_client``. Raw results
are cached per item (see ``tuneterm.core.evals.cache``) and committed batch by batch, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneterm.core.errors import EXIT_INTERRUPTED, TunetermError
from tuneterm.core.evals import report as report_mod
from tuneterm.core.evals.cache import ResultCache, content_key
from tuneterm.core.evals.extract import extract
from tuneterm.core.evals.metrics import check_metrics
from tuneterm.core.evals.items import EvalItem, build_items, classifier_text, with_fewshot
from tuneterm.core.evals.spec import TaskSpec
from tuneterm.core.evals.variants import EvalVariant
from tuneterm.core.workspace import workspace
from tuneterm.workers.evals import scoring
from tuneterm.workers.evals.progress import ProgressBar


PARTIAL_EVERY_S = 2.0  # an ``eval_progress`` event with a running batch's ``partial`` rows, at most this often


class EvalStopped(TunetermError):
    exit_code = EXIT_INTERRUPTED


@dataclass
class RunOptions:
    out_dir: Path | None = None
    limit: int | None = None
    batch_size: int = 16
    baseline: str | None = None
    progress: bool | None = None  # None: on when stderr is a terminal
    cache_path: Path | None = None
    use_cache: bool = True
    dtype: str | None = None
    device: str | None = None
    share_prefix: bool = True  # reuse the key/value cache of a prefix all prompts of a batch share
    should_stop: Callable[[], bool] = lambda: False
    on_event: Callable[..., None] = lambda **kw: None


@dataclass
class Outcome:
    """Raw results of one (task, variant): one record per item, in item order."""

    records: list[dict]
    items: list[EvalItem]
    fingerprint: dict
    speed: dict = field(default_factory=dict)
    skipped: str | None = None


def assign_parents(variants: list[EvalVariant], local: dict[str, Any], baseline: str | None) -> None:
    """Each variant's comparison target: --baseline, else its lineage parent (base of an adapter, source of a
    quantized model, base of a classifier, REF of fewshot:K:POOL@REF), else the first variant that has no parent in the list."""
    by_vid = {v.vid: v for v in variants}
    if baseline and baseline not in by_vid:
        from tuneterm.core.errors import UsageError

        raise UsageError("--baseline must be one of --models", [("baseline", baseline), ("models", ", ".join(by_vid))])
    if baseline:
        for v in variants:
            v.parent = baseline if v.vid != baseline else None
        return
    lineage: dict[str, str | None] = {}
    for v in variants:
        parent = None
        if v.fewshot is not None:
            parent = next((o.vid for o in variants if o.ref == v.ref and o.fewshot is None), None)
        lv = local.get(v.vid)
        if parent is None and lv is not None:
            if lv.adapter_path is not None:
                parent = next((o.vid for o in variants if o.fewshot is None and o.vid in local
                               and local[o.vid].adapter_path is None and not local[o.vid].quant
                               and local[o.vid].classifier_path is None
                               and local[o.vid].base_path == lv.base_path), None)
            elif (lv.quant or lv.classifier_path is not None) and lv.facts.get("base"):
                parent = next((o.vid for o in variants if o.ref == lv.facts["base"] and o.fewshot is None), None)
        lineage[v.vid] = parent if parent != v.vid else None
    roots = [v.vid for v in variants if lineage[v.vid] is None]
    for v in variants:
        # a variant without a parent in the list is compared with the first such root
        v.parent = lineage[v.vid] or (roots[0] if roots and roots[0] != v.vid else None)


def run_eval(tasks: list[TaskSpec], variants: list[EvalVariant], opts: RunOptions) -> dict:
    """Run everything and write the report; returns the report dict."""
    started = time.time()
    outcomes, fingerprints = collect(tasks, variants, opts)
    return finish(tasks, variants, outcomes, fingerprints, opts, started)


def collect(tasks: list[TaskSpec], variants: list[EvalVariant], opts: RunOptions) -> tuple[dict, dict]:
    """Raw per-item results: ({task: {vid: Outcome}}, {vid: fingerprint})."""
    # 1. Everything that can fail on input fails now, before a model loads.
    for spec in tasks:
        check_metrics(spec)
    items = build_variant_items(tasks, variants, opts.limit)
    from tuneterm.workers.evals.backend import LocalGroup, peak_memory_bytes, reset_peak_memory, resolve_local

    local = {v.vid: resolve_local(v.vid, v.ref) for v in variants if not v.remote}
    for v in variants:
        if v.fewshot is not None and v.vid in local and local[v.vid].classifier_path is not None:
            from tuneterm.core.errors import UsageError

            raise UsageError("a few-shot variant needs a generative model, not a classifier",
                             [("model", v.vid)], "use the classifier on its own: --models job:ID")
    assign_parents(variants, local, opts.baseline)
    total = sum(len(items[(spec.name, v.items_key)]) for spec in tasks for v in variants)
    opts.on_event(type="eval_plan", tasks=[spec.name for spec in tasks], variants=[v.vid for v in variants],
                  total=total)
    ws = workspace()
    cache = ResultCache(opts.cache_path or ws.evals_dir / "cache.sqlite") if opts.use_cache else None
    show = sys.stderr.isatty() if opts.progress is None else opts.progress
    outcomes: dict[str, dict[str, Outcome]] = {spec.name: {} for spec in tasks}
    fingerprints: dict[str, dict] = {}
    try:
        groups: dict[str, list] = {}
        for v in variants:
            if v.vid in local:
                groups.setdefault(local[v.vid].group, []).append(local[v.vid])
        for members in groups.values():
            reset_peak_memory()
            if members[0].facts.get("gguf_file"):  # a GGUF file run by llama.cpp
                from tuneterm.workers.llamacpp_eval import LlamaCppGroup

                group = LlamaCppGroup(members, dtype=opts.dtype, device=opts.device)
            else:
                group = LocalGroup(members, dtype=opts.dtype, device=opts.device, share_prefix=opts.share_prefix)
            try:
                for lv in members:
                    fp = group.fingerprint(lv.vid)
                    fp["load_s"] = round(group.load_seconds, 3)
                    fingerprints[lv.vid] = fp
                    v = next(x for x in variants if x.vid == lv.vid)
                    with group.activate(lv.vid):
                        for spec in tasks:
                            its = items[(spec.name, v.items_key)]
                            bar = _bar(spec, v, its, show, opts)
                            out = _run_local(group, v, spec, its, fp, cache, opts, bar)
                            bar.close()
                            out.speed["peak_memory_bytes"] = peak_memory_bytes()
                            outcomes[spec.name][v.vid] = out
                            opts.on_event(type="eval_task", task=spec.name, variant=v.vid, n=len(its))
            finally:
                group.close()
        for v in variants:
            if v.remote:
                fp = {"id": content_key(remote=v.ref), "remote": v.ref, "size_bytes": None}
                fingerprints[v.vid] = fp
                for spec in tasks:
                    its = items[(spec.name, v.items_key)]
                    bar = _bar(spec, v, its, show, opts)
                    outcomes[spec.name][v.vid] = _run_remote(v, spec, its, fp, cache, opts, bar)
                    bar.close()
    finally:
        if cache is not None:
            cache.close()
    return outcomes, fingerprints


def build_variant_items(tasks: list[TaskSpec], variants: list[EvalVariant], limit: int | None) -> dict:
    """{(task, variant.items_key): items}; a few-shot variant's examples replace the task's own."""
    from tuneterm.core.fewshot import load_pool

    items: dict[tuple[str, str], list[EvalItem]] = {}
    pools: dict[str, list] = {}
    for spec in tasks:
        for v in variants:
            key = (spec.name, v.items_key)
            if key in items:
                continue
            if v.fewshot is None:
                items[key] = build_items(spec, limit=limit)
                continue
            if v.fewshot.pool not in pools:
                pools[v.fewshot.pool] = load_pool(v.fewshot.pool)
            items[key] = with_fewshot(spec, build_items(spec, limit=limit, shots=0), v.fewshot,
                                      pools[v.fewshot.pool])
    return items


def _bar(spec: TaskSpec, v: EvalVariant, its: list[EvalItem], show: bool, opts: RunOptions) -> ProgressBar:
    def report(done: int, total: int) -> None:
        opts.on_event(type="eval_progress", task=spec.name, variant=v.vid, done=done, total=total)

    return ProgressBar(f"{spec.name} · {v.vid}", len(its), show, on_change=report)


# --- local -----------------------------------------------------------------------------------------


def _key(fp: dict, spec: TaskSpec, item: EvalItem, prompt: str, extra: dict) -> str:
    return content_key(model=fp["id"], task=spec.name, version=spec.version, type=spec.type,
                       item=item.id, prompt=prompt, **extra)


def _kind(v: EvalVariant, fp: dict) -> str:
    if v.fewshot is not None:
        return "fewshot"
    if v.remote:
        return "remote"
    return str(fp.get("kind") or "model")


def _commit(cache: ResultCache | None, keys: list[str], spec: TaskSpec, v: EvalVariant, its: list[EvalItem],
            records: list, done: list[int], bar: ProgressBar, opts: RunOptions, told: int = 0) -> None:
    """Store finished records in the cache, advance the bar (less the ``told`` rows it already moved
    for while the batch ran), stop between batches when asked."""
    if cache is not None and done:
        cache.put_many([(keys[i], spec.name, v.vid, its[i].id, records[i]) for i in done])
    bar.advance(max(0, len(done) - told))
    if opts.should_stop():
        raise EvalStopped("eval stopped", [("task", spec.name), ("variant", v.vid)],
                          "run the same command again to resume from the cache")


def _run_classifier(group, v: EvalVariant, spec: TaskSpec, its: list[EvalItem], fp: dict,
                    cache: ResultCache | None, opts: RunOptions, bar: ProgressBar) -> Outcome:
    """A classifier artifact answers a generate task with its predicted label (the output)."""
    if spec.type != "generate":
        bar.advance(len(its))
        return Outcome([None] * len(its), its, fp, {},
                       skipped=f"a classifier answers generate (classification) tasks, not {spec.type}")
    texts = [classifier_text(it) for it in its]
    keys = [_key(fp, spec, it, t, {"classifier": True}) for it, t in zip(its, texts)]
    hits = cache.get_many(keys) if cache is not None else {}
    records: list[dict | None] = [({**hits[k], "cached": True} if k in hits else None) for k in keys]
    bar.advance(sum(1 for r in records if r is not None))
    todo = [i for i, r in enumerate(records) if r is None]
    t0 = time.perf_counter()
    for start in range(0, len(todo), opts.batch_size):
        chunk = todo[start : start + opts.batch_size]
        t1 = time.perf_counter()
        labels = group.classify(v.vid, [texts[i] for i in chunk], opts.batch_size)
        latency = round(time.perf_counter() - t1, 4)
        for i, label in zip(chunk, labels):
            records[i] = {"output": label, "prompt": texts[i], "prompt_tokens": 0, "completion_tokens": 0,
                          "latency_s": latency}
        _commit(cache, keys, spec, v, its, records, chunk, bar, opts)
    return Outcome(records, its, fp, _speed(records, todo, time.perf_counter() - t0, spec))


def _run_local(group, v: EvalVariant, spec: TaskSpec, its: list[EvalItem], fp: dict, cache: ResultCache | None,
               opts: RunOptions, bar: ProgressBar) -> Outcome:
    if group.is_classifier(v.vid):
        return _run_classifier(group, v, spec, its, fp, cache, opts, bar)
    records: list[dict | None] = [None] * len(its)
    gen = spec.generation.model_dump()
    if spec.type == "perplexity":
        prompts = [it.text for it in its]
        keys = [_key(fp, spec, it, it.text, {"score": "rolling"}) for it in its]
    elif spec.type == "choice":
        prompts = [group.render_prompt(it.prompt_view()) for it in its]
        keys = [_key(fp, spec, it, p, {"choices": it.choices, "delimiter": spec.target_delimiter})
                for it, p in zip(its, prompts)]
    else:
        prompts = [group.render_prompt(it.prompt_view()) for it in its]
        keys = [_key(fp, spec, it, p, {"generation": gen}) for it, p in zip(its, prompts)]
    hits = cache.get_many(keys) if cache is not None else {}
    for i, k in enumerate(keys):
        if k in hits:
            records[i] = {**hits[k], "cached": True}
    bar.advance(sum(1 for r in records if r is not None))
    todo = [i for i, r in enumerate(records) if r is None]
    t0 = time.perf_counter()

    def store(done: list[int], told: int = 0) -> None:
        _commit(cache, keys, spec, v, its, records, done, bar, opts, told)

    if todo and spec.type == "generate":
        told = [0]  # rows of the running batch the bar has moved for already
        batch = [min(opts.batch_size, len(todo))]  # rows in the running batch
        shown = [time.monotonic()]

        def on_step(finished: int, step: int, steps: int) -> None:
            # inside a batch: finished rows move the count (and the job's events) now, and the tokens
            # made so far move the terminal bar, its ETA and, every few seconds, the job's ETA
            told[0] += finished
            if finished:
                bar.advance(finished)
            bar.working((batch[0] - told[0]) * step / max(1, steps), f"token {step}/{steps}")
            if time.monotonic() - shown[0] >= PARTIAL_EVERY_S:
                shown[0] = time.monotonic()
                opts.on_event(type="eval_progress", task=spec.name, variant=v.vid, done=bar.done, total=bar.total,
                              partial=round(bar.partial, 3))

        def on_gen(idx: list[int], results: list[dict]) -> None:
            done = []
            for j, res in zip(idx, results):
                i = todo[j]
                records[i] = {**res, "prompt": prompts[i]}
                done.append(i)
            bar.working(0.0)
            store(done, told[0])
            told[0] = 0
            left = len(todo) - sum(1 for i in todo if records[i] is not None)
            batch[0] = min(opts.batch_size, left)

        group.generate([prompts[i] for i in todo], gen, opts.batch_size, on_gen, on_step)
    elif todo:
        requests, owner = [], []
        for i in todo:
            if spec.type == "choice":
                reqs = [group.encode_pair(prompts[i], spec.target_delimiter + c) for c in its[i].choices]
            else:
                reqs = group.rolling_requests(prompts[i])
            for r in reqs:
                requests.append(r)
                owner.append(i)
            records[i] = {"_pending": len(reqs), "_parts": [None] * len(reqs), "prompt": prompts[i]}
        slot, seen = [], {}
        for o in owner:
            slot.append(seen.get(o, 0))
            seen[o] = seen.get(o, 0) + 1

        def on_ll(idx: list[int], results: list[dict]) -> None:
            done = []
            for j, res in zip(idx, results):
                rec = records[owner[j]]
                rec["_parts"][slot[j]] = res
                rec["_pending"] -= 1
                if rec["_pending"] == 0:
                    records[owner[j]] = _finish_ll(spec, rec)
                    done.append(owner[j])
            store(done)

        group.loglikelihood(requests, opts.batch_size, on_ll)
    elapsed = time.perf_counter() - t0
    return Outcome([r for r in records], its, fp, _speed(records, todo, elapsed, spec))


def _finish_ll(spec: TaskSpec, rec: dict) -> dict:
    parts = rec["_parts"]
    latency = max((p["latency_s"] for p in parts), default=0.0)
    if spec.type == "choice":
        return {"prompt": rec["prompt"], "logprobs": [p["logprob"] for p in parts],
                "greedy": [p["greedy"] for p in parts], "tokens": [p["tokens"] for p in parts],
                "latency_s": latency}
    return {"prompt": rec["prompt"], "nll": -sum(p["logprob"] for p in parts),
            "tokens": sum(p["tokens"] for p in parts), "latency_s": latency}


def _speed(records: list, fresh: list[int], elapsed: float, spec: TaskSpec) -> dict:
    lat = sorted(float(r.get("latency_s", 0.0)) for r in records if r)
    fresh_recs = [records[i] for i in fresh]
    if spec.type == "generate":
        toks = sum(r.get("completion_tokens", 0) for r in fresh_recs)
    else:
        toks = sum(sum(r["tokens"]) if isinstance(r["tokens"], list) else r["tokens"] for r in fresh_recs)
    return {
        "computed": len(fresh), "cached": len(records) - len(fresh), "seconds": round(elapsed, 3),
        "tokens_per_s": round(toks / elapsed, 2) if fresh and elapsed > 0 else None,
        "items_per_s": round(len(fresh) / elapsed, 3) if fresh and elapsed > 0 else None,
        "latency_p50_s": _pct(lat, 0.5), "latency_p95_s": _pct(lat, 0.95),
    }


def _pct(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    return round(sorted_vals[min(len(sorted_vals) - 1, int(round(q * (len(sorted_vals) - 1))))], 4)


# --- remote ------------------------------------------------------------------------------------


def _run_remote(v: EvalVariant, spec: TaskSpec, its: list[EvalItem], fp: dict, cache: ResultCache | None,
                opts: RunOptions, bar: ProgressBar) -> Outcome:
    if spec.type != "generate":
        bar.advance(len(its))
        return Outcome([None] * len(its), its, fp, {}, skipped=f"{spec.type} scoring needs log-probabilities; "
                       "chat APIs give none")
    from tuneterm.core import chat_client

    gen = spec.generation.model_dump()
    params = {"max_new_tokens": gen["max_new_tokens"], "temperature": gen["temperature"], "top_p": gen["top_p"],
              "seed": gen["seed"], "stop": gen["stop"] or None, "json_schema": gen.get("json_schema")}
    msgs = [it.messages if it.messages is not None else [{"role": "user", "content": it.context}] for it in its]
    keys = [_key(fp, spec, it, json.dumps(m, sort_keys=True), {"generation": gen}) for it, m in zip(its, msgs)]
    hits = cache.get_many(keys) if cache is not None else {}
    records: list[dict | None] = [({**hits[k], "cached": True} if k in hits else None) for k in keys]
    bar.advance(sum(1 for r in records if r is not None))
    todo = [i for i, r in enumerate(records) if r is None]
    t0 = time.perf_counter()

    def call(i: int) -> dict:
        text, st = chat_client.chat_once(v.ref, msgs[i], params)
        from tuneterm.core.evals.extract import truncate_at_stop

        return {"output": truncate_at_stop(text, gen["stop"]), "prompt": json.dumps(msgs[i], ensure_ascii=False),
                "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
                "latency_s": round(st.total_s, 4)}

    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(todo), 8):
            chunk = todo[start : start + 8]
            for i, rec in zip(chunk, pool.map(call, chunk)):
                records[i] = rec
            if cache is not None:
                cache.put_many([(keys[i], spec.name, v.vid, its[i].id, records[i]) for i in chunk])
            bar.advance(len(chunk))
            if opts.should_stop():
                raise EvalStopped("eval stopped", [("variant", v.vid)], "run again to resume from the cache")
    return Outcome(records, its, fp, _speed(records, todo, time.perf_counter() - t0, spec))


# --- scoring and report ----------------------------------------------------------------------------


def predictions(spec: TaskSpec, out: Outcome) -> tuple[list, list, list[dict]]:
    """(predictions, references, sample rows) for the metric modules."""
    preds, refs, samples = [], [], []
    for it, rec in zip(out.items, out.records):
        if rec is None:
            continue
        row: dict[str, Any] = {"id": it.id, "prompt": rec.get("prompt")}
        if spec.type == "generate":
            answer = extract(rec["output"], spec.extract)
            preds.append(answer)
            refs.append(it.target)
            row.update(output=rec["output"], extracted=answer, target=it.target)
        elif spec.type == "choice":
            lps = rec["logprobs"]
            pred = max(range(len(lps)), key=lambda k: (lps[k], -k))
            preds.append(pred)
            refs.append(it.gold)
            row.update(output=it.choices[pred], extracted=pred, target=it.gold, logprobs=[round(x, 5) for x in lps])
        else:
            preds.append(rec["nll"])
            refs.append(rec["tokens"])
            row.update(output=None, extracted=round(rec["nll"], 5), target=rec["tokens"])
        samples.append(row)
    return preds, refs, samples


def finish(tasks: list[TaskSpec], variants: list[EvalVariant], outcomes: dict, fingerprints: dict,
           opts: RunOptions, started: float) -> dict:
    task_reports = {}
    all_samples: list[dict] = []
    for spec in tasks:
        scored: dict[str, dict[str, scoring.Scored]] = {}
        ids: dict[str, list[str]] = {}
        per_variant = {}
        for v in variants:
            out = outcomes[spec.name].get(v.vid)
            if out is None or out.skipped:
                per_variant[v.vid] = {"n": 0, "skipped": out.skipped if out else "not run"}
                continue
            preds, refs, samples = predictions(spec, out)
            ids[v.vid] = [s["id"] for s in samples]
            scored[v.vid] = {}
            for m in spec.metrics:
                if m.judge:
                    from tuneterm.workers.evals.judge import judge_scores

                    s = judge_scores(m, spec, out, samples)
                else:
                    s = scoring.score(m, spec, preds, refs)
                scored[v.vid][m.name] = s
                for row, k in zip(samples, range(len(samples))):
                    if s.per_item is not None:
                        row.setdefault("scores", {})[m.name] = s.per_item[k]
            for row in samples:
                all_samples.append({"task": spec.name, "variant": v.vid, **row})
            per_variant[v.vid] = {"n": len(preds), "metrics": {name: s.interval() for name, s in scored[v.vid].items()},
                                  "speed": {**out.speed, "size_bytes": fingerprints[v.vid].get("size_bytes")}}
        duplicates = max((sum(it.duplicate_of is not None for it in out.items)
                          for out in outcomes[spec.name].values() if out is not None and not out.skipped), default=0)
        comparisons = []
        for v in variants:
            if v.parent and v.vid in scored and v.parent in scored:
                for m in spec.metrics:
                    c = scoring.compare(scored[v.parent][m.name], scored[v.vid][m.name], ids[v.parent], ids[v.vid])
                    comparisons.append({"variant": v.vid, "baseline": v.parent, **c})
        task_reports[spec.name] = {"version": spec.version, "type": spec.type, "source": spec.source,
                                   "metrics": [m.name for m in spec.metrics], "variants": per_variant,
                                   "comparisons": comparisons, "duplicate_rows": duplicates}
    report = report_mod.build_report(
        tasks=task_reports,
        variants=[{"id": v.vid, "ref": v.ref, "shots": v.shots, "parent": v.parent,
                   "kind": _kind(v, fingerprints.get(v.vid, {})),
                   "fingerprint": fingerprints.get(v.vid, {})} for v in variants],
        settings={"limit": opts.limit, "batch_size": opts.batch_size, "baseline": opts.baseline},
        started=started,
    )
    if opts.out_dir is not None:
        report_mod.write_report(Path(opts.out_dir), report, all_samples)
    from tuneterm.workers.tracking import log_eval_report, refresh_cards

    log_eval_report(report)  # a tuned job's scores join its training run, when it logged to trackers
    refresh_cards(report, Path(opts.out_dir) / "report.json" if opts.out_dir is not None else None)  # and its card
    return report
