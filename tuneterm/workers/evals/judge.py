"""LLM-as-judge: a chat model grades each answer against a rubric (0-10), pass = score/10 >= threshold.

The judge is any model reference: remote ones through ``tuneterm.core.chat_client``, local ones
through the local engine (loaded once per judge).
"""

from __future__ import annotations

from typing import Any

from tuneterm.core.evals.judge_prompt import PROMPT, parse_score
from tuneterm.core.evals.spec import MetricRef, TaskSpec
from tuneterm.workers.evals.scoring import Scored

_LOCAL: dict[str, Any] = {}


class _MeanModule:
    """Minimal metric object over precomputed 0/1 verdicts (for Scored)."""

    higher_is_better = True

    def compute(self, predictions, references):
        return {"judge": sum(predictions) / max(len(predictions), 1), "per_item": list(predictions)}

    _compute = compute


def _ask(ref: str, prompt: str) -> str:
    from tuneterm.core import modelref

    messages = [{"role": "user", "content": prompt}]
    if modelref.parse(ref).is_remote:
        from tuneterm.core import chat_client

        text, _ = chat_client.chat_once(ref, messages, {"max_new_tokens": 4, "temperature": 0.0})
        return text
    from tuneterm.workers import loading
    from tuneterm.workers.engine import GenerationParams, generate_text

    if ref not in _LOCAL:
        _LOCAL[ref] = loading.load(ref)
    lm = _LOCAL[ref]
    text, _ = generate_text(lm.model, lm.tokenizer, messages, GenerationParams(max_new_tokens=4))
    return text


def judge_scores(m: MetricRef, spec: TaskSpec, out: Any, samples: list[dict]) -> Scored:
    cfg = m.judge or {}
    threshold = float(cfg.get("threshold", 0.5))
    verdicts = []
    for row in samples:
        text = _ask(str(cfg["model"]), PROMPT.format(rubric=cfg["rubric"], prompt=row.get("prompt") or "",
                                                      target=row.get("target", ""), answer=row.get("output") or ""))
        score = parse_score(text)
        row.setdefault("judge", {})[m.name] = {"raw": text.strip()[:40], "score": score}
        verdicts.append(int(score >= threshold))
    s = Scored(m.name, _MeanModule(), {}, verdicts, [0] * len(verdicts), "judge")
    return s
