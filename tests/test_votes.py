"""Blind votes: storage in the workspace DB, statistics against hand computation, export as data."""

from __future__ import annotations

import json
import math

import pytest

from tuneterm.core import vote_stats, votes
from tuneterm.core.errors import UsageError


def _vote(a: str, b: str, outcome: str, voter: str = "human", round_id: str | None = None) -> votes.Vote:
    rnd = votes.Round(f"prompt {a} {b} {outcome}", [f"openai:{a}", f"openai:{b}"],
                      [f"answer of {a}", f"answer of {b}"], [0, 1])
    if round_id:
        rnd.round_id = round_id
    return votes.record(rnd, outcome, voter)


def test_a_vote_is_stored_with_full_refs_shuffle_and_settings(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    rnd = votes.Round("2+2?", ["smollm2", str(model_dir)], ["4", "five"], shuffle=[1, 0],
                      messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}],
                      settings={"temperature": 0.0})
    v = votes.record(rnd, "A")
    assert v.outcome == "1" and v.winner == "smollm2-135m-instruct"
    [back] = votes.list_votes()
    assert back.variants == ["smollm2-135m-instruct", str(model_dir.resolve())]
    assert back.shuffle == [1, 0] and back.settings == {"temperature": 0.0} and back.voter == "human"
    assert back.messages[0] == {"role": "system", "content": "be brief"}
    assert back.answers == ["4", "five"]


def test_unknown_outcome_names_the_choices():
    with pytest.raises(UsageError) as info:
        votes.check_outcome("3", 2)
    assert "1, 2, tie, both_bad" in info.value.render()
    assert votes.check_outcome("bad", 2) == "both_bad" and votes.check_outcome("B", 2) == "2"


def test_win_rates_and_wilson_match_hand_computation():
    for outcome in ["1", "1", "1", "2", "tie"]:
        _vote("alpha", "beta", outcome)
    [row] = vote_stats.pair_table(votes.list_votes())
    assert (row.a, row.b, row.wins_a, row.wins_b, row.ties, row.n) == ("openai:alpha", "openai:beta", 3, 1, 1, 5)
    assert row.win_rate == pytest.approx(0.75)
    # Wilson 95% for 3 of 4 by hand: centre (0.75 + z²/8)/(1 + z²/4), half z·sqrt(0.75·0.25/4 + z²/64)/(1 + z²/4)
    z = 1.959963984540054
    denom = 1 + z * z / 4
    centre = (0.75 + z * z / 8) / denom
    half = z * math.sqrt(0.75 * 0.25 / 4 + z * z / 64) / denom
    assert row.ci_low == pytest.approx(centre - half) and row.ci_high == pytest.approx(centre + half)
    assert not row.too_few


def test_bradley_terry_two_models_is_the_win_ratio():
    comps = [("a", "b", 1.0)] * 3 + [("a", "b", 0.0)]
    p = vote_stats.bradley_terry(comps, prior=0.0)
    assert p["a"] / p["b"] == pytest.approx(3.0, rel=1e-6)
    assert vote_stats.rating(p["a"]) - vote_stats.rating(p["b"]) == pytest.approx(400 * math.log10(3), rel=1e-6)
    # one virtual tie per pair: (3 + 0.5) / (1 + 0.5)
    p = vote_stats.bradley_terry(comps, prior=1.0)
    assert p["a"] / p["b"] == pytest.approx(3.5 / 1.5, rel=1e-6)


def test_bradley_terry_three_models_solves_the_score_equations():
    comps = ([("a", "b", 1.0)] * 4 + [("b", "a", 1.0)] * 2 + [("b", "c", 1.0)] * 3 + [("c", "b", 1.0)]
             + [("a", "c", 1.0)] * 2 + [("a", "c", 0.5)])
    p = vote_stats.bradley_terry(comps, prior=0.0)
    wins = {"a": 4 + 2 + 0.5, "b": 2 + 3, "c": 1 + 0.5}
    n = {("a", "b"): 6, ("b", "c"): 4, ("a", "c"): 3}
    for m in "abc":  # MLE: observed wins = expected wins for each model
        expected = sum(k * p[m] / (p[m] + p[o]) for pair, k in n.items() if m in pair for o in pair if o != m)
        assert expected == pytest.approx(wins[m], rel=1e-6)
    assert p["a"] > p["b"] > p["c"]
    assert math.prod(p.values()) == pytest.approx(1.0)


def test_ranking_has_intervals_and_few_votes_say_so():
    for outcome in ["1"] * 6 + ["2"] * 2:
        _vote("good", "worse", outcome)
    s = vote_stats.summary(votes.list_votes(), rounds=100)
    assert s["votes"] == 8 and "too few votes" in s["note"]
    top, low = s["ranking"]
    assert top["model"] == "openai:good" and top["ci_low"] <= top["rating"] <= top["ci_high"]
    assert top["rating"] > 1000 > low["rating"]
    text = vote_stats.render(s)
    assert "too few votes" in text and "Bradley-Terry" in text and "good" in text


def test_three_way_vote_compares_the_winner_with_each_other_answer():
    rnd = votes.Round("q", ["openai:x", "openai:y", "openai:z"], ["1", "2", "3"], [2, 0, 1])
    votes.record(rnd, "2")
    comps = vote_stats.comparisons(votes.list_votes())
    assert sorted(comps) == [("openai:y", "openai:x", 1.0), ("openai:y", "openai:z", 1.0)]


def test_cohen_kappa_matches_hand_computation():
    pairs = [("a", "a")] * 20 + [("a", "b")] * 5 + [("b", "a")] * 10 + [("b", "b")] * 15
    # po = 35/50 = 0.7; pe = 0.5·0.6 + 0.5·0.4 = 0.5; kappa = 0.2/0.5 = 0.4
    assert vote_stats.cohen_kappa(pairs) == pytest.approx(0.4)


def test_judge_agreement_uses_the_same_rounds():
    for i, (human, judge) in enumerate([("1", "1"), ("2", "2"), ("1", "2"), ("tie", "tie")]):
        _vote("p", "q", human, round_id=f"r{i}")
        _vote("p", "q", judge, voter="judge:openai:judge", round_id=f"r{i}")
    _vote("p", "q", "1", voter="judge:openai:judge", round_id="no-human")
    [a] = vote_stats.agreement(votes.list_votes())
    assert (a.rounds, a.agree) == (4, 3)
    # labels human p,q,p,tie vs judge p,q,q,tie: po 3/4, pe = (2·1 + 1·2 + 1·1)/16 = 5/16
    assert a.kappa == pytest.approx((0.75 - 5 / 16) / (1 - 5 / 16))
    s = vote_stats.summary(votes.list_votes(), rounds=50)
    assert s["votes"] == 4 and s["judge_verdicts"] == 5 and s["agreement"][0]["agree"] == 3
    # five verdicts rank the judge's view too, said to be too few as the human votes are
    assert "too few judge verdicts: 5" in s["judge_note"]
    text = vote_stats.render(s)
    assert text.index("judge ranking") < text.index("too few judge verdicts")
    for i in range(5, 10):
        _vote("p", "q", "1", voter="judge:openai:judge", round_id=f"more{i}")
    assert vote_stats.summary(votes.list_votes(), rounds=50)["judge_note"] is None


def test_preference_pairs_and_chosen_examples():
    _vote("m1", "m2", "2")
    _vote("m1", "m2", "tie")
    vs = votes.list_votes()
    [pair] = votes.preference_pairs(vs)
    assert pair["preferred_output"] == [{"role": "assistant", "content": "answer of m2"}]
    assert pair["non_preferred_output"][0]["content"] == "answer of m1"
    assert pair["input"]["messages"][-1]["role"] == "user"
    [sft] = votes.chosen_examples(vs)
    assert sft["messages"][-1]["content"] == "answer of m2"
    json.dumps(pair)


def test_export_refuses_nothing_to_export_and_an_existing_name():
    _vote("m1", "m2", "tie")
    with pytest.raises(UsageError, match="no DPO examples"):
        votes.export("prefs", "dpo")
    _vote("m1", "m2", "1")
    n, rec = votes.export("prefs", "dpo")
    assert n == 1 and rec.n_examples == 1
    with pytest.raises(UsageError, match="already exists"):
        votes.export("prefs", "dpo")
    n, rec = votes.export("prefs", "dpo", replace=True)
    assert rec.n_examples == 1
