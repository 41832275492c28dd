"""``tuneterm chat MODEL_REF "PROMPT"``: one turn through the model's chat template, streamed.

Local references load in this process; ``openai:MODEL`` and ``http://HOST:PORT/v1#MODEL``
stream through :mod:`tuneterm.core.chat_client`. ``--compare REF,REF,... "PROMPT"`` asks
several models the same thing (local ones through an in-process ``serve``) and reports their
timings, one after another or with ``--parallel`` at the same time.
"""

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
    p.add_argument("model", metavar="MODEL_REF", nargs="?",
                   help="e.g. smollm2-135m-instruct, job:ID, ./dir, hf:ORG/NAME, openai:MODEL, http://HOST:PORT/v1#MODEL")
    p.add_argument("prompt", metavar="PROMPT", nargs="?")
    p.add_argument("--compare", metavar="REF,REF,...", nargs="?", const="", default=None,
                   help="ask several models the same prompt (then give only PROMPT) and compare timings; with no "
                        "models: the base, the newest tuned job and its newest quantized artifact")
    p.add_argument("--parallel", action="store_true", help="with --compare: stream all models at the same time")
    p.add_argument("--blind", action="store_true",
                   help="with --compare: blind rounds (order shuffled, names hidden), a vote after each; "
                        "prompts from PROMPT or, without it, one per line from the terminal")
    p.add_argument("--judge", metavar="REF", default=None,
                   help="with --blind: a judge model also grades every round (stored as the judge's vote)")
    p.add_argument("--system", "-s", default=None,
                   help="system prompt (default: the one a job:ID model was trained with, if any; "
                        "--system '' for none)")
    p.add_argument("--max-new-tokens", "-n", type=int, default=256)
    p.add_argument("--temperature", "-t", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="a stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object with text and timings")
    p.add_argument("--json-schema", metavar="FILE", default=None,
                   help="constrain the answer to this JSON schema (local models: xgrammar, the 'structured' extra; "
                        "servers: response_format json_schema)")
    p.add_argument("--device", default="auto", help="auto (CUDA when visible, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bf16/fp16 on a GPU, float32 on the CPU), float32, bfloat16 "
                                                   "or float16")
    p.add_argument("--few-shot", type=int, default=None, metavar="K",
                   help="prompt with K examples from --pool first (same as MODEL_REF fewshot:K:POOL@REF)")
    p.add_argument("--pool", default=None, help="few-shot pool: chat JSONL file or dataset name")
    p.add_argument("--similar", action="store_true", help="with --few-shot: the K most similar (TF-IDF) examples")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuneterm.core import modelref
    from tuneterm.core.errors import UsageError

    args.schema = None
    if getattr(args, "json_schema", None):
        from tuneterm.workers.constrained import load_schema_file

        args.schema = load_schema_file(args.json_schema)
    if args.compare is not None and args.schema is not None:
        raise UsageError("--json-schema works with one model, not with --compare", [("--json-schema", args.json_schema)],
                         'tuneterm chat MODEL_REF --json-schema FILE "PROMPT"')
    if args.compare is not None:
        if args.model and args.prompt:
            raise UsageError("with --compare give only the prompt", [("extra argument", args.model)],
                             'tuneterm chat --compare REF,REF "PROMPT"')
        if args.blind:
            from tuneterm.commands._chat_blind import run_blind

            return run_blind(args, args.prompt or args.model)
        from tuneterm.commands._chat_compare import run_compare

        return run_compare(args, args.prompt or args.model)
    if args.blind or args.judge:
        raise UsageError("--blind and --judge go with --compare", hint='tuneterm chat --compare A,B --blind')
    if not args.model or args.prompt is None:
        raise UsageError("chat needs a model and a prompt", hint='tuneterm chat MODEL_REF "PROMPT"')
    ref = modelref.parse(args.model)
    trained = use_trained_prompt(args, args.model)
    shots = None  # few-shot: prior user/assistant turns from a pool (tuneterm.core.fewshot)
    if ref.kind == "fewshot" or args.few_shot is not None:
        from tuneterm.core import fewshot
        from tuneterm.core.chat_client import with_fewshot

        if ref.kind == "fewshot":
            spec = fewshot.parse_spec(args.model)
        elif not args.pool:
            raise UsageError("--few-shot needs --pool", hint="tuneterm chat REF --few-shot 4 --pool FILE \"...\"")
        else:
            spec = fewshot.FewShotSpec(args.few_shot, args.pool, args.model,
                                       "similar" if args.similar else "seed", args.seed or 0)
        shots = with_fewshot(spec, _messages(args))[:-1]
        args.model, ref = spec.base, modelref.parse(spec.base)
    if ref.is_remote:
        return _run_remote(args, shots)
    if ref.kind == "job" and _artifact_kind(ref.target) == "classifier":
        if args.schema is not None:
            raise UsageError("a classifier answers with a label; --json-schema does not apply", [("model", args.model)])
        from tuneterm.workers.classifier import predict  # feature-based: the answer is a label

        label = predict([args.prompt], args.model)[0]
        print(json.dumps({"model": args.model, "text": label}) if args.json else label)
        return 0
    interactive = sys.stderr.isatty()
    if interactive:
        print(f"loading {args.model}…", file=sys.stderr, flush=True)
    from tuneterm.core.generation import GenerationStats, apply_inference_thread_env

    params = generation_params(args)
    apply_inference_thread_env()  # before torch loads: idle OpenMP threads sleep instead of spinning
    from tuneterm.workers import llamacpp

    messages = _messages(args) if shots is None else shots + [{"role": "user", "content": args.prompt}]
    stats = GenerationStats()
    pieces = []
    gguf_file = llamacpp.engine_file(args.model)
    if gguf_file is not None and llamacpp.available():  # the file as it is, in a llama.cpp worker
        loaded = llamacpp.LlamaCppEngine(gguf_file)
        if interactive:
            print(f"[{loaded.label()}]", file=sys.stderr, flush=True)
        grammar = None
        if args.schema is not None:  # llama.cpp's own grammar, from the schema
            from tuneterm.core.errors import InputError

            try:
                grammar = loaded.json_schema_grammar(json.dumps(args.schema))
            except InputError as exc:
                exc.facts.insert(0, ("--json-schema", args.json_schema))
                raise
        stream = loaded.stream(messages, params, stats, grammar=grammar)
    else:
        if gguf_file is not None:
            llamacpp.warn_fallback(args.model, gguf_file)
        from tuneterm.workers.engine import stream_chat
        from tuneterm.workers.loading import load

        loaded = load(args.model, dtype=args.dtype, device=args.device)
        extra = None
        if args.schema is not None:
            from tuneterm.workers.constrained import logits_processor, vocab_size

            extra = {"logits_processor": logits_processor(args.schema, loaded.tokenizer, vocab_size(loaded.model),
                                                          "--json-schema")}
        stream = stream_chat(loaded.model, loaded.tokenizer, messages, params, stats, generate_kwargs=extra)
    for piece in stream:
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
            "system_prompt_from": trained.job_id if trained else None,
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


def use_trained_prompt(args: argparse.Namespace, ref: str):
    """With no ``--system``, the system prompt ``ref``'s job was trained with goes into ``args.system``,
    and a line on stderr says so; returns the :class:`~tuneterm.core.trained_prompt.TrainedPrompt` or None."""
    if args.system is not None:
        return None
    from tuneterm.core.trained_prompt import for_ref

    trained = for_ref(ref)
    if trained is not None:
        args.system = trained.text
        print(trained.announce(), file=sys.stderr, flush=True)
    return trained


def _artifact_kind(job_id: str) -> str | None:
    from tuneterm.core import modelref
    from tuneterm.core.workspace import workspace

    try:
        return modelref.job_artifact(job_id, workspace().jobs_dir).kind
    except Exception:
        return None


def generation_params(args: argparse.Namespace):
    """The command's generation settings, validated (a GenerationParams)."""
    from tuneterm.core.generation import GenerationParams

    return GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            seed=args.seed, stop=list(args.stop or [])).validate()


def _messages(args: argparse.Namespace) -> list[dict]:
    return ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}]


def _run_remote(args: argparse.Namespace, shots: list[dict] | None = None) -> int:
    from tuneterm.core.chat_client import ChatStats, stream_chat

    params = generation_params(args).to_dict()
    if getattr(args, "schema", None) is not None:
        params["json_schema"] = args.schema
    messages = _messages(args) if shots is None else shots + [{"role": "user", "content": args.prompt}]
    stats = ChatStats()
    pieces = []
    for piece in stream_chat(args.model, messages, params, stats):
        pieces.append(piece)
        if not args.json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    if args.json:
        print(json.dumps({
            "model": args.model, "text": "".join(pieces), "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens, "ttft_ms": round((stats.ttft_s or 0) * 1000, 1),
            "tokens_per_s": round(stats.tokens_per_s, 2), "total_s": round(stats.total_s, 3),
            "finish_reason": stats.finish_reason,
        }))
    else:
        sys.stdout.write("\n")
        if sys.stderr.isatty():
            print(f"[{stats.completion_tokens} tokens, ttft {1000 * (stats.ttft_s or 0):.0f} ms, "
                  f"{stats.tokens_per_s:.1f} tok/s]", file=sys.stderr)
    return 0
