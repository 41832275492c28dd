"""`tuneterm chat --compare A,B --blind`: shuffled, names hidden, a vote per round, then revealed (in-process)."""

from __future__ import annotations

import io
import random

from tests.fake_chat import FakeChat, arena_reply
from tuneterm.core import votes


def test_blind_rounds_store_votes_and_reveal(cli, monkeypatch):
    random.seed(3)
    with FakeChat(arena_reply) as fake:
        good, weak = fake.ref("good"), fake.ref("weak")
        # round 1: an unknown key is asked again, then Model 1; round 2: a tie; an empty prompt ends
        monkeypatch.setattr("sys.stdin", io.StringIO("What is the capital of France?\nx\n1\nSay hi.\nt\n\n"))
        code, out, err = cli("chat", "--compare", f"{good},{weak}", "--blind", "--judge", fake.ref("judge"))
    assert code == 0, err
    assert "── Model 1 ──" in out and "── Model 2 ──" in out and "is not a vote" in out
    assert "2 vote(s) in 2 round(s)" in out
    before_vote = out.split("vote: 1-2", 1)[0]
    assert "#good" not in before_vote and "#weak" not in before_vote  # names hidden until the vote
    assert "revealed: Model 1: " in out and "judge: Model 1: judge" in out
    first, second = votes.list_votes("human")
    assert first.outcome == "1" and first.winner == first.variants[0] and second.outcome == "tie"
    assert first.prompt == "What is the capital of France?" and sorted(first.variants) == sorted([good, weak])
    assert first.variants == [[good, weak][j] for j in first.shuffle]
    assert out.split("revealed: ", 1)[1].startswith(f"Model 1: {first.variants[0]} · Model 2: {first.variants[1]}")
    shown_first = out.split("── Model 1 ──", 1)[1].split("── Model 2 ──", 1)[0]
    assert ("Paris" in shown_first) == (first.variants[0] == good)
    judged = votes.list_votes("judge")
    assert len(judged) == 2 and judged[0].winner == good  # the judge prefers the answer naming Paris


def test_blind_shuffles_per_prompt(cli, monkeypatch):
    random.seed(0)
    with FakeChat(arena_reply) as fake:
        prompts = "".join(f"question {i}\n1\n" for i in range(8)) + "\n"
        monkeypatch.setattr("sys.stdin", io.StringIO(prompts))
        code, _, err = cli("chat", "--compare", f"{fake.ref('good')},{fake.ref('weak')}", "--blind")
    assert code == 0, err
    orders = {tuple(v.shuffle) for v in votes.list_votes()}
    assert orders == {(0, 1), (1, 0)}  # seeded: 8 rounds show both orders


def test_blind_needs_two_models(cli):
    code, _, err = cli("chat", "--compare", "openai:x", "--blind", "hi")
    assert code == 2 and "at least two models" in err
    code, _, err = cli("chat", "smollm2", "hi", "--blind")
    assert code == 2 and "go with --compare" in err
