"""The workbench's screens (Textual modes), their keys, and how each one is built.

Screen modules are imported the first time their mode is opened, so the first paint only
pays for the first screen.
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


PLACES: tuple[Place, ...] = (
    Place("datasets", "Datasets", "1", "tuneterm.tui.screens.datasets", "DatasetsScreen"),
    Place("cost", "Cost", "2", "tuneterm.tui.screens.cost", "CostScreen"),
    Place("train", "Train", "3", "tuneterm.tui.screens.train", "TrainScreen"),
    Place("jobs", "Jobs", "4", "tuneterm.tui.screens.jobs", "JobsScreen"),
    Place("quantize", "Quantize", "5", "tuneterm.tui.screens.quantize", "QuantizeScreen"),
    Place("evals", "Evals", "6", "tuneterm.tui.screens.evals", "EvalsScreen"),
    Place("chat", "Chat", "7", "tuneterm.tui.screens.chat", "ChatScreen"),
    Place("sweeps", "Sweeps", "8", "tuneterm.tui.screens.sweeps", "SweepsScreen"),
)

BY_MODE = {p.mode: p for p in PLACES}


def screen_factory(place: Place) -> Callable[[], Screen]:
    def make() -> Screen:
        return getattr(importlib.import_module(place.module), place.cls)()

    return make
