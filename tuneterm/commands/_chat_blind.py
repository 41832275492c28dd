"""``tuneterm chat --compare A,B[,C] --blind ["PROMPT"]``: blind rounds with a vote after each, in a plain terminal.

Each round shuffles the models, streams their answers under "Model 1..N" and asks for a vote
(a number for the better answer, ``t`` tie, ``b`` both bad, ``s`` skip, ``q`` quit); then it
reveals which model was which. Votes go to the workspace database (:mod:`tuneterm.core.votes`);
``--judge REF`` has a judge grade every round too. Without PROMPT, prompts are read one per line
until an empty line or end of input.
"""

from __future__ import annotations

import argparse
import sys

from tuneterm.core.errors import TunetermError, UsageError
from tuneterm.core.votes import Round, record, shuffle_order

KEYS = {"t": "tie", "b": "both_bad"}


def _read(prompt: str) -> str | None:
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    return None if not line else line.strip()


def ask_vote(n: int) -> str | None:
    """A vote key from the terminal: an outcome, "skip", or None to quit."""
    while True:
        key = _read(f"vote: 1-{n} better · t tie · b both bad · s skip · q quit > ")
        if key is None or key.lower() == "q":
            return None
        key = key.lower()
        if key == "s":
            return "skip"
        if key in KEYS:
            return KEYS[key]
        if key.isdigit() and 1 <= int(key) <= n:
            return key
        print(f"  {key!r} is not a vote", flush=True)


def run_blind(args: argparse.Namespace, prompt: str | None) -> int:
    from tuneterm.commands._chat_compare import split_refs, start_local
    from tuneterm.commands.chat import generation_params
    from tuneterm.core import chat_client, modelref

    refs = split_refs(args.compare)
    if len(refs) < 2:
        raise UsageError("a blind comparison needs at least two models", [("given", args.compare)],
                         "tuneterm chat --compare smollm2-135m-instruct,job:ID --blind")
    if args.json or args.parallel:
        raise UsageError("--blind is interactive: it does not take --json or --parallel")
    for r in refs + ([args.judge] if args.judge else []):
        modelref.parse(r)
    params = generation_params(args).to_dict()
    every = refs + ([args.judge] if args.judge and args.judge not in refs else [])
    local = [r for r in every if not chat_client.is_remote(r)]
    server, routes, _labels, _ = start_local(every, local, args)
    counts = {"rounds": 0, "votes": 0}
    try:
        while True:
            text = prompt if prompt is not None else _read("\nprompt (empty line ends) > ")
            if not text:
                break
            if not _round(args, refs, routes, params, text, counts):
                break
            if prompt is not None:
                break
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    print(f"\n{counts['votes']} vote(s) in {counts['rounds']} round(s) stored; see them with: tuneterm eval votes")
    return 0


def _round(args, refs, routes, params, text, counts) -> bool:
    """One blind round; False when the user quits."""
    from tuneterm.core import chat_client

    order = shuffle_order(len(refs))
    shown = [refs[i] for i in order]
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": text}]
    answers = []
    for pos, ref in enumerate(shown, 1):
        print(f"\n── Model {pos} ──", flush=True)
        pieces = []
        try:
            for piece in chat_client.stream_chat(routes[ref], messages, params):
                pieces.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except TunetermError as err:
            print(f"(no answer: {err.title})", flush=True)
        answers.append("".join(pieces))
        print(flush=True)
    counts["rounds"] += 1
    rnd = Round(text, shown, answers, order, messages, dict(params))
    outcome = ask_vote(len(shown))
    if outcome is None:
        return False
    if outcome != "skip":
        record(rnd, outcome)
        counts["votes"] += 1
    if args.judge:
        from tuneterm.core.judge import judge_round

        verdict = judge_round(rnd, args.judge, route=lambda ref: routes[ref])
        print("judge: " + " · ".join(f"Model {i + 1}: {verdict.label(i)}" for i in range(len(shown))))
    print("revealed: " + " · ".join(f"Model {i}: {ref}" for i, ref in enumerate(shown, 1)), flush=True)
    return True
