"""Blind-comparison votes in the workspace database (table ``votes``), and their export as data.

A *round* is one prompt answered by 2-4 variants, shown in a shuffled order under "Model 1..N".
Each vote on a round is a row: the prompt (and the whole message list sent), the answers and the
variants in the order shown, the shuffle (shown position -> position in the list the user gave),
the generation settings, the voter (``human`` or ``judge:<ref>``) and the outcome:

    "1".."4"    the answer shown at that position is the better one
    "tie"       equally good
    "both_bad"  none is acceptable

Variants are stored as full references (``job:`` ids resolved, folders absolute) so a later rename or
``job:last`` does not move a vote. Statistics over votes are in :mod:`tuneterm.core.vote_stats`.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm.core.errors import InputError, UsageError

OUTCOMES = ("tie", "both_bad")  # besides "1".."N"
HUMAN = "human"


def full_ref(ref: str) -> str:
    """A model reference as a vote stores it: the embedded aliases as one name, ``job:`` with the
    full id, folders and GGUF files absolute (``tuneterm.core.jobs.plan.freeze_ref``)."""
    from tuneterm.core import modelref
    from tuneterm.core.jobs.plan import freeze_ref

    parsed = modelref.parse(ref)
    if parsed.kind == "embedded":
        return modelref.EMBEDDED_NAME
    try:
        return freeze_ref(ref, "variant", artifact=False)
    except Exception:  # a job that no longer exists: keep the reference as given
        return parsed.raw


def shuffle_order(n: int, rng: random.Random | None = None) -> list[int]:
    """A random order of n columns: ``order[shown] = original index``."""
    order = list(range(n))
    (rng or random).shuffle(order)
    return order


@dataclass
class Round:
    """One blind prompt: variants and answers in the order *shown* (after the shuffle)."""

    prompt: str
    variants: list[str]
    answers: list[str]
    shuffle: list[int] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    round_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def check(self) -> None:
        if len(self.variants) < 2:
            raise UsageError("a blind round needs at least two variants", [("variants", ", ".join(self.variants))])
        if len(self.answers) != len(self.variants):
            raise InputError("a round needs one answer per variant",
                             [("variants", str(len(self.variants))), ("answers", str(len(self.answers)))])


@dataclass(frozen=True)
class Vote:
    id: int
    round_id: str
    voter: str
    prompt: str
    messages: list
    variants: list
    answers: list
    shuffle: list
    outcome: str
    winner: str | None
    settings: dict
    detail: dict
    created_at: str

    @property
    def is_human(self) -> bool:
        return self.voter == HUMAN

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def check_outcome(outcome: str, n: int) -> str:
    """``outcome`` normalised: "1".."n", "tie" or "both_bad" (also "a"/"b"... and "bad")."""
    raw = str(outcome).strip().lower()
    if raw in ("bad", "both bad", "both-bad", "none"):
        raw = "both_bad"
    if len(raw) == 1 and "a" <= raw <= "d":
        raw = str(ord(raw) - ord("a") + 1)
    if raw in OUTCOMES or (raw.isdigit() and 1 <= int(raw) <= n):
        return raw
    choices = ", ".join([*(str(i) for i in range(1, n + 1)), *OUTCOMES])
    raise UsageError(f"unknown vote {outcome!r}", [("expected one of", choices)])


def record(rnd: Round, outcome: str, voter: str = HUMAN, detail: dict | None = None,
           db_path: Path | None = None) -> Vote:
    """Store one vote on a round (the variants as full references); returns it."""
    from tuneterm.core import db

    rnd.check()
    outcome = check_outcome(outcome, len(rnd.variants))
    variants = [full_ref(v) for v in rnd.variants]
    winner = variants[int(outcome) - 1] if outcome.isdigit() else None
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    messages = rnd.messages or [{"role": "user", "content": rnd.prompt}]
    with db.connect(db_path) as conn:
        cur = conn.execute(
            "INSERT INTO votes (round_id, voter, prompt, messages, variants, answers, shuffle, outcome, winner, "
            "settings, detail, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rnd.round_id, voter, rnd.prompt, json.dumps(messages), json.dumps(variants), json.dumps(rnd.answers),
             json.dumps(rnd.shuffle), outcome, winner, json.dumps(rnd.settings), json.dumps(detail or {}), now))
        vote_id = cur.lastrowid
    return Vote(vote_id, rnd.round_id, voter, rnd.prompt, messages, variants, list(rnd.answers), list(rnd.shuffle),
                outcome, winner, dict(rnd.settings), dict(detail or {}), now)


def list_votes(voter: str | None = None, db_path: Path | None = None) -> list[Vote]:
    """Every vote, oldest first; ``voter``: "human", "judge" (any judge) or an exact voter."""
    from tuneterm.core import db

    with db.connect(db_path) as conn:
        rows = conn.execute("SELECT * FROM votes ORDER BY id").fetchall()
    out = []
    for r in rows:
        v = Vote(r["id"], r["round_id"], r["voter"], r["prompt"], json.loads(r["messages"]), json.loads(r["variants"]),
                 json.loads(r["answers"]), json.loads(r["shuffle"]), r["outcome"], r["winner"],
                 json.loads(r["settings"]), json.loads(r["detail"]), r["created_at"])
        if voter is None or v.voter == voter or (voter == "judge" and v.voter.startswith("judge:")):
            out.append(v)
    return out


# --- votes as training data ---------------------------------------------------------------------


def preference_pairs(votes: list[Vote]) -> list[dict]:
    """DPO examples (the format datasets import: ``input.messages``, ``preferred_output``,
    ``non_preferred_output``): the winner against each other answer of a decided vote. Ties and
    "both bad" give no pair; neither does an answer identical to the winner's."""
    out = []
    for v in votes:
        if not v.outcome.isdigit():
            continue
        w = int(v.outcome) - 1
        good = v.answers[w]
        for i, bad in enumerate(v.answers):
            if i == w or not good.strip() or bad.strip() == good.strip():
                continue
            out.append({"input": {"messages": list(v.messages)},
                        "preferred_output": [{"role": "assistant", "content": good}],
                        "non_preferred_output": [{"role": "assistant", "content": bad}]})
    return out


def chosen_examples(votes: list[Vote]) -> list[dict]:
    """SFT chat examples: the prompt's messages followed by the chosen answer, one per decided vote."""
    return [{"messages": [*v.messages, {"role": "assistant", "content": v.answers[int(v.outcome) - 1]}]}
            for v in votes if v.outcome.isdigit() and v.answers[int(v.outcome) - 1].strip()]


def export(name: str, kind: str, voter: str = HUMAN, replace: bool = False) -> tuple[int, object]:
    """Write the votes of ``voter`` into workspace dataset ``name`` as ``kind`` "dpo" or "sft".

    Returns (number of examples, the DatasetRecord). Refuses to overwrite an existing dataset
    unless ``replace``; refuses an empty export with the reason."""
    import tempfile

    from tuneterm.core.datasets import store

    votes = list_votes(voter)
    examples = preference_pairs(votes) if kind == "dpo" else chosen_examples(votes)
    if not examples:
        decided = sum(v.outcome.isdigit() for v in votes)
        raise UsageError(f"no {kind.upper()} examples to export",
                         [("votes", str(len(votes))), ("decided (not tie / both bad)", str(decided)),
                          ("voter", voter)],
                         "vote in a blind round first: tuneterm chat --compare A,B --blind")
    if store.exists(name) and not replace:
        raise UsageError(f"a dataset named {name!r} already exists", [("dataset", name)],
                         "pass --replace, or choose another name")
    with tempfile.TemporaryDirectory(prefix="tuneterm-votes-") as tmp:
        src = Path(tmp) / f"{name}.jsonl"
        src.write_text("".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples), encoding="utf-8")
        rec = store.import_dataset(src, name=name, fmt="dpo" if kind == "dpo" else None, replace=replace)
    return len(examples), rec
