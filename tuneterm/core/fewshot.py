"""Few-shot prompting: K examples from a pool become prior user/assistant turns (torch-free).

A few-shot variant is a model reference of the form::

    fewshot:K:POOL@REF            K examples drawn from POOL by seed 0
    fewshot:K:seed=N:POOL@REF     ... by seed N
    fewshot:K:similar:POOL@REF    the K pool examples most similar to the prompt

POOL is a chat JSONL file or a workspace dataset name; REF is any other model reference (``job:ID``,
``smollm2-135m-instruct``, ``openai:MODEL`` ...). "similar" uses TF-IDF cosine similarity over
the user texts (scikit-learn, cheap, no model): a lexical, not a neural, embedding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tuneterm.core.errors import InputError

PREFIX = "fewshot:"


@dataclass(frozen=True)
class FewShotSpec:
    k: int
    pool: str
    base: str
    strategy: str = "seed"  # seed | similar
    seed: int = 0


def parse_spec(raw: str) -> FewShotSpec:
    """``fewshot:K[:seed=N|:similar]:POOL@REF`` -> :class:`FewShotSpec`."""
    body = raw[len(PREFIX):] if raw.startswith(PREFIX) else raw
    head, at, base = body.partition("@")
    parts = head.split(":")
    hint = "fewshot:K:POOL@REF, fewshot:K:seed=N:POOL@REF or fewshot:K:similar:POOL@REF"
    if not at or not base or len(parts) < 2 or not parts[0].isdigit() or int(parts[0]) < 0:
        raise InputError("a few-shot reference must be fewshot:K:POOL@REF", [("reference", raw)], hint)
    k, strategy, seed = int(parts[0]), "seed", 0
    rest = parts[1:]
    if len(rest) > 1 and rest[0] == "similar":
        strategy, rest = "similar", rest[1:]
    elif len(rest) > 1 and rest[0].startswith("seed="):
        try:
            seed = int(rest[0][5:])
        except ValueError as exc:
            raise InputError("seed=N needs an integer", [("reference", raw)], hint) from exc
        rest = rest[1:]
    pool = ":".join(rest)
    if not pool:
        raise InputError("a few-shot reference needs a pool", [("reference", raw)], hint)
    return FewShotSpec(k, pool, base, strategy, seed)


def load_pool(pool: str) -> list[list[dict]]:
    """The pool's examples (each a message list with a user and an assistant turn)."""
    path = Path(pool).expanduser()
    if not path.is_file():
        from tuneterm.core.datasets import store

        path = store.resolve_path(pool, "train") if not path.is_dir() else path / "train.jsonl"
    from tuneterm.core.datasets.formats import iter_chat_messages

    examples = [messages for _, messages in iter_chat_messages(path)]
    if not examples:
        raise InputError("the few-shot pool is empty", [("file", str(path))])
    return examples


def _turn(messages: list[dict], role: str) -> str:
    found = [m.get("content", "") for m in messages if m.get("role") == role]
    return str(found[-1]) if found else ""


def select(pool: list[list[dict]], k: int, query: str = "", strategy: str = "seed",
           seed: int = 0) -> list[list[dict]]:
    """K examples: a seeded sample (deterministic), or the K most TF-IDF-similar to ``query``."""
    k = min(k, len(pool))
    if k == 0:
        return []
    if strategy == "similar":
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = [_turn(m, "user") for m in pool]
        vec = TfidfVectorizer().fit(texts + [query])
        sims = (vec.transform(texts) @ vec.transform([query]).T).toarray().ravel()
        order = sorted(range(len(pool)), key=lambda i: (-sims[i], i))[:k]
        return [pool[i] for i in reversed(order)]  # the most similar sits closest to the question
    return random.Random(seed).sample(pool, k)


def build_messages(prompt: str, shots: list[list[dict]], system: str | None = None) -> list[dict]:
    """[system] + (user, assistant) per shot + the user prompt. System: given, else the shots' own."""
    system = system or next((_turn(s, "system") for s in shots if _turn(s, "system")), None)
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    for shot in shots:
        messages += [{"role": "user", "content": _turn(shot, "user")},
                     {"role": "assistant", "content": _turn(shot, "assistant")}]
    messages.append({"role": "user", "content": prompt})
    return messages


def messages_for(spec: FewShotSpec, prompt: str, system: str | None = None,
                 pool: list[list[dict]] | None = None) -> list[dict]:
    """The full message list a few-shot variant sends to ``spec.base`` for ``prompt``."""
    pool = pool if pool is not None else load_pool(spec.pool)
    return build_messages(prompt, select(pool, spec.k, prompt, spec.strategy, spec.seed), system)


def apply(spec: FewShotSpec, messages: list[dict], pool: list[list[dict]] | None = None) -> list[dict]:
    """Eval-runner form: insert the shots before the last user turn of ``messages`` (keeps its system)."""
    system = next((m["content"] for m in messages if m.get("role") == "system"), None)
    prompt = _turn(messages, "user")
    return messages_for(spec, prompt, system, pool)
