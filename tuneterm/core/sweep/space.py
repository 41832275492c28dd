"""Search spaces of ``tuneterm sweep``: a TOML file of methods and the values to try (torch-free).

A space file::

    [sweep]
    metric = "exact_match"   # the validation metric trials are ranked by
    eta = 3                  # successive halving: the best 1/eta of the training trials go on
    rungs = 2                # training rungs; the last trains the full recipe
    max_trials = 10          # configurations sampled (seeded) from all grids
    seed = 0
    full_max_params = 400e6  # full/freeze only for models up to this size

    [methods.fewshot]        # k, sampler (random | similar)
    [methods.feature]        # layer (an index or "middle"), pooling, c
    [methods.lora]           # any key of the method's recipe: "train.lr" = [1e-4, 3e-4], "lora.r" = [8]

The built-in spaces, one per data shape (classification, generation, extraction), are under
``tuneterm/data/sweeps/``. Every key is checked here, before any job starts: an unknown method or
recipe key is an error naming the file and the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneterm.core import resources
from tuneterm.core.errors import ConfigError, NotFoundError

SHAPES = ("classification", "generation", "extraction")
HEAD_METHODS = ("cls_head", "classify")  # the classification-head method, under the names it may have
TRAIN_METHODS = ("full", "freeze", "lora", "qlora") + HEAD_METHODS
SMALL_ONLY = ("full", "freeze")  # methods that train (almost) every weight: small models only
# Cheapest first within each round of sampling (one configuration per method per round), so a short
# budget still tries every kind of method.
ORDER = ("feature", "fewshot") + HEAD_METHODS + ("lora", "qlora", "freeze", "full")
OWN_KEYS = {"fewshot": ("k", "sampler"), "feature": ("layer", "pooling", "c")}
SWEEP_KEYS = {"metric": str, "eta": int, "rungs": int, "max_trials": int, "seed": int, "full_max_params": float}


def sweeps_dir() -> Path:
    return resources.data_dir() / "sweeps"


def default_space_path(shape: str) -> Path:
    return sweeps_dir() / f"{shape}.toml"


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: a method and its settings (recipe keys or the method's own)."""

    method: str
    params: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        digest = hashlib.sha256(json.dumps([self.method, self.params], default=str).encode()).hexdigest()
        return f"{self.method}-{digest[:8]}"

    @property
    def label(self) -> str:
        short = " ".join(f"{k.rpartition('.')[2]}={_show(v)}" for k, v in self.params)
        return f"{self.method} {short}".strip()

    def settings(self) -> dict:
        return dict(self.params)


def _show(value) -> str:
    if isinstance(value, list):
        return "+".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Space:
    source: str
    methods: dict[str, dict[str, list]]
    metric: str | None = None
    eta: int = 3
    rungs: int = 2
    max_trials: int = 10
    seed: int = 0
    full_max_params: float = 400e6
    notes: tuple[str, ...] = field(default=())

    def candidates(self, available: set[str], n_params: int | None = None,
                   n_layers: int | None = None) -> tuple[list[Candidate], list[str]]:
        """The sampled configurations, cheapest methods first, and notes on what was left out.

        ``available``: the methods this tuneterm can run (the classification head only where it is
        registered); ``n_params``/``n_layers``: the model's size, when known, for full/freeze and
        ``layer = "middle"``."""
        notes: list[str] = []
        grids: dict[str, list[Candidate]] = {}
        for method, settings in self.methods.items():
            if method in HEAD_METHODS and method not in available:  # the head under its other name
                method = next((m for m in HEAD_METHODS if m in available), method)
            if method not in available:
                notes.append(f"{method}: not available in this tuneterm; skipped")
                continue
            if method in SMALL_ONLY:
                if n_params is None:
                    notes.append(f"{method}: the model's size is unknown here; skipped (small models only)")
                    continue
                if n_params > self.full_max_params:
                    notes.append(f"{method}: the model has {n_params / 1e6:.0f}M parameters, over "
                                 f"full_max_params {self.full_max_params / 1e6:.0f}M; skipped")
                    continue
            values = {k: _layers(v, n_layers, notes) if (method, k) == ("feature", "layer") else v
                      for k, v in settings.items()}
            keys = sorted(values)
            combos = itertools.product(*(values[k] for k in keys)) if keys else [()]
            grids[method] = [Candidate(method, tuple(zip(keys, (_freeze(v) for v in combo)))) for combo in combos]
        rng = random.Random(self.seed)
        for grid in grids.values():
            rng.shuffle(grid)
        chosen: list[Candidate] = []
        ordered = sorted(grids, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER))
        while len(chosen) < self.max_trials and any(grids.values()):  # each method in turn
            for method in ordered:
                if grids[method] and len(chosen) < self.max_trials:
                    chosen.append(grids[method].pop(0))
        left = sum(len(g) for g in grids.values())
        if left:
            notes.append(f"{left} more configuration(s) in the space than max_trials={self.max_trials}; "
                         f"sampled with seed {self.seed}")
        return chosen, notes  # in rounds, cheapest method first: a short budget still tries every method


def _freeze(value):
    return tuple(value) if isinstance(value, list) else value


def _layers(values: list, n_layers: int | None, notes: list[str]) -> list:
    out = []
    for v in values:
        if v == "middle":
            if n_layers:
                out.append(max(1, n_layers // 2))
            else:
                notes.append('feature: layer "middle" needs the model\'s layer count, unknown here; left out')
        elif n_layers is not None and isinstance(v, int) and not -(n_layers + 1) <= v <= n_layers:
            notes.append(f"feature: layer {v} does not exist in a model with {n_layers} layers; left out")
        else:
            out.append(v)
    return list(dict.fromkeys(out)) or [-1]


# --- loading and checking -------------------------------------------------------------------------


def load_space(path: str | Path | None, shape: str) -> Space:
    """The space in ``path``, or the built-in one for ``shape``; checked key by key."""
    file = Path(path).expanduser() if path else default_space_path(shape)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError("no such search space file", [("path", str(file))],
                            f"the built-in spaces are in {sweeps_dir()}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("the search space is not valid TOML", [("file", str(file)), ("problem", str(exc))]) from None
    return parse_space(raw, str(file))


def parse_space(raw: dict, source: str) -> Space:
    extra = set(raw) - {"sweep", "methods"}
    if extra:
        raise _bad(source, sorted(extra)[0], "unknown section; a space has [sweep] and [methods.NAME] tables")
    head = raw.get("sweep") or {}
    opts: dict[str, Any] = {}
    for key, value in head.items():
        if key not in SWEEP_KEYS:
            raise _bad(source, f"sweep.{key}", f"unknown key; expected one of {', '.join(SWEEP_KEYS)}")
        want = SWEEP_KEYS[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool):
            raise _bad(source, f"sweep.{key}", f"expected a {want.__name__}, got {value!r}")
        opts[key] = value
    if opts.get("eta", 3) < 2 or opts.get("rungs", 2) < 1 or opts.get("max_trials", 10) < 1:
        raise _bad(source, "sweep", "eta is at least 2, rungs and max_trials at least 1")
    methods_raw = raw.get("methods") or {}
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise _bad(source, "methods", "no methods; add a [methods.NAME] table (fewshot, feature, lora, ...)")
    methods: dict[str, dict[str, list]] = {}
    for method, settings in methods_raw.items():
        if not isinstance(settings, dict):
            raise _bad(source, f"methods.{method}", "a method is a table of setting = [values]")
        methods[method] = {}
        for key, values in settings.items():
            where = f"methods.{method}.{key}"
            if not isinstance(values, list) or not values:
                raise _bad(source, where, "give a non-empty list of values to try, e.g. [1e-4, 3e-4]")
            _check_key(source, method, key, values)
            methods[method][key] = values
    return Space(source=source, methods=methods, **opts)


def _check_key(source: str, method: str, key: str, values: list) -> None:
    where = f"methods.{method}.{key}"
    if method in OWN_KEYS:
        if key not in OWN_KEYS[method]:
            raise _bad(source, where, f"unknown key; {method} takes {', '.join(OWN_KEYS[method])}")
        if method == "fewshot" and key == "sampler" and set(values) - {"random", "similar"}:
            raise _bad(source, where, "sampler is random or similar")
        if method == "fewshot" and key == "k" and not all(isinstance(v, int) and v > 0 for v in values):
            raise _bad(source, where, "k is a positive number of examples")
        if method == "feature" and key == "layer" and not all(isinstance(v, int) or v == "middle" for v in values):
            raise _bad(source, where, 'a layer is a hidden-state index (-1 = last) or "middle"')
        return
    from tuneterm.core import recipes

    if method not in recipes.KINDS:
        if method in HEAD_METHODS:
            return  # checked when this tuneterm has the method (see Space.candidates)
        known = ", ".join(("fewshot", "feature") + tuple(m for m in TRAIN_METHODS if m in recipes.KINDS))
        raise _bad(source, f"methods.{method}", f"unknown method; expected one of {known}")
    if method not in TRAIN_METHODS:
        raise _bad(source, f"methods.{method}", "a sweep trains full, freeze, lora, qlora or a classification head")
    schema = recipes.flatten(recipes.default_recipe(method))
    if key not in schema or key == "method":
        import difflib

        close = difflib.get_close_matches(key, list(schema), n=3, cutoff=0.5)
        raise _bad(source, where, f"not a key of the {method} recipe"
                   + (f"; did you mean {' or '.join(close)}?" if close else ""))


def _bad(source: str, field: str, problem: str) -> ConfigError:
    return ConfigError("invalid search space", [("file", source), ("field", field), ("problem", problem)],
                       f"see the built-in spaces in {sweeps_dir()}")
