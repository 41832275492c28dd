"""``tuneterm sweep --model REF --data DATASET --budget 15m``: which method wins on this data.

Trials (few-shot, feature, LoRA, full/freeze on small models, the classification head where this
tuneterm has it) run as ordinary jobs within the budget, are scored on the validation split by
the eval harness and halved (successive halving); the best is scored once on the test split
against the base model and the runner-up. Running the same command again resumes the sweep.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

ORDER = 35


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="try methods and settings within a time budget; rank them on held-out data",
        description="Run a budgeted sweep across methods and settings as jobs, rank the trials by the "
                    "validation metric (95%% intervals), and score the best once on the test split against "
                    "the base model and the runner-up (paired test). The same command again resumes the "
                    "sweep and reuses its finished trials.",
        epilog="examples:\n  tuneterm sweep --model smollm2-135m-instruct --data tickets --budget 15m\n"
               "  tuneterm sweep --model smollm2-135m-instruct --data tickets --budget 10m --json\n"
               "  tuneterm sweep --model ./my-model --data train.jsonl --space my-space.toml --budget 1h",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="REF", help="the base model (a local reference)")
    p.add_argument("--data", required=True, metavar="DATASET",
                   help="a workspace dataset or a JSONL file (its val and test splits are used when present)")
    p.add_argument("--val", metavar="DATASET", help="validation data (default: the dataset's val split, or one "
                                                     "cut from the training rows, seeded and stratified)")
    p.add_argument("--budget", required=True, metavar="TIME",
                   help="time for the trials, e.g. 90s, 15m, 1h30m (the final test evaluation comes on top)")
    p.add_argument("--space", metavar="FILE", help="a search space TOML (default: the built-in one for the "
                                                    "data's shape, under tuneterm/data/sweeps/)")
    p.add_argument("--parallel", type=int, default=0, metavar="N",
                   help="trials at once (default: the free device slots, jobs.max_running per device)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming an earlier run")
    p.add_argument("--dry-run", action="store_true", help="print the data's shape, the splits and the trials; "
                                                          "start nothing")
    p.add_argument("--json", action="store_true", help="print the leaderboard and `best` (job id) as JSON")
    p.set_defaults(func=run)


def parse_budget(text: str) -> float:
    """``15m``, ``90s``, ``1h30m`` as seconds."""
    from tuneterm.core.errors import UsageError

    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text.strip().lower())
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([hms])", "", text.strip().lower()).strip():
        raise UsageError("--budget is a time with a unit", [("--budget", text)], "for example 90s, 15m or 1h30m")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise UsageError("--budget must be more than zero", [("--budget", text)])
    return seconds


def run(args: argparse.Namespace) -> int:
    from tuneterm.core.jobs import slots
    from tuneterm.core.sweep import leaderboard
    from tuneterm.core.sweep.prepare import prepare
    from tuneterm.core.sweep.runner import Options, SweepRunner
    from tuneterm.workers.kinds import KINDS  # the registered job kinds (a table; nothing heavy)

    budget = parse_budget(args.budget)
    prepared = prepare(args.model, args.data, val=args.val, space=args.space, job_kinds=set(KINDS),
                       fresh=args.fresh)
    state = prepared.state
    say = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    say(f"sweep {state['id']} ({'resumed' if prepared.resumed else 'new'}): {state['shape']} data, "
        f"{len(state['trials'])} trial(s), ranked by validation {state['metric']}; folder {prepared.folder}")
    for note in state["notes"]:
        say(f"note: {note}")
    if args.dry_run:
        for t in state["trials"]:
            say(f"  {t['label']}  ({t['rungs']} rung(s), {t['status']})")
        return 0
    concurrency = args.parallel or slots.max_running() * max(1, len(slots.gpu_ids()))
    seen: dict[str, str] = {}

    def progress(st: dict) -> None:
        for t in st["trials"]:
            if seen.get(t["key"]) != t["status"]:
                seen[t["key"]] = t["status"]
                score = next((r["score"]["value"] for r in reversed(t["runs"]) if r.get("score")), None)
                shown = score is not None and t["status"] != "running"
                extra = f" val {st['metric']} {100 * score:.1f}" if shown else ""
                say(f"  [{st.get('spent_s', 0):>5.0f} s] {t['label']}: "
                    f"{leaderboard.STATUS_TEXT.get(t['status'], t['status'])}{extra}")

    runner = SweepRunner(prepared.folder, state, prepared.data, Options(budget_s=budget, concurrency=concurrency),
                         on_change=progress)
    try:
        state = runner.run()
    except KeyboardInterrupt:
        say(f"interrupted: the running trials were cancelled with a checkpoint; run the same command again "
            f"to resume sweep {state['id']}")
        return 130
    if args.json:
        print(json.dumps(leaderboard.document(state), indent=2, default=str))
    else:
        print(leaderboard.render(state), end="")
        doc = leaderboard.document(state)
        if doc["best"]:
            ref = doc["best_ref"]
            print(f"best: job:{doc['best']}" + (f" ({ref})" if ref != f"job:{doc['best']}" else ""))
    return 0
