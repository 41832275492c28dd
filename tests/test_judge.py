"""The judge on demand: each answer of a round graded against a rubric by a real model, parsed for real."""

from __future__ import annotations

import pytest

from tests.fake_chat import FakeChat, arena_reply
from tuneterm.core import judge, vote_stats, votes
from tuneterm.core.errors import UsageError
from tuneterm.core.evals.judge_prompt import parse_score


def test_verdict_from_a_remote_judge_is_stored_as_the_judges_vote():
    with FakeChat(arena_reply) as fake:
        rnd = votes.Round("What is the capital of France?", [fake.ref("weak"), fake.ref("good")],
                          ["I am not sure, maybe Lyon.", "The capital of France is Paris."], [1, 0])
        verdict = judge.judge_round(rnd, fake.ref("judge"))
        judge_prompt = fake.requests[0]["messages"][0]["content"]
    assert verdict.scores == [0.3, 0.8] and verdict.raw == ["3", "8"] and verdict.outcome == "2"
    assert verdict.label(1) == "judge 8/10 · judge's pick" and verdict.label(0) == "judge 3/10"
    assert "Rubric: " + judge.DEFAULT_RUBRIC in judge_prompt and "What is the capital of France?" in judge_prompt
    [stored] = votes.list_votes()
    assert stored.voter == f"judge:{fake.ref('judge')}" and stored.detail["scores"] == [0.3, 0.8]
    assert stored.winner == fake.ref("good")
    votes.record(rnd, "2")  # the human agrees on the same round
    [agreement] = vote_stats.agreement(votes.list_votes())
    assert (agreement.rounds, agreement.agree) == (1, 1)


def test_decide():
    assert judge.decide([0.3, 0.8]) == "2"
    assert judge.decide([0.8, 0.8, 0.1]) == "tie"
    assert judge.decide([0.2, 0.4]) == "both_bad"


def _served(ref: str):
    """A local judge as `chat --blind --judge` serves it: an in-process OpenAI-compatible server."""
    from tuneterm.workers.server import make_server, serve_in_thread

    server = make_server([ref], port=0)
    serve_in_thread(server)
    return server


def test_verdict_from_a_local_model(tiny_model_dir):
    """A local judge (the tiny model, served): whatever it says is parsed by the metric's parser."""
    rnd = votes.Round("Say a number.", ["openai:a", "openai:b"], ["7", "seven"], [0, 1])
    server = _served(str(tiny_model_dir))
    try:
        verdict = judge.judge_round(rnd, str(tiny_model_dir), route=lambda r: f"{server.url}#{r}")
    finally:
        server.shutdown()
        server.server_close()
    assert len(verdict.raw) == 2 and all(isinstance(t, str) for t in verdict.raw)
    assert verdict.scores == [parse_score(t) for t in verdict.raw]
    assert verdict.outcome == judge.decide(verdict.scores)
    [stored] = votes.list_votes("judge")
    assert stored.voter == f"judge:{tiny_model_dir.resolve()}" and stored.outcome == verdict.outcome


@pytest.mark.slow
def test_verdict_from_the_embedded_model():
    rnd = votes.Round("What is the capital of France?", ["openai:a", "openai:b"],
                      ["The capital of France is Paris.", "Bananas are yellow."], [0, 1])
    server = _served("smollm2-135m-instruct")
    try:
        verdict = judge.judge_round(rnd, "smollm2-135m-instruct", route=lambda r: f"{server.url}#{r}")
    finally:
        server.shutdown()
        server.server_close()
    assert verdict.scores == [parse_score(t) for t in verdict.raw]
    assert all(t for t in verdict.raw) and verdict.outcome == judge.decide(verdict.scores)
    # SmolLM2-135M mostly replies in words ("The answer is correct"), which grades 0: too small a judge
    assert votes.list_votes("judge")[0].detail["raw"] == verdict.raw


def test_a_local_judge_without_a_server_is_refused():
    rnd = votes.Round("q", ["openai:a", "openai:b"], ["x", "y"], [0, 1])
    with pytest.raises(UsageError, match="needs a server"):
        judge.judge_round(rnd, "smollm2-135m-instruct")


def test_parse_score():
    assert parse_score(" 7") == 0.7 and parse_score("Score: 12/10") == 1.0 and parse_score("good") == 0.0
