"""The LLM-as-judge prompt and the parse of its reply, shared by the eval harness's ``judge`` metric
(tuneterm.workers.evals.judge) and the judge on demand of blind rounds (tuneterm.core.judge)."""

from __future__ import annotations

import re

PROMPT = """You grade an answer against a rubric.
Rubric: {rubric}

Prompt given to the model:
{prompt}

Reference answer:
{target}

Model answer:
{answer}

Reply with one integer from 0 (fails the rubric) to 10 (fully meets it) and nothing else."""


def parse_score(text: str) -> float:
    """The judge's reply as a score in [0, 1]: its first integer over 10 (capped); 0 when it gave none."""
    found = re.search(r"\d+", text)
    return min(10, int(found.group())) / 10 if found else 0.0
