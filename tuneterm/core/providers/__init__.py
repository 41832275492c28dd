"""Hosted fine-tuning providers as one concept: openai, azure, together, fireworks, mistral.

Each provider module declares a :class:`~tuneterm.core.providers.base.Provider`: its models, prices
and dates (``tuneterm/data/<name>_prices.toml``), data rules, billing rule, token accounting,
credentials (each SDK's own environment variables), and a client for submit and monitor.
Every client has the OpenAI SDK's shape (``files.create``, ``fine_tuning.jobs.create/retrieve/
list/list_events/cancel``, ``models.list``), so the submit and monitor code is written once.
"""

from __future__ import annotations

import importlib

from tuneterm.core.errors import ConfigError
from tuneterm.core.prices import PROVIDERS

__all__ = ["PROVIDERS", "get", "all_providers"]


def get(name: str):
    """The provider called ``name``."""
    if name not in PROVIDERS:
        raise ConfigError("unknown provider", [("provider", name)], "use one of: " + ", ".join(PROVIDERS))
    return importlib.import_module(f"tuneterm.core.providers.{name}").PROVIDER


def all_providers() -> list:
    return [get(name) for name in PROVIDERS]
