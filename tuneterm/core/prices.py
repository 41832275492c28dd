"""Hosted fine-tuning price tables: prices with their date, source and whether they were verified.

One table per provider ships as ``tuneterm/data/<provider>_prices.toml`` (openai, azure, together,
fireworks, mistral). A user file (``--prices FILE`` or the ``prices_file`` setting, for OpenAI)
overrides it row by row: a row with the same ``id`` replaces the shipped row, new rows are added,
and top-level keys (``as_of``, ``source``, ``no_new_jobs_after``) win.

A row whose ``verified`` is false carries a figure nobody could check at its source; a row without
``training`` has no known price. Both print as such, never as a confident number.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tuneterm.core.errors import ConfigError

SHIPPED = "openai_prices.toml"
PROVIDERS = ("openai", "azure", "together", "fireworks", "mistral")


@dataclass(frozen=True)
class ModelPrice:
    id: str
    aliases: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("supervised",)
    training: float | None = None  # USD per 1M trained tokens
    training_per_hour: float | None = None  # RFT
    ft_input: float | None = None
    ft_cached: float | None = None
    ft_output: float | None = None
    base_input: float | None = None
    base_output: float | None = None
    max_example_tokens: int | None = None
    shutdown_date: dt.date | None = None
    as_of: str = ""
    source: str = ""
    verified: bool = True  # False: a figure seen but not confirmed at its source
    params_b: float | None = None  # model size in billions of parameters (size-bracket billing)
    tokenizer: str = ""  # "" = tiktoken by model name; "llama3", "mistral:FILE", "hf:REPO", "estimate"
    training_until: dt.date | None = None  # the last day this provider trains the model
    training_note: str = ""
    deployment_until: dt.date | None = None
    min_fee: float | None = None  # USD per job
    hosting_per_hour: float | None = None  # USD per hour of a deployed fine-tune
    storage_per_month: float | None = None  # USD per month per fine-tuned model

    @property
    def token_billed(self) -> bool:
        return self.training is not None

    @property
    def price_status(self) -> str:
        if self.training is None:
            return "unknown"
        return "verified" if self.verified else "unverified"


@dataclass
class PriceTable:
    models: list[ModelPrice]
    as_of: str
    source: str
    no_new_jobs_after: dt.date | None
    files: list[str] = field(default_factory=list)
    provider: str = "openai"
    caution: str = ""
    no_new_jobs_source: str = ""

    def find(self, model: str) -> ModelPrice | None:
        from tuneterm.core.openai_tokens import base_model

        base = base_model(model) if self.provider in ("openai", "azure") else model.strip()
        for row in self.models:
            if base == row.id or base in row.aliases:
                return row
        return None

    def get(self, model: str) -> ModelPrice:
        row = self.find(model)
        if row is None:
            from tuneterm.core.openai_tokens import base_model

            raise ConfigError(
                f"{self.provider} does not list this model",
                [("model", model), ("base", base_model(model)), ("price table", ", ".join(self.files))],
                "pick one of: " + ", ".join(m.id for m in self.models)
                + "; or add a [[model]] row to your own table (--prices FILE)",
            )
        return row

    def fine_tunable(self, method: str = "supervised") -> list[ModelPrice]:
        return [m for m in self.models if method in m.methods]


def today() -> dt.date:
    """Today's date; ``TUNETERM_TODAY=YYYY-MM-DD`` pins it (tests, what-if runs)."""
    pinned = os.environ.get("TUNETERM_TODAY")
    if pinned:
        try:
            return dt.date.fromisoformat(pinned)
        except ValueError as exc:
            raise ConfigError("TUNETERM_TODAY is not a date", [("value", pinned)], "use YYYY-MM-DD") from exc
    return dt.date.today()


def _date(value: Any, where: str) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError("a date in the price table is not YYYY-MM-DD", [("where", where), ("value", str(value))]) from exc


def _number(row: dict, key: str, where: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError("a price must be a number >= 0", [("where", where), ("field", key), ("value", repr(value))])
    return float(value)


def _row(raw: dict, defaults: dict, where: str) -> ModelPrice:
    if not isinstance(raw.get("id"), str) or not raw["id"]:
        raise ConfigError("a [[model]] row has no id", [("where", where)], 'add id = "gpt-4o-mini-2024-07-18"')
    where = f"{where}, model {raw['id']}"
    limit = raw.get("max_example_tokens")
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ConfigError("max_example_tokens must be a positive integer", [("where", where), ("value", repr(limit))])
    return ModelPrice(
        id=raw["id"],
        aliases=tuple(raw.get("aliases", ())),
        methods=tuple(raw.get("methods", ("supervised",))),
        training=_number(raw, "training", where),
        training_per_hour=_number(raw, "training_per_hour", where),
        ft_input=_number(raw, "ft_input", where),
        ft_cached=_number(raw, "ft_cached", where),
        ft_output=_number(raw, "ft_output", where),
        base_input=_number(raw, "base_input", where),
        base_output=_number(raw, "base_output", where),
        max_example_tokens=limit,
        shutdown_date=_date(raw.get("shutdown_date"), where),
        as_of=str(raw.get("as_of", defaults.get("as_of", ""))),
        source=str(raw.get("source", defaults.get("source", ""))),
        verified=bool(raw.get("verified", defaults.get("verified", True))),
        params_b=_number(raw, "params_b", where),
        tokenizer=str(raw.get("tokenizer", "")),
        training_until=_date(raw.get("training_until"), where),
        training_note=str(raw.get("training_note", "")),
        deployment_until=_date(raw.get("deployment_until"), where),
        min_fee=_number(raw, "min_fee", where) if "min_fee" in raw else _number(defaults, "min_fee", where),
        hosting_per_hour=_number(raw, "hosting_per_hour", where),
        storage_per_month=(_number(raw, "storage_per_month", where) if "storage_per_month" in raw
                           else _number(defaults, "storage_per_month", where)),
    )


def _read(path: Path | None, provider: str = "openai") -> tuple[dict, str]:
    if path is None:
        if provider not in PROVIDERS:
            raise ConfigError("unknown provider", [("provider", provider)], "use one of: " + ", ".join(PROVIDERS))
        name = f"{provider}_prices.toml"
        text = resources.files("tuneterm").joinpath("data", name).read_text(encoding="utf-8")
        return tomllib.loads(text), f"tuneterm/data/{name}"
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError("the price file does not exist", [("file", str(path))],
                          "check --prices / the prices_file setting")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), str(path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("the price file is not valid TOML", [("file", str(path)), ("problem", str(exc))]) from exc


def _user_file(explicit: str | Path | None) -> Path | None:
    if explicit:
        return Path(explicit)
    from tuneterm.core.settings import get_settings

    return get_settings().prices_file


def load_prices(override: str | Path | None = None, provider: str = "openai") -> PriceTable:
    """``provider``'s shipped table, overridden by ``override`` (or, for OpenAI, the ``prices_file`` setting)."""
    shipped, shipped_name = _read(None, provider)
    layers = [(shipped, shipped_name)]
    user = _user_file(override) if provider == "openai" else (Path(override) if override else None)
    if user is not None:
        layers.append(_read(user))
    top: dict[str, Any] = {}
    rows: dict[str, ModelPrice] = {}
    fees: dict[str, Any] = {}  # a provider's fees apply to the rows of a user's table too
    for data, name in layers:
        fees.update({k: data[k] for k in ("min_fee", "storage_per_month") if k in data})
        data = {**fees, **data}
        for key in ("as_of", "source", "no_new_jobs_after", "caution", "no_new_jobs_source"):
            if key in data:
                top[key] = data[key]
        models = data.get("model", [])
        if not isinstance(models, list):
            raise ConfigError("[[model]] must be an array of tables", [("file", name)])
        for i, raw in enumerate(models):
            if not isinstance(raw, dict):
                raise ConfigError("a [[model]] entry is not a table", [("file", name), ("entry", str(i + 1))])
            row = _row(raw, data, f"{name}, [[model]] #{i + 1}")
            rows[row.id] = row
    return PriceTable(
        models=list(rows.values()),
        as_of=str(top.get("as_of", "")),
        source=str(top.get("source", "")),
        no_new_jobs_after=_date(top.get("no_new_jobs_after"), "no_new_jobs_after"),
        files=[name for _, name in layers],
        provider=provider,
        caution=str(top.get("caution", "")),
        no_new_jobs_source=str(top.get("no_new_jobs_source", "")),
    )
