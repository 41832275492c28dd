"""``tuneterm serve MODEL_REF [MODEL_REF ...]``: an OpenAI-compatible server for local models."""

from __future__ import annotations

import argparse
import sys

ORDER = 12


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve local models over an OpenAI-compatible API",
        description=(
            "Serve local models over the OpenAI chat completions API (streaming with SSE). "
            "The model ids are the references as given; a base model, LoRA adapters over it and "
            "few-shot references (fewshot:K:POOL@REF) share one copy of the base weights, and their "
            "requests are decoded together in one batch."
        ),
        epilog="example: tuneterm serve smollm2-135m-instruct job:abc123 --port 8000\n"
        "         curl http://127.0.0.1:8000/v1/models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="+", metavar="MODEL_REF",
                   help="e.g. smollm2-135m-instruct, job:ID, ./dir, fewshot:4:POOL@job:ID")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", "-p", type=int, default=8000, help="port (0 = any free port; default 8000)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (required when the host is not loopback); "
                        "also read from $TUNETERM_API_KEY")
    p.add_argument("--dtype", default="auto", help="auto (bf16/fp16 on a GPU, float32 on the CPU), float32, bfloat16 "
                                                   "or float16")
    p.add_argument("--device", default="auto", help="auto (CUDA when visible, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--log-requests", action="store_true", help="log every request to stderr")
    p.add_argument("--max-running", type=_positive, default=None, metavar="N",
                   help="requests decoded together (default: the decode loop's batch width, 16)")
    p.add_argument("--max-waiting", type=_not_negative, default=None, metavar="M",
                   help="requests queued for a slot beyond those; more get 429 with Retry-After "
                        "(default: 4 x --max-running)")
    p.add_argument("--request-timeout", type=_positive_float, default=None, metavar="S",
                   help="end a request after S seconds (streams get a final error event, others 504; default: none)")
    p.add_argument("--read-timeout", type=_positive_float, default=30.0, metavar="S",
                   help="a request body must arrive within S seconds, or 408 (default 30)")
    p.add_argument("--keep-alive-timeout", type=_positive_float, default=5.0, metavar="S",
                   help="close an idle keep-alive connection after S seconds (default 5)")
    vllm = p.add_argument_group("vLLM as the engine (GPU boxes)")
    vllm.add_argument("--engine", choices=("tuneterm", "vllm"), default="tuneterm",
                      help="tuneterm (default: this process decodes) or vllm (vLLM's server as a child: "
                           "the base plus job:ID adapters as LoRA modules)")
    vllm.add_argument("--vllm", metavar="CMD", default=None, help="vLLM's executable (default: vllm, or $TUNETERM_VLLM)")
    vllm.add_argument("--tensor-parallel-size", type=int, default=0, metavar="N",
                      help="GPUs to shard the model over (default: every visible GPU)")
    vllm.add_argument("--ready-timeout", type=float, default=900.0, metavar="S",
                      help="seconds to wait for vLLM to load (default 900)")
    vllm.add_argument("--vllm-log", metavar="FILE", default=None, help="vLLM's log (default ./vllm-PORT.log)")
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    import os

    from tuneterm.core.chat_client import is_remote
    from tuneterm.core.errors import UsageError
    from tuneterm.core.generation import apply_serve_thread_env

    apply_serve_thread_env()  # before torch loads: brief OpenMP spinning, threads that follow the load
    for ref in args.models:
        if is_remote(ref):
            raise UsageError(f"{ref} is a remote model; serve only loads local ones", [("reference", ref)],
                             "chat with it directly: tuneterm chat " + ref + " PROMPT")
    api_key = args.api_key or os.environ.get("TUNETERM_API_KEY") or None
    if args.engine == "vllm":
        from tuneterm.workers import vllm_child

        args.api_key = api_key
        return vllm_child.serve(args)
    from tuneterm.workers.server import is_loopback, make_server

    if not is_loopback(args.host) and not api_key:  # fail before a long model load
        make_server([], host=args.host, variants={})
    import signal

    from tuneterm.workers.variants import load_variants

    server = make_server(args.models, host=args.host, port=args.port, api_key=api_key, quiet=not args.log_requests,
                         loading=True, max_running=args.max_running, max_waiting=args.max_waiting,
                         request_timeout=args.request_timeout, read_timeout=args.read_timeout,
                         keep_alive_timeout=args.keep_alive_timeout)
    print(f"tuneterm serve: {server.url} (loading {', '.join(args.models)}; GET /health is 503 until ready)",
          flush=True)

    def loaded() -> dict:
        variants = load_variants(args.models, dtype=args.dtype, device=args.device)
        _describe(variants, api_key, server.admission)
        return variants

    server.load_in_background(loaded, on_error=lambda exc: server.shutdown(timeout=0))
    # uvicorn catches SIGTERM/SIGINT, stops gracefully, then raises the signal again to the handler
    # found before it: a no-op here, so a stop is exit 0 and not a kill or a KeyboardInterrupt
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
        _close_decode_loops(server)
    if server.state.load_error is not None:
        raise server.state.load_error
    print("tuneterm serve: stopped", file=sys.stderr, flush=True)
    return 0


def _kind(v) -> str:
    """What a served model is, for the banner: an adapter over its base, a quantized model and how, a
    fine-tuned or a base model (a job's artifact is never called "base")."""
    if v.is_classifier:
        return f"{v.label()}; answers chat completions with a label"
    if v.adapter:
        return f"adapter over {v.group.key}"
    facts = v.facts or {}
    quant = facts.get("quant") or {}
    if facts.get("artifact") == "quantized" or quant:
        how = quant.get("method") or facts.get("method") or "quantized"
        parent = quant.get("parent") or facts.get("base")
        return f"quantized with {how}" + (f" from {parent}" if parent else "")
    label = v.label()
    if facts.get("artifact") == "model":
        kind = "fine-tuned" + (f" with {facts['method']}" if facts.get("method") else "")
    else:
        kind = facts.get("artifact") or "base"
    return f"{kind}, {label}" if label else kind


def _describe(variants: dict, api_key: str | None, admission) -> None:
    groups = {id(v.group) for v in variants.values()}
    for model_id, v in variants.items():
        kind = _kind(v)
        if v.fewshot is not None:
            kind = f"{v.fewshot.k}-shot from {v.fewshot.pool}, {kind}"
        print(f"  model: {model_id}  ({kind})", flush=True)
        if v.trained is not None:
            print(f"    {v.trained.announce('a request with a system message of its own overrides it')}", flush=True)
    print(f"  {len(variants)} model(s) on {len(groups)} copy(ies) of base weights; up to {admission.max_running} "
          f"decoded together, {admission.max_waiting} waiting" + ("; API key required" if api_key else ""),
          flush=True)
    print("  ready", flush=True)


def _close_decode_loops(server) -> None:
    """Stop every group's decode loop and llama.cpp worker (each group once)."""
    for group in {id(v.group): v.group for v in (server.variants or {}).values()}.values():
        group.close(timeout=5)
