"""The workbench's screens (Textual modes), their keys, and how each one is built.

Screen modules are imported the first time their mode is opened, so the first paint only
pays for the first screen. A screen whose module has not landed yet is a placeholder that
says which command does the same job.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from textual.screen import Screen


@dataclass(frozen=True)
class Place:
    mode: str
    title: str
    key: str  # the number key; F<key> does the same
    module: str
    cls: str
    instead: str  # the CLI that does the same job, for the placeholder


PLACES: tuple[Place, ...] = (
    Place("datasets", "Datasets", "1", "tuneterm.tui.screens.datasets", "DatasetsScreen", "tuneterm datasets --help"),
    Place("cost", "Cost", "2", "tuneterm.tui.screens.cost", "CostScreen", "tuneterm cost --help"),
    Place("train", "Train", "3", "tuneterm.tui.screens.train", "TrainScreen", "tuneterm train --help"),
    Place("jobs", "Jobs", "4", "tuneterm.tui.screens.jobs", "JobsScreen", "tuneterm jobs --help"),
    Place("quantize", "Quantize", "5", "tuneterm.tui.screens.quantize", "QuantizeScreen", "tuneterm quantize --help"),
    Place("evals", "Evals", "6", "tuneterm.tui.screens.evals", "EvalsScreen", "tuneterm eval --help"),
    Place("chat", "Chat", "7", "tuneterm.tui.screens.chat", "ChatScreen", "tuneterm chat --help"),
)

BY_MODE = {p.mode: p for p in PLACES}


def screen_factory(place: Place) -> Callable[[], Screen]:
    def make() -> Screen:
        try:
            module = importlib.import_module(place.module)
            return getattr(module, place.cls)()
        except (ImportError, AttributeError) as exc:
            from tuneterm.tui.screens.placeholder import PlaceholderScreen

            return PlaceholderScreen(place, reason=f"{type(exc).__name__}: {exc}")

    return make
