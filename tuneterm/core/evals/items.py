"""Eval items: rows read from a task's data, turned into prompts and targets (torch-free).

A chat row (``{"messages": [...]}``) exposes ``system``, ``input`` (the last user turn),
``target`` (the final assistant turn) and ``messages`` (the prompt turns without that final
answer) to templates, next to the row's own fields. Placeholders are ``{{field}}``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneterm.core.errors import InputError, NotFoundError
from tuneterm.core.evals.spec import TaskSpec

_VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


@dataclass
class EvalItem:
    id: str
    line: int
    row: dict
    messages: list[dict] | None = None  # chat prompt (chat template on)
    context: str = ""  # plain-text prompt (chat template off)
    target: str = ""
    choices: list[str] = field(default_factory=list)
    gold: int | None = None
    text: str = ""  # perplexity: the scored text
    duplicate_of: int | None = None  # the line of the first identical row (an id-less duplicate)

    def prompt_view(self) -> Any:
        return self.messages if self.messages is not None else self.context


# --- reading rows ------------------------------------------------------------------------------


def resolve_data_path(spec: TaskSpec, path: str | None = None, dataset: str | None = None,
                      split: str | None = None) -> Path:
    if path:
        p = Path(path)
        if not p.is_absolute():
            p = (spec.base_dir / p).resolve()
        if p.is_file():
            return p
        dataset = dataset or path  # maybe a workspace dataset name
        missing = p
    else:
        missing = None
    try:
        from tuneterm.core.datasets import store
    except ImportError:
        store = None
    if store is not None and dataset:
        try:
            return Path(store.resolve_path(dataset, split))
        except Exception:  # noqa: BLE001 - reported below with the spec's context
            pass
    raise NotFoundError(
        "eval data not found",
        [("spec", spec.source), ("field", "data.path" if path else "data.dataset"),
         ("looked for", str(missing or dataset))],
        "paths are relative to the spec file; a workspace dataset needs `tuneterm datasets import` first "
        "(or `make run` / `tuneterm setup` for the sample data)",
    )


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs from a JSONL or CSV file."""
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                rows.append((n, dict(row)))
        return rows
    from tuneterm.core.jsonl import iter_jsonl

    return list(iter_jsonl(path, what="eval data"))


def chat_fields(row: dict) -> dict:
    """Derived fields of a chat row; an empty dict when the row is not a chat."""
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return {}
    prompt = list(msgs)
    target = ""
    if prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") == "assistant":
        target = str(prompt[-1].get("content") or "")
        prompt = prompt[:-1]
    system = next((str(m.get("content") or "") for m in prompt if m.get("role") == "system"), "")
    users = [m for m in prompt if m.get("role") == "user"]
    return {"system": system, "input": str(users[-1].get("content") or "") if users else "",
            "target": target, "messages": [{"role": m.get("role"), "content": m.get("content")} for m in prompt]}


def _lookup(scope: dict, dotted: str) -> Any:
    value: Any = scope
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(dotted)
    return value


def render(template: str, scope: dict, *, spec: TaskSpec, field: str, line: int) -> str:
    def sub(m: re.Match) -> str:
        try:
            value = _lookup(scope, m.group(1))
        except KeyError:
            raise InputError(
                f"the template uses {{{{{m.group(1)}}}}}, which this row lacks",
                [("spec", spec.source), ("field", field), ("data line", str(line)),
                 ("row fields", ", ".join(sorted(scope)) or "(none)")],
                "use one of the row's fields",
            ) from None
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _VAR_RE.sub(sub, template)


def _explicit_id(spec: TaskSpec, row: dict) -> bool:
    return bool(spec.data.id) or "id" in row


def _item_id(spec: TaskSpec, row: dict, line: int, path: Path) -> str:
    """The row's own id (``data.id`` or ``id``), else a hash of its content. Identical id-less rows
    are told apart by occurrence in :func:`build_items` (``HASH``, ``HASH-2``, ...)."""
    if spec.data.id:
        if spec.data.id not in row:
            raise InputError("a row has no id field", [("spec", spec.source), ("field", "data.id"),
                             ("file", str(path)), ("line", str(line)), ("id field", spec.data.id)])
        return str(row[spec.data.id])
    if "id" in row:
        return str(row["id"])
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# --- building items ----------------------------------------------------------------------------


def _scope(row: dict) -> dict:
    return {**row, **chat_fields(row)}


def _base_prompt(spec: TaskSpec, scope: dict, line: int, chat: bool) -> tuple[list[dict] | None, str]:
    """The item's own prompt: (messages, context)."""
    system = (render(spec.prompt.system, scope, spec=spec, field="prompt.system", line=line)
              if spec.prompt.system is not None else scope.get("system") or "")
    if spec.prompt.template is None and "messages" in scope and isinstance(scope.get("messages"), list):
        turns = [m for m in scope["messages"] if m.get("role") != "system"]
        if not chat:
            user_text = scope.get("input", "")
            return None, (system + "\n\n" if system else "") + user_text
        return ([{"role": "system", "content": system}] if system else []) + turns, ""
    template = spec.prompt.template if spec.prompt.template is not None else "{{input}}"
    user = render(template, scope, spec=spec, field="prompt.template", line=line)
    if chat:
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}], ""
    return None, (system + "\n\n" if system and spec.prompt.system is not None else "") + user


def _target(spec: TaskSpec, scope: dict, line: int) -> str:
    template = spec.target if spec.target is not None else "{{target}}"
    return render(template, scope, spec=spec, field="target", line=line)


def _choices(spec: TaskSpec, scope: dict, line: int) -> list[str]:
    if isinstance(spec.choices, list):
        return [str(c) for c in spec.choices]
    try:
        value = _lookup(scope, str(spec.choices))
    except KeyError:
        raise InputError("a row lacks the choices field", [("spec", spec.source), ("field", "choices"),
                         ("data line", str(line)), ("choices field", str(spec.choices))]) from None
    if not isinstance(value, list) or len(value) < 2:
        raise InputError("choices must be a list of at least two strings", [("spec", spec.source),
                         ("field", "choices"), ("data line", str(line))])
    return [str(c) for c in value]


def _gold(target: str, choices: list[str], spec: TaskSpec, line: int) -> int:
    t = target.strip()
    if t.lstrip("-").isdigit() and 0 <= int(t) < len(choices):
        return int(t)
    for i, c in enumerate(choices):
        if c.strip() == t:
            return i
    raise InputError("the target is neither a choice index nor one of the choices",
                     [("spec", spec.source), ("field", "target"), ("data line", str(line)), ("target", t[:80])])


def _fewshot_pool(spec: TaskSpec) -> list[tuple[int, dict]]:
    pool = spec.fewshot.pool
    if not pool:
        raise InputError("few-shot needs a pool", [("spec", spec.source), ("field", "fewshot.pool")],
                         "set fewshot.pool to a file or a workspace dataset of examples")
    return read_rows(resolve_data_path(spec, path=pool, split="train"))


def _shots(spec: TaskSpec, n: int, pool: list[tuple[int, dict]], item_id: str, seed: int) -> list[tuple[int, dict]]:
    path = Path(spec.source)
    candidates = [(ln, r) for ln, r in pool if _item_id(spec, r, ln, path) != item_id]
    if spec.fewshot.sampler == "first_n":
        return candidates[:n]
    rng = random.Random(f"{seed}:{item_id}")
    return rng.sample(candidates, min(n, len(candidates)))


def build_items(spec: TaskSpec, *, limit: int | None = None, shots: int | None = None) -> list[EvalItem]:
    """The task's items with prompts rendered; ``shots`` overrides ``fewshot.n``."""
    path = resolve_data_path(spec, spec.data.path, spec.data.dataset, spec.data.split)
    rows = read_rows(path)
    cap = min(x for x in (limit, spec.data.limit, len(rows)) if x is not None)
    rows = rows[:cap]
    n_shots = spec.fewshot.n if shots is None else shots
    if spec.type == "perplexity":
        n_shots = 0  # scored text has no prompt to put examples in front of
    pool = _fewshot_pool(spec) if n_shots else []
    chat = spec.use_chat_template
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    occurrences: dict[str, int] = {}
    for line, row in rows:
        scope = _scope(row)
        item_id = own_id = _item_id(spec, row, line, path)
        first = None
        if item_id in seen and not _explicit_id(spec, row):  # a repeated row: same content, its own id
            first = seen[item_id]
            occurrences[item_id] = occurrences.get(item_id, 1) + 1
            item_id = f"{item_id}-{occurrences[item_id]}"
        elif item_id in seen:
            raise InputError("two rows share an item id", [("spec", spec.source), ("file", str(path)),
                             ("lines", f"{seen[item_id]} and {line}"), ("id", item_id)],
                             "ids must be unique and stable: they key the cache and the paired comparison")
        else:
            seen[item_id] = line
        item = EvalItem(id=item_id, line=line, row=row, duplicate_of=first)
        if spec.type == "perplexity":
            tmpl = spec.text if spec.text is not None else (spec.target or "{{target}}")
            item.text = render(tmpl, scope, spec=spec, field="text", line=line)
            items.append(item)
            continue
        messages, context = _base_prompt(spec, scope, line, chat)
        item.target = _target(spec, scope, line)
        if spec.type == "choice":
            item.choices = _choices(spec, scope, line)
            item.gold = _gold(item.target, item.choices, spec, line)
        if n_shots:
            examples = _shots(spec, n_shots, pool, own_id, spec.fewshot.seed)  # never the row itself
            if chat:
                extra: list[dict] = []
                for ln, ex in examples:
                    s = _scope(ex)
                    ex_msgs, _ = _base_prompt(spec, s, ln, True)
                    extra += [m for m in ex_msgs if m["role"] != "system"]
                    extra.append({"role": "assistant", "content": _example_answer(spec, s, ln)})
                sys_msgs = [m for m in messages if m["role"] == "system"]
                rest = [m for m in messages if m["role"] != "system"]
                messages = sys_msgs + extra + rest
            else:
                parts = []
                for ln, ex in examples:
                    s = _scope(ex)
                    _, ex_ctx = _base_prompt(spec, s, ln, False)
                    parts.append(ex_ctx + spec.target_delimiter + _example_answer(spec, s, ln))
                context = spec.fewshot.delimiter.join(parts + [context])
        item.messages, item.context = messages, context
        items.append(item)
    return items


def _example_answer(spec: TaskSpec, scope: dict, line: int) -> str:
    target = _target(spec, scope, line)
    if spec.type == "choice":
        choices = _choices(spec, scope, line)
        return choices[_gold(target, choices, spec, line)]
    return target


# --- few-shot variants (fewshot:K:POOL@REF) -------------------------------------------------------


def with_fewshot(spec: TaskSpec, items: list[EvalItem], fs, pool: list[list[dict]]) -> list[EvalItem]:
    """Copies of ``items`` prompted as the few-shot variant ``fs`` (a ``tuneterm.core.fewshot.FewShotSpec``).

    Chat prompts get the K pool examples as earlier user/assistant turns (``fewshot.apply``: the
    item's system prompt stays first); plain-text prompts get them as ``user<delimiter>answer``
    blocks before the question. Perplexity items have no prompt and are returned unchanged.
    """
    from dataclasses import replace

    from tuneterm.core import fewshot

    if spec.type == "perplexity" or fs.k == 0:
        return list(items)
    out = []
    for it in items:
        if it.messages is not None:
            out.append(replace(it, messages=fewshot.apply(fs, it.messages, pool)))
            continue
        query = str(it.row.get("input") or chat_fields(it.row).get("input") or it.context)
        shots = fewshot.select(pool, fs.k, query, fs.strategy, fs.seed)
        blocks = [_last(s, "user") + spec.target_delimiter + _last(s, "assistant") for s in shots]
        out.append(replace(it, context=spec.fewshot.delimiter.join(blocks + [it.context])))
    return out


def classifier_text(it: EvalItem) -> str:
    """What a classifier artifact reads for an item: the last user turn, as it was trained on."""
    if it.messages:
        from tuneterm.core.datasets.labels import text_of

        text = text_of(it.messages)
        if text is not None:
            return text
    return str(chat_fields(it.row).get("input") or it.context)


def _last(messages: list[dict], role: str) -> str:
    found = [m.get("content", "") for m in messages if m.get("role") == role]
    return str(found[-1]) if found else ""
