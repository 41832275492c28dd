"""``tuneterm eval votes``: the blind-vote win-rate table and ranking; ``eval votes export``: votes as data.

    tuneterm eval votes [--json]
    tuneterm eval votes export --dpo NAME [--replace] [--voter human|judge:REF]
    tuneterm eval votes export --sft NAME

Votes come from ``tuneterm chat --compare A,B --blind`` and the Chat screen's blind mode
(:mod:`tuneterm.core.votes`); statistics are in :mod:`tuneterm.core.vote_stats`.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("votes (tuneterm eval votes [export])")
    g.add_argument("--dpo", metavar="NAME", default=None, help="export: preference pairs into dataset NAME")
    g.add_argument("--sft", metavar="NAME", default=None, help="export: the chosen answers into chat dataset NAME")
    g.add_argument("--replace", action="store_true", help="export: overwrite an existing dataset")
    g.add_argument("--voter", default="human", help="export: whose votes (human, or judge:REF)")
    g.add_argument("--rounds", type=int, default=200, help="bootstrap rounds of the ranking interval (default 200)")


def run_votes(args: argparse.Namespace) -> int:
    from tuneterm.core import vote_stats, votes
    from tuneterm.core.errors import UsageError

    if args.rest and args.rest != ["export"]:
        raise UsageError("unknown votes subcommand", [("given", " ".join(args.rest))],
                         "tuneterm eval votes [--json] | tuneterm eval votes export --dpo NAME")
    if args.rest == ["export"]:
        if not (args.dpo or args.sft):
            raise UsageError("export needs --dpo NAME or --sft NAME",
                             hint="tuneterm eval votes export --dpo prefs")
        for kind, name in (("dpo", args.dpo), ("sft", args.sft)):
            if name:
                n, rec = votes.export(name, kind, voter=args.voter, replace=args.replace)
                print(f"{n} {'preference pair' if kind == 'dpo' else 'example'}(s) from {args.voter} votes "
                      f"→ dataset {rec.name} ({rec.path})")
                if kind == "dpo":
                    print(f"  train on them: tuneterm train --method dpo --data {rec.name} --model BASE")
        return 0
    if args.dpo or args.sft:
        raise UsageError("--dpo and --sft belong to `eval votes export`", hint="tuneterm eval votes export --dpo NAME")
    if args.rounds < 10:
        raise UsageError("--rounds must be at least 10", [("rounds", str(args.rounds))])
    summary = vote_stats.summary(votes.list_votes(), rounds=args.rounds)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(vote_stats.render(summary), end="")
    return 0
