"""What a hosted fine-tune of a dataset will cost, before it is submitted, on any provider.

One streaming pass over the JSONL file (constant memory) counts every example's tokens with
each model's tokenizer (:mod:`tuneterm.core.openai_tokens` for OpenAI's, the others in
:mod:`tuneterm.core.providers.tokens`, with an error band where only an estimate is possible);
each provider's price table and billing rule (:mod:`tuneterm.core.providers`) price it. For OpenAI:

- epochs: the user's number, or OpenAI's "auto" heuristic (:func:`auto_epochs`);
- billed tokens = epochs x sum(min(limit, tokens(example))): longer examples are truncated
  from the end and billed at the model's per-example limit;
- cost = billed tokens x training price / 1M, shown with a +-5 % range (the cookbook's own count
  is "not exact": tool JSON, weights and DPO pairs are estimated) and the price table's date;
- validation-file tokens are counted and reported, never billed;
- shutdown dates of the model and the 2027-01-06 end of new jobs are reported as warnings.

:func:`savings` answers "does fine-tuning pay off?": a K-shot prompt on the base model versus
a zero-shot prompt on the fine-tuned model, over N requests.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tuneterm.core.errors import ConfigError, DatasetError, NotFoundError
from tuneterm.core.prices import ModelPrice, PriceTable, load_prices, today

ESTIMATE_MARGIN = 0.05  # +-5 %: the count is the cookbook's estimate, not the server's tokenizer
MIN_EXAMPLES = 10  # the API rejects smaller training files


def auto_epochs(n_examples: int) -> int:
    """OpenAI's default epochs for ``n`` examples (cookbook Chat_finetuning_data_prep)."""
    n_epochs = 3
    if n_examples <= 0:
        return n_epochs
    if n_epochs * n_examples < 100:
        return min(25, 100 // n_examples)
    if n_epochs * n_examples > 25_000:
        return max(1, 25_000 // n_examples)
    return n_epochs


# --- the streaming pass --------------------------------------------------------------------------


@dataclass
class TokenStats:
    """Per-example token counts of one file under one encoding, folded as they stream past."""

    limits: tuple[int, ...] = ()
    n: int = 0
    total: int = 0
    min: int = 0
    max: int = 0
    n_preference: int = 0
    capped: dict[int, int] = field(default_factory=dict)  # limit -> sum(min(limit, tokens))
    over: dict[int, int] = field(default_factory=dict)  # limit -> examples above it

    def add(self, tokens: int) -> None:
        self.min = tokens if self.n == 0 else min(self.min, tokens)
        self.max = max(self.max, tokens)
        self.n += 1
        self.total += tokens
        for limit in self.limits:
            if tokens > limit:
                self.capped[limit] = self.capped.get(limit, 0) + limit
                self.over[limit] = self.over.get(limit, 0) + 1
            else:
                self.capped[limit] = self.capped.get(limit, 0) + tokens

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def _tracked(self, limit: int | None) -> bool:
        if limit is None or limit in self.limits or self.max <= limit:
            return limit in self.limits
        raise ValueError(f"token stats were not folded with the limit {limit}")

    def billable(self, limit: int | None) -> int:
        """sum(min(limit, tokens)) over the examples (every token when there is no limit)."""
        return self.capped.get(limit, 0) if self._tracked(limit) else self.total

    def n_over(self, limit: int | None) -> int:
        return self.over.get(limit, 0) if self._tracked(limit) else 0


def iter_jsonl(path: Path, invalid: list[int]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) per non-empty line; bad JSON lines go to ``invalid``."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError as exc:
        raise NotFoundError("the dataset file does not exist", [("file", str(path))]) from exc
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                invalid.append(lineno)


@dataclass
class PromptStats:
    """For --savings: the zero-shot prompt and the reply of each example, and K demonstrations."""

    few_shot: int = 0
    n: int = 0
    prompt_tokens: int = 0  # messages before the final assistant turn, + priming
    output_tokens: int = 0  # the final assistant reply
    shot_tokens: int = 0  # the K demonstrations (user+assistant turns of the first K examples)
    shots_taken: int = 0

    def add(self, example: Any, counter) -> None:
        msgs = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(msgs, list) or not msgs:
            return
        last = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "assistant"),
                   default=None)
        if last is None:
            return
        prompt = msgs[:last]
        self.n += 1
        self.prompt_tokens += counter.chat(prompt, example.get("tools"), example.get("functions"))
        reply = msgs[last]
        self.output_tokens += counter.content(reply.get("content")) + sum(
            counter.call(c) for c in reply.get("tool_calls") or [])
        if self.shots_taken < self.few_shot:
            demo = [m for m in msgs[: last + 1] if isinstance(m, dict) and m.get("role") != "system"]
            self.shot_tokens += counter.messages(demo)
            self.shots_taken += 1

    @property
    def mean_prompt(self) -> float:
        return self.prompt_tokens / self.n if self.n else 0.0

    @property
    def mean_output(self) -> float:
        return self.output_tokens / self.n if self.n else 0.0


@dataclass
class Scan:
    path: str
    stats: dict[str, TokenStats]  # encoding -> stats
    invalid_lines: list[int]
    n_lines: int = 0
    prompts: PromptStats | None = None


def scan_file(path: Path, encodings: dict[str, tuple[int, ...]], prompts_for: str | None = None,
              few_shot: int = 0) -> Scan:
    """Count every example of ``path`` under each tokenizer (key -> limits to cap at), streaming."""
    from tuneterm.core.providers.tokens import counter as counter_for_key

    counters = {name: counter_for_key(name) for name in encodings}
    stats = {name: TokenStats(limits=limits) for name, limits in encodings.items()}
    invalid: list[int] = []
    prompts = PromptStats(few_shot=few_shot) if prompts_for else None
    n_lines = 0
    for _lineno, example in iter_jsonl(Path(path), invalid):
        n_lines += 1
        is_pair = isinstance(example, dict) and "input" in example and "messages" not in example
        for name, counter in counters.items():
            st = stats[name]
            st.add(counter.example(example))
            if is_pair:
                st.n_preference += 1
        if prompts is not None:
            prompts.add(example, counters[prompts_for])
    return Scan(str(path), stats, invalid, n_lines, prompts)


# --- estimates -----------------------------------------------------------------------------------


def is_shut_down(row: ModelPrice, on: Any = None) -> bool:
    return row.shutdown_date is not None and row.shutdown_date <= (on or today())


def new_jobs_closed(table: PriceTable, on: Any = None) -> bool:
    return table.no_new_jobs_after is not None and table.no_new_jobs_after <= (on or today())


def shutdown_warnings(row: ModelPrice, table: PriceTable, on: Any = None) -> tuple[list[str], bool]:
    """Human warnings for ``row`` as of ``on`` (today), and whether new jobs are impossible."""
    on = on or today()
    if table.provider != "openai":
        return _provider_warnings(row, table, on)
    warnings: list[str] = []
    blocked = False
    if is_shut_down(row, on):
        blocked = True
        warnings.append(f"{row.id} was shut down on {row.shutdown_date}: new jobs fail and its "
                        "fine-tuned models no longer serve")
    elif row.shutdown_date is not None:
        days = (row.shutdown_date - on).days
        warnings.append(f"{row.id} shuts down on {row.shutdown_date} (in {days} days): its fine-tuned "
                        "models stop serving then")
    if table.no_new_jobs_after is not None:
        days = (table.no_new_jobs_after - on).days
        if days <= 0:
            blocked = True
            warnings.append(f"OpenAI accepts no new fine-tuning jobs since {table.no_new_jobs_after}; "
                            "existing fine-tuned models serve until their base shuts down")
        else:
            warnings.append(f"OpenAI stops accepting new fine-tuning jobs on {table.no_new_jobs_after} "
                            f"(in {days} days); since 2026-07-02 only orgs with recent fine-tuned-model "
                            "use can create jobs")
    return warnings, blocked


def _provider_warnings(row: ModelPrice, table: PriceTable, on) -> tuple[list[str], bool]:
    """Training and serving dates of a non-OpenAI provider's model, as its price table gives them."""
    warnings: list[str] = []
    blocked = False
    title = table.provider.capitalize() if table.provider != "azure" else "Azure OpenAI"
    if row.training_until is not None:
        days = (row.training_until - on).days
        if days < 0:
            blocked = True
            warnings.append(f"{title} stopped training {row.id} on {row.training_until}")
        else:
            warnings.append(f"{title} trains {row.id} until {row.training_until} (in {days} days): "
                            f"{row.training_note or 'then no new jobs'}")
    elif row.training_note:
        warnings.append(f"{title}: {row.training_note}")
    if row.deployment_until is not None:
        if row.deployment_until <= on:
            blocked = True
            warnings.append(f"{title} fine-tuned {row.id} deployments retired on {row.deployment_until}")
        else:
            warnings.append(f"fine-tuned {row.id} deployments serve until {row.deployment_until}")
    return warnings, blocked


def resolve_epochs(epochs: int | str | None, n_examples: int) -> tuple[int, str]:
    if epochs in (None, "auto"):
        return auto_epochs(n_examples), "auto"
    try:
        value = int(epochs)
    except (TypeError, ValueError) as exc:
        raise ConfigError("epochs must be a number from 1 to 50 or 'auto'", [("epochs", str(epochs))]) from exc
    if not 1 <= value <= 50:
        raise ConfigError("epochs must be a number from 1 to 50 or 'auto'", [("epochs", str(value))],
                          "OpenAI accepts n_epochs 1-50")
    return value, "user"


def billing(stats: TokenStats, row: ModelPrice, epochs: int, margin: float = ESTIMATE_MARGIN,
            eval_tokens: int = 0) -> dict:
    """The billed tokens and price for one model, from token stats already counted.

    ``eval_tokens`` (Together: n_evals x validation tokens) are billed on top; a provider's
    minimum fee per job (``min_fee``) is the floor of the training cost.
    """
    limit = row.max_example_tokens
    per_epoch = stats.billable(limit)
    billed = per_epoch * epochs + eval_tokens
    cost = None if row.training is None else round(billed * row.training / 1e6, 6)
    floor = None
    if cost is not None and row.min_fee and cost < row.min_fee:
        cost, floor = row.min_fee, row.min_fee
    return {
        "billable_tokens_per_epoch": per_epoch,
        "billed_tokens": billed if (row.training is not None or not row.verified) else None,
        "price_per_1m_usd": row.training,
        "price_status": row.price_status,
        "estimated_cost_usd": cost,
        "minimum_fee_applied": floor is not None,
        "estimated_cost_range_usd": None if cost is None or floor is not None else
        [round(cost * (1 - margin), 6), round(cost * (1 + margin), 6)],
    }


def extras(row: ModelPrice, cost: float | None) -> tuple[list[dict], float | None, float]:
    """Fees beyond training (first month of storage, hosting), the total, and the known minimum."""
    items: list[dict] = []
    known = 0.0
    if row.min_fee:
        items.append({"item": "minimum fee per job", "usd": row.min_fee})
    if row.storage_per_month is not None:
        items.append({"item": "model storage, first month", "usd": row.storage_per_month})
        known += row.storage_per_month
    if row.hosting_per_hour is not None:
        items.append({"item": "hosting per hour of deployment (not in the total)", "usd": row.hosting_per_hour})
    total = None if cost is None else round(cost + known, 6)
    minimum = round(max(row.min_fee or 0.0, cost or 0.0) + known, 6)
    return items, total, minimum


def estimate_model(scan: Scan, row: ModelPrice, table: PriceTable, epochs: int | str | None = "auto",
                   validation: Scan | None = None, on: Any = None, n_evals: int = 0) -> dict:
    from tuneterm.core.providers.tokens import describe, tokenizer_key

    encoding = tokenizer_key(row, table.provider)
    exact, band = describe(encoding)
    st = scan.stats[encoding]
    n_epochs, epochs_source = resolve_epochs(epochs, st.n)
    result: dict[str, Any] = {
        "provider": table.provider,
        "model": row.id,
        "encoding": encoding,
        "methods": list(row.methods),
        "dataset": scan.path,
        "n_examples": st.n,
        "n_preference_pairs": st.n_preference,
        "n_invalid_lines": len(scan.invalid_lines),
        "total_tokens": st.total,
        "min_tokens": st.min,
        "mean_tokens": round(st.mean, 1),
        "max_tokens": st.max,
        "max_example_tokens": row.max_example_tokens,
        "n_over_limit": st.n_over(row.max_example_tokens),
        "n_epochs": n_epochs,
        "epochs_source": epochs_source,
        "tokens_exact": exact,
        "token_band": band,
    }
    eval_tokens = 0
    if validation is not None and n_evals and table.provider == "together":
        eval_tokens = n_evals * validation.stats[encoding].total
    result.update(billing(st, row, n_epochs, max(ESTIMATE_MARGIN, band), eval_tokens))
    items, total, minimum = extras(row, result["estimated_cost_usd"])
    result.update(extras=items, total_usd=total, minimum_total_usd=minimum)
    result["prices_as_of"] = row.as_of or table.as_of
    result["prices_source"] = row.source or table.source
    result["prices_caution"] = table.caution
    result["training_until"] = row.training_until.isoformat() if row.training_until else None
    result["deployment_until"] = row.deployment_until.isoformat() if row.deployment_until else None
    warnings, blocked = shutdown_warnings(row, table, on)
    notes: list[str] = []
    if not exact:
        notes.append(f"token counts are an estimate (o200k_base, ±{band:.0%} measured on the sample data): "
                     f"no tokenizer for {row.id} on this machine")
    if row.training is None:
        if row.training_per_hour is not None:
            notes.append(f"{row.id} is billed ${row.training_per_hour:g} per training hour (reinforcement "
                         "fine-tuning), not per token: no token-based estimate")
        elif table.provider == "openai":
            notes.append(f"OpenAI publishes no fine-tuning price for {row.id}")
        else:
            notes.append(f"price unknown: no verified per-token rate for {row.id} (see the provider's own estimate)")
    elif not row.verified:
        notes.append(f"price unverified: ${row.training:g}/1M comes from {row.source or table.source}")
    from tuneterm.core.providers import get as get_provider

    minimum_examples = get_provider(table.provider).min_examples
    if st.n < minimum_examples:
        warnings.append(f"{st.n} examples: {get_provider(table.provider).title} rejects training files with "
                        f"fewer than {minimum_examples}")
    if result["n_over_limit"]:
        warnings.append(f"{result['n_over_limit']} examples exceed {row.max_example_tokens} tokens: they are "
                        "truncated from the end and billed at the limit")
    if st.n_preference and "dpo" not in row.methods:
        warnings.append(f"the file holds DPO pairs but {row.id} does not support DPO")
    if st.n_preference:
        notes.append("DPO pairs counted as prompt+preferred plus prompt+non-preferred (pair billing is undocumented)")
    if scan.invalid_lines:
        shown = ", ".join(str(n) for n in scan.invalid_lines[:5])
        warnings.append(f"{len(scan.invalid_lines)} lines are not JSON and were skipped (lines {shown}); "
                        "run `tuneterm data validate`")
    if validation is not None:
        vst = validation.stats[encoding]
        result["validation"] = {"dataset": validation.path, "n_examples": vst.n, "total_tokens": vst.total,
                                "billed": False}
    else:
        result["validation"] = None
    result["shutdown_date"] = row.shutdown_date.isoformat() if row.shutdown_date else None
    result["shut_down"] = is_shut_down(row, on)
    result["new_jobs_blocked"] = blocked
    result["no_new_jobs_after"] = table.no_new_jobs_after.isoformat() if table.no_new_jobs_after else None
    result["warnings"] = warnings
    result["notes"] = notes
    return result


def _limits_by_encoding(rows: Iterable[ModelPrice], provider: str = "openai") -> dict[str, tuple[int, ...]]:
    from tuneterm.core.providers.tokens import tokenizer_key

    out: dict[str, set[int]] = {}
    for row in rows:
        limits = out.setdefault(tokenizer_key(row, provider), set())
        if row.max_example_tokens:
            limits.add(row.max_example_tokens)
    return {k: tuple(sorted(v)) for k, v in out.items()}


def _table(prices, provider: str) -> PriceTable:
    return prices if isinstance(prices, PriceTable) else load_prices(prices, provider)


def default_model(provider: str) -> str:
    from tuneterm.core.providers import get as get_provider

    return get_provider(provider).default_model


def estimate(dataset: str | Path, model: str | None = None, epochs: int | str | None = "auto",
             validation: str | Path | None = None, compare: bool = False,
             prices: str | Path | PriceTable | None = None, on: Any = None, provider: str = "openai",
             n_evals: int = 0) -> dict:
    """The cost estimate of fine-tuning ``model`` on ``dataset`` at ``provider`` (and its other models with ``compare``)."""
    table = _table(prices, provider)
    model = model or default_model(table.provider)
    row = table.get(model)
    rows = [row] + ([m for m in table.models if m is not row and m.methods != ("reinforcement",)] if compare else [])
    encodings = _limits_by_encoding(rows, table.provider)
    scan = scan_file(Path(dataset), encodings)
    vscan = scan_file(Path(validation), {k: () for k in encodings}) if validation else None
    result = estimate_model(scan, row, table, epochs, vscan, on, n_evals)
    result["requested_model"] = model
    if table.provider != "openai":  # the provider's own data rules (OpenAI's: `tuneterm data validate`)
        from tuneterm.core.providers import get as get_provider

        provider = get_provider(table.provider)
        _n, problems = provider.check_file(Path(dataset))
        result["data_problems"] = [{"line": line, "field": f, "problem": p} for line, f, p in problems[:20]]
        if problems:
            line, f, p = problems[0]
            result["warnings"].append(f"{len(problems)} problem(s) under the data rules of {provider.title}, first: "
                                      + (f"line {line}, " if line else "") + f"{f}: {p}")
    if compare:
        result["compare"] = [estimate_model(scan, r, table, epochs, vscan, on, n_evals) for r in rows]
    return result


def compare_providers(dataset: str | Path, epochs: int | str | None = "auto", validation: str | Path | None = None,
                      on: Any = None, providers: Iterable[str] | None = None) -> dict:
    """Every provider's fine-tunable models for ``dataset`` in one pass over the file; each row names its provider."""
    from tuneterm.core.prices import PROVIDERS

    tables = [load_prices(None, p) for p in (providers or PROVIDERS)]
    pairs = [(t, r) for t in tables for r in t.models if r.methods != ("reinforcement",)]
    encodings: dict[str, set[int]] = {}
    for t, r in pairs:
        for key, limits in _limits_by_encoding([r], t.provider).items():
            encodings.setdefault(key, set()).update(limits)
    limits = {k: tuple(sorted(v)) for k, v in encodings.items()}
    scan = scan_file(Path(dataset), limits)
    vscan = scan_file(Path(validation), {k: () for k in limits}) if validation else None
    rows = [estimate_model(scan, r, t, epochs, vscan, on) for t, r in pairs]
    first = next(iter(scan.stats.values()))
    return {"dataset": scan.path, "n_examples": first.n, "compare": rows,
            "cautions": {t.provider: t.caution for t in tables if t.caution}}


# --- savings: few-shot base model vs zero-shot fine-tuned model ---------------------------------


def savings(dataset: str | Path, model: str | None, requests: int, few_shot: int, epochs: int | str | None = "auto",
            prices: str | Path | PriceTable | None = None, on: Any = None, provider: str = "openai") -> dict:
    """Serve ``requests`` requests: K-shot prompts on the base model vs zero-shot on the fine-tune."""
    from tuneterm.core.providers.tokens import tokenizer_key

    if requests < 1:
        raise ConfigError("--requests must be at least 1", [("requests", str(requests))])
    if few_shot < 0:
        raise ConfigError("--few-shot must be 0 or more", [("few-shot", str(few_shot))])
    table = _table(prices, provider)
    row = table.get(model or default_model(table.provider))
    encoding = tokenizer_key(row, table.provider)
    limits = (row.max_example_tokens,) if row.max_example_tokens else ()
    scan = scan_file(Path(dataset), {encoding: limits}, prompts_for=encoding, few_shot=few_shot)
    est = estimate_model(scan, row, table, epochs, None, on)
    p = scan.prompts
    assert p is not None
    if p.n == 0:
        raise DatasetError("no chat example with an assistant reply to measure prompts on",
                           [("file", str(dataset))], "--savings needs chat examples ({\"messages\": [...]})")
    missing = [k for k in ("base_input", "base_output", "ft_input", "ft_output") if getattr(row, k) is None]
    if missing or row.training is None:
        raise ConfigError(f"the {table.provider} price table lacks the prices --savings needs",
                          [("model", row.id), ("missing", ", ".join(missing or ["training"])),
                           ("why", "no verified rate" if table.provider != "openai" else "not published")],
                          "add them, with their date and source, to your own price table (--prices FILE)")
    shots_per_request = p.shot_tokens / p.shots_taken * few_shot if p.shots_taken else 0.0
    base_prompt = p.mean_prompt + shots_per_request
    ft_prompt = p.mean_prompt
    base_request = (base_prompt * row.base_input + p.mean_output * row.base_output) / 1e6
    ft_request = (ft_prompt * row.ft_input + p.mean_output * row.ft_output) / 1e6
    per_request = base_request - ft_request
    training_cost = est["estimated_cost_usd"] or 0.0
    break_even = math.ceil(training_cost / per_request) if per_request > 0 else None
    total_base = base_request * requests
    total_ft = ft_request * requests + training_cost
    return {
        "provider": table.provider,
        "model": row.id,
        "encoding": encoding,
        "requests": requests,
        "few_shot": few_shot,
        "shots_available": p.shots_taken,
        "mean_prompt_tokens_zero_shot": round(ft_prompt, 1),
        "mean_prompt_tokens_few_shot": round(base_prompt, 1),
        "mean_output_tokens": round(p.mean_output, 1),
        "prompt_tokens_saved_per_request": round(shots_per_request, 1),
        "base_cost_per_request_usd": round(base_request, 8),
        "finetuned_cost_per_request_usd": round(ft_request, 8),
        "savings_per_request_usd": round(per_request, 8),
        "training_cost_usd": training_cost,
        "break_even_requests": break_even,
        "total_base_usd": round(total_base, 6),
        "total_finetuned_usd": round(total_ft, 6),
        "net_savings_usd": round(total_base - total_ft, 6),
        "prices": {"base_input": row.base_input, "base_output": row.base_output,
                   "ft_input": row.ft_input, "ft_output": row.ft_output, "training": row.training},
        "prices_as_of": row.as_of or table.as_of,
        "prices_source": row.source or table.source,
        "estimate": est,
    }


def as_json(obj: Any) -> str:
    return json.dumps(obj if not hasattr(obj, "__dataclass_fields__") else asdict(obj), sort_keys=False)
