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


def run(args: argparse.Namespace) -> int:
    import os

    from tuneterm.core.chat_client import is_remote
    from tuneterm.core.errors import UsageError
    from tuneterm.core.generation import apply_inference_thread_env

    apply_inference_thread_env()  # before torch loads: idle OpenMP threads sleep instead of spinning
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
    print(f"loading {', '.join(args.models)}…", file=sys.stderr, flush=True)
    server = make_server(args.models, host=args.host, port=args.port, api_key=api_key,
                         dtype=args.dtype, device=args.device, quiet=not args.log_requests)
    groups = {id(v.group) for v in server.variants.values()}
    print(f"tuneterm serve: {server.url}", flush=True)
    for model_id, v in server.variants.items():
        kind = f"adapter over {v.group.key}" if v.adapter else "base"
        if v.fewshot is not None:
            kind = f"{v.fewshot.k}-shot from {v.fewshot.pool}, {kind}"
        print(f"  model: {model_id}  ({kind})", flush=True)
    print(f"  {len(server.variants)} model(s) on {len(groups)} copy(ies) of base weights"
          + ("; API key required" if api_key else ""), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
