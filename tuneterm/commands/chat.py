"""``tuneterm chat MODEL_REF "PROMPT"``: one turn through the model's chat template, streamed."""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="one chat turn with a model, streamed",
        description="Send one prompt through a model's chat template and stream the answer.",
    )
    p.add_argument("model", metavar="MODEL_REF", help="e.g. smollm2-135m-instruct, job:ID, ./dir, hf:ORG/NAME")
    p.add_argument("prompt", metavar="PROMPT")
    p.add_argument("--system", "-s", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", "-n", type=int, default=256)
    p.add_argument("--temperature", "-t", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object with text and timings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import modelref

    ref = modelref.parse(args.model)
    if ref.is_remote:
        from tuneterm.core.errors import UsageError

        raise UsageError(
            "chat with remote models comes with the side-by-side chat",
            [("reference", args.model)],
            "use a local model reference for now",
        )
    interactive = sys.stderr.isatty()
    if interactive:
        print(f"loading {args.model}…", file=sys.stderr, flush=True)
    from tuneterm.workers.engine import GenerationParams, GenerationStats, build_messages, stream_chat
    from tuneterm.workers.loading import load

    params = GenerationParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    ).validate()
    loaded = load(args.model)
    messages = build_messages(args.prompt, args.system)
    stats = GenerationStats()
    pieces = []
    for piece in stream_chat(loaded.model, loaded.tokenizer, messages, params, stats):
        pieces.append(piece)
        if not args.json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    text = "".join(pieces)
    if args.json:
        print(json.dumps({
            "model": args.model,
            "text": text,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "ttft_ms": round((stats.ttft_s or 0) * 1000, 1),
            "tokens_per_s": round(stats.decode_tok_s, 2),
            "total_s": round(stats.total_s, 3),
            "load_s": round(loaded.load_seconds, 3),
            "finish_reason": stats.finish_reason,
        }))
    else:
        sys.stdout.write("\n")
        if interactive:
            print(
                f"[{stats.completion_tokens} tokens, ttft {1000 * (stats.ttft_s or 0):.0f} ms, "
                f"{stats.decode_tok_s:.1f} tok/s]",
                file=sys.stderr,
            )
    return 0
