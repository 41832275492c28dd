"""``tuneterm chat --compare REF,REF,... "PROMPT"``: the same prompt to several models, timed.

Local references are loaded once into an in-process OpenAI-compatible server on 127.0.0.1
(a base, its adapters and few-shot references over them share weights and are decoded in one
batch, as in ``tuneterm serve``), so every model, local or remote, streams through the same
client and the timings compare like with like.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from tuneterm.core.errors import TunetermError, UsageError


def split_refs(text: str) -> list[str]:
    refs = [r.strip() for r in text.split(",") if r.strip()]
    if len(refs) < 1:
        raise UsageError("--compare needs at least one model reference", [("given", text)],
                         "tuneterm chat --compare smollm2-135m-instruct,job:ID \"PROMPT\"")
    if len(set(refs)) != len(refs):
        raise UsageError("a model is listed twice in --compare", [("given", text)])
    return refs


def _all_refs(text: str) -> bool:
    from tuneterm.core import modelref

    try:
        return all(modelref.parse(r) for r in split_refs(text))
    except TunetermError:
        return False


def default_refs(args: argparse.Namespace) -> list[str]:
    """No models given: the base, the newest tuned job over it and its newest quantized artifact."""
    from tuneterm.core.chat_lineup import default_lineup

    lineup = default_lineup()
    if not args.json:
        print(f"comparing {lineup.describe()}", file=sys.stderr, flush=True)
    return list(lineup.refs)


def trained_prompts(args: argparse.Namespace, refs: list[str]) -> dict:
    """ref -> the TrainedPrompt its column uses (none when --system is given); each one is announced."""
    if args.system is not None:
        return {}
    from tuneterm.core.trained_prompt import for_ref

    found = {r: for_ref(r) for r in refs}
    for r, trained in found.items():
        if trained is not None:
            print(f"{r}: {trained.announce()}", file=sys.stderr, flush=True)
    return {r: t for r, t in found.items() if t is not None}


def run_compare(args: argparse.Namespace, prompt: str | None) -> int:
    from tuneterm.commands.chat import generation_params
    from tuneterm.core import chat_client, modelref

    given = args.compare or ""
    if given and not prompt and not _all_refs(given):  # `chat --compare "PROMPT"`: no models, one prompt
        given, prompt = "", given
    if not prompt:
        raise UsageError("--compare needs a prompt", hint='tuneterm chat --compare REF,REF "PROMPT"')
    refs = split_refs(given) if given else default_refs(args)
    params = generation_params(args).to_dict()
    for r in refs:
        modelref.parse(r)  # fail fast on a bad reference
    # local ones (few-shot references over local models too) go through one in-process server
    local = [r for r in refs if not chat_client.is_remote(r)]
    trained = trained_prompts(args, refs)
    scores = latest_scores(refs)

    def messages_for(ref: str) -> list[dict]:
        """The same conversation for every column, with each column's own trained system prompt."""
        system = trained[ref].text if ref in trained else args.system
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    server, routes, labels, load_s = start_local(refs, local, args)
    for v in (getattr(server, "variants", {}) or {}).values():  # the columns' system prompts are chosen here
        v.trained = None  # (--system '' included)
    results: dict[str, dict] = {}

    def ask(ref: str, echo: bool) -> None:
        stats = chat_client.ChatStats()
        pieces: list[str] = []
        error = None
        try:
            for piece in chat_client.stream_chat(routes[ref], messages_for(ref), params, stats):
                pieces.append(piece)
                if echo:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
        except TunetermError as err:
            error = err.render()
        results[ref] = {"model": ref, "text": "".join(pieces), "error": error,
                        "prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
                        "ttft_ms": round((stats.ttft_s or 0) * 1000, 1), "tokens_per_s": round(stats.tokens_per_s, 2),
                        "total_s": round(stats.total_s, 3), "finish_reason": stats.finish_reason,
                        "engine": labels.get(ref),
                        "system_prompt_from": trained[ref].job_id if ref in trained else None,
                        "scores": [s.to_dict() for s in scores.get(ref, [])]}

    wall_start = time.perf_counter()
    try:
        if args.parallel:
            threads = [threading.Thread(target=ask, args=(r, False), daemon=True) for r in refs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if not args.json:
                for r in refs:
                    _header(r, labels, scores)
                    print(results[r]["error"] or results[r]["text"])
        else:
            for r in refs:
                if not args.json:
                    _header(r, labels, scores)
                ask(r, echo=not args.json)
                if not args.json:
                    print(results[r]["error"] or "")
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    wall = time.perf_counter() - wall_start
    rows = [results[r] for r in refs]
    total_tokens = sum(row["completion_tokens"] for row in rows)
    if args.json:
        print(json.dumps({"prompt": prompt, "parallel": bool(args.parallel), "params": params,
                          "load_s": round(load_s, 3), "wall_s": round(wall, 3),
                          "combined_tokens_per_s": round(total_tokens / wall, 2) if wall > 0 else 0.0,
                          "results": rows}))
    else:
        width = max(len(r) for r in refs)
        print(f"\n{'model':<{width}}  {'ttft ms':>8}  {'tok/s':>7}  {'tokens':>6}  {'total s':>7}")
        for row in rows:
            status = "  error" if row["error"] else ""
            print(f"{row['model']:<{width}}  {row['ttft_ms']:>8.0f}  {row['tokens_per_s']:>7.1f}  "
                  f"{row['completion_tokens']:>6}  {row['total_s']:>7.2f}{status}")
        print(f"{'parallel' if args.parallel else 'one after another'}: {wall:.2f} s wall, "
              f"{total_tokens / wall if wall > 0 else 0:.1f} tok/s combined")
    if any(row["error"] for row in rows):
        for row in rows:
            if row["error"]:
                print(row["error"], file=sys.stderr)
        return 1
    return 0


def latest_scores(refs: list[str]) -> dict:
    """ref -> its latest eval scores (the paired difference against the first model), as Chat's headers
    show them; nothing when the workspace has no report that names it."""
    from tuneterm.core.evals.latest import latest_scores as read

    try:
        return {c.ref: c.scores for c in read(refs)}
    except (OSError, TunetermError):
        return {}


def _header(ref: str, labels: dict[str, str], scores: dict) -> None:
    print(f"── {_title(ref, labels)} ──")
    for s in scores.get(ref, [])[:2]:
        print("   " + "  ".join(s.lines()))
    sys.stdout.flush()


def start_local(refs: list[str], local: list[str], args: argparse.Namespace):
    """Serve the ``local`` references in process: (server or None, routes for every ref, engine labels, load s)."""
    server = None
    load_s = 0.0
    routes = {r: r for r in refs}
    labels: dict[str, str] = {}  # which engine runs each local column (llama.cpp, quant type, file size)
    if local:
        if not args.json:
            print(f"loading {', '.join(local)}…", file=sys.stderr, flush=True)
        from tuneterm.core.generation import apply_inference_thread_env

        apply_inference_thread_env()  # before torch loads: idle OpenMP threads sleep instead of spinning
        from tuneterm.workers.server import make_server, serve_in_thread

        started = time.perf_counter()
        server = make_server(local, port=0, dtype=getattr(args, "dtype", None), device=getattr(args, "device", None))
        load_s = time.perf_counter() - started
        serve_in_thread(server)
        routes.update({r: f"{server.url}#{r}" for r in local})
        variants = getattr(server, "variants", {}) or {}
        labels.update({r: variants[r].label() for r in local if r in variants and hasattr(variants[r], "label")})
    return server, routes, labels, load_s


def _title(ref: str, labels: dict[str, str]) -> str:
    return f"{ref}  [{labels[ref]}]" if labels.get(ref) else ref
