"""A judge on demand: a model grades each answer of a blind round against a rubric, and the grades
become a verdict stored like a vote (voter ``judge:<ref>``).

The grading is the eval harness's judge metric (:mod:`tuneterm.core.evals.judge_prompt`: the same
prompt, a 0-10 integer per answer, the same parse). The judge is any model reference. ``route`` maps
it to something :mod:`tuneterm.core.chat_client` streams from: the Chat screen passes its ``serve``
child and ``chat --blind`` its in-process server, so a local judge is served like the columns'
models. Without ``route`` only a remote judge can answer.

Verdict: the answer with the highest score wins; a shared top score is a tie; when every score is
below ``bad_below`` (default 0.5) it is "both bad".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tuneterm.core.votes import Round, Vote, full_ref, record

DEFAULT_RUBRIC = ("The answer is correct, helpful and does what the prompt asks; it is clear and makes "
                  "nothing up.")
NO_REFERENCE = "(none: judge the answer on its own merits)"


@dataclass
class Verdict:
    judge: str
    scores: list[float]          # per shown answer, 0..1
    raw: list[str]               # what the judge replied, per answer
    outcome: str                 # "1".."N", "tie" or "both_bad"
    rubric: str = DEFAULT_RUBRIC
    vote: Vote | None = field(default=None, repr=False)

    def label(self, i: int) -> str:
        """What to show beside answer i: the score out of 10, and "best" for the winner."""
        best = " · judge's pick" if self.outcome == str(i + 1) else ""
        return f"judge {self.scores[i] * 10:.0f}/10{best}"


def decide(scores: list[float], bad_below: float = 0.5) -> str:
    top = max(scores)
    if top < bad_below:
        return "both_bad"
    winners = [i for i, s in enumerate(scores) if s == top]
    return str(winners[0] + 1) if len(winners) == 1 else "tie"


def _asker(ref: str, route: Callable[[str], str] | None) -> Callable[[str], str]:
    from tuneterm.core import chat_client
    from tuneterm.core.errors import UsageError

    if route is None and not chat_client.is_remote(ref):
        raise UsageError("a local judge needs a server to run in", [("judge", ref)],
                         "use it from the Chat screen or `tuneterm chat --compare A,B --blind --judge REF`")
    target = route(ref) if route is not None else ref

    def ask(prompt: str) -> str:
        text, _ = chat_client.chat_once(target, [{"role": "user", "content": prompt}],
                                        {"max_tokens": 4, "temperature": 0.0})
        return text

    return ask


def judge_round(rnd: Round, judge: str, rubric: str = DEFAULT_RUBRIC, route: Callable[[str], str] | None = None,
                store: bool = True) -> Verdict:
    """Grade every answer of ``rnd`` with ``judge``; store the verdict as a vote unless ``store`` is False."""
    from tuneterm.core import modelref
    from tuneterm.core.evals.judge_prompt import PROMPT, parse_score

    modelref.parse(judge)
    rnd.check()
    ask = _asker(judge, route)
    raw = [ask(PROMPT.format(rubric=rubric, prompt=rnd.prompt, target=NO_REFERENCE, answer=a)) for a in rnd.answers]
    scores = [parse_score(t) for t in raw]
    verdict = Verdict(judge, scores, [t.strip()[:40] for t in raw], decide(scores), rubric)
    if store:
        verdict.vote = record(rnd, verdict.outcome, voter=f"judge:{full_ref(judge)}",
                              detail={"scores": scores, "raw": verdict.raw, "rubric": rubric})
    return verdict
