"""Training recipes: commented TOML files under ``recipes/`` (torch-free).

The built-in recipe of a method is also its schema: a user's recipe file and every
``key.sub=value`` override must name keys that exist there and values of the same type.
Everything is checked in the parent, before a job is created, so a typo fails in a second
with the close matches listed, not after a model load.

Every method of ``tuneterm train --method`` has a recipe here; ``KINDS`` says which job kind
runs it. A ``sequential`` recipe holds ``[[stages]]``, each checked against its own method's
recipe (see :func:`resolve_sequential`).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Union

from tuneterm.core import resources
from tuneterm.core.errors import ConfigError, NotFoundError

METHODS = ("full", "freeze", "lora", "qlora")  # supervised fine-tuning (the TUI's train screen)
STAGE_METHODS = METHODS + ("dpo",)  # what a sequential stage may use (all run as job kind "train")
KINDS = {**{m: "train" for m in STAGE_METHODS}, "sequential": "sequential", "distill": "distill",
         "feature": "feature", "cls_head": "cls_head"}
ALL_METHODS = tuple(KINDS)
RECIPES_DIR = resources.recipes_dir()
STAGE_KEYS = ("name", "method", "data", "val")  # a stage's own keys; the rest are its method's settings

CHOICES = {
    "method": ALL_METHODS,
    "train.lr_scheduler": ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                           "polynomial"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.loss": ("assistant", "all"),
    "train.batching": ("length_grouped", "random"),
    "quant.quant_type": ("nf4", "fp4"),
    "quant.compute_dtype": ("auto", "float32", "bfloat16", "float16"),
    "launch.strategy": ("ddp", "fsdp", "zero2", "zero3"),
    "pooling": ("mean", "last"),
    "dpo.tune": ("lora", "full"),
    "head.tune": ("lora", "full"),
}
MINIMUM = {  # key -> smallest allowed value
    "train.epochs": 0, "train.batch_size": 1, "train.grad_accum": 1, "train.max_length": 8,
    "train.weight_decay": 0, "train.max_grad_norm": 0, "train.warmup_ratio": 0, "train.cpu_threads": 0,
    "eval.every_steps": 0, "eval.early_stopping_patience": 0, "log.every_steps": 1,
    "checkpoint.every_steps": 1, "checkpoint.keep": 0, "lora.r": 1, "lora.alpha": 1, "lora.dropout": 0,
    "freeze.last_n_blocks": 0, "eval.batch_size": 1, "eval.max_examples": 0,
    "steps": 1, "batch_size": 1, "max_length": 8, "alpha": 0, "temperature": 0,
    "dpo.beta": 0, "dpo.label_smoothing": 0,
}
BOUNDS = {  # pydantic's Field(ge/gt/le/lt) per key (tuneterm.core.config_schema)
    **{key: {"ge": low} for key, low in MINIMUM.items()},
    "train.lr": {"gt": 0}, "train.warmup_ratio": {"ge": 0, "lt": 1}, "lora.dropout": {"ge": 0, "lt": 1},
    "alpha": {"ge": 0, "le": 1}, "temperature": {"gt": 0},
}
TYPES = {"lora.target_modules": Union[str, list], "stages": list, "train.max_steps": int}


def kind_of(method: str) -> str:
    """The job kind that runs ``method`` (train, sequential, distill, feature, cls_head)."""
    if method not in KINDS:
        raise ConfigError(f"unknown training method {method!r}", [("methods", ", ".join(ALL_METHODS))],
                          _close_hint(method, ALL_METHODS))
    return KINDS[method]


def recipe_path(method: str) -> Path:
    kind_of(method)
    return RECIPES_DIR / f"{method}.toml"


def read_toml(path: Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError("recipe file not found", [("path", str(path))],
                            f"built-in recipes are in {RECIPES_DIR}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("the recipe is not valid TOML", [("file", str(path)), ("problem", str(exc))]) from exc


def default_recipe(method: str) -> dict:
    data = read_toml(recipe_path(method))
    data["method"] = method
    return data


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _close_hint(key: str, candidates) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    return ""


def _unknown(key: str, schema: dict, source: str) -> ConfigError:
    hint = _close_hint(key, schema)
    section = key.split(".")[0]
    if not hint:
        same = [k for k in schema if k.startswith(section + ".")]
        hint = ("keys in [" + section + "]: " + ", ".join(same)) if same else \
            "sections: " + ", ".join(sorted({k.split('.')[0] for k in schema if '.' in k}))
    return ConfigError(f"unknown recipe key {key!r}", [("in", source), ("method", schema.get("method", "?"))], hint)


def _coerce(key: str, raw, like, source: str):
    """``raw`` (a TOML value or an override's text) as the type of ``like``."""
    text = isinstance(raw, str) and source.startswith("override")

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{key} must be {expected}", [("in", source), ("got", repr(raw))],
                           f"the recipe's value is {like!r}")

    if isinstance(like, bool):
        if isinstance(raw, bool):
            return raw
        if text and raw.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return raw.lower() in ("true", "1", "yes", "on")
        raise bad("true or false")
    if isinstance(like, int):
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if text:
            try:
                return int(raw)
            except ValueError:
                pass
        raise bad("a whole number")
    if isinstance(like, float):
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if text:
            try:
                return float(raw)
            except ValueError:
                pass
        raise bad("a number")
    if isinstance(like, list) or (key == "lora.target_modules"):
        if isinstance(raw, list):
            return raw
        if text:
            stripped = raw.strip()
            if stripped.startswith("["):
                try:
                    return tomllib.loads(f"v = {stripped}")["v"]
                except tomllib.TOMLDecodeError as exc:
                    raise bad("a TOML list such as [\"a\", \"b\"]") from exc
            if key == "lora.target_modules" and "," not in stripped:
                return stripped
            return [part.strip() for part in stripped.split(",") if part.strip()]
        if isinstance(raw, str) and isinstance(like, str):
            return raw
        raise bad("a list")
    if isinstance(like, str):
        if isinstance(raw, str):
            return raw
        raise bad("a string")
    return raw


def _set(data: dict, key: str, value) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("an override must look like key.sub=value", [("got", text)],
                          "for example train.lr=1e-4 or lora.r=8")
    return key.strip(), value.strip()


def _apply(config: dict, schema: dict, items: dict, source: str) -> None:
    """Set flat ``key -> value`` items (TOML values or override text) after checking each key."""
    for key, value in items.items():
        if key not in schema:
            raise _unknown(key, schema, source)
        _set(config, key, _coerce(key, value, schema[key], source))


def _overrides(texts) -> list[tuple[str, str, str]]:
    out = []
    for text in texts:
        key, value = parse_override(text)
        if key == "method":
            raise ConfigError("choose the method with --method, not an override", [("override", text)])
        out.append((key, value, text))
    return out


def resolve(method: str, recipe_file: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """The built-in recipe of ``method``, then the user's file, then the overrides; validated."""
    if method == "sequential":
        return resolve_sequential(recipe_file, overrides)
    config = default_recipe(method)
    schema = flatten(config)
    if recipe_file:
        user = read_toml(Path(recipe_file))
        _check_method(user, method, recipe_file)
        _apply(config, schema, flatten(user), str(recipe_file))
    for key, value, text in _overrides(overrides):
        _apply(config, schema, {key: value}, f"override {text!r}")
    validate(config)
    return config


def _check_method(user: dict, method: str, recipe_file) -> None:
    user_method = user.get("method", method)
    if user_method != method:
        raise ConfigError("the recipe is for another method",
                          [("recipe", str(recipe_file)), ("its method", str(user_method)),
                           ("--method", method)], f"use --method {user_method}, or edit the recipe")


# --- sequential: a list of stages, each a recipe of its own method ------------------------------

def _in_stage(exc: ConfigError, index: int, name: str) -> ConfigError:
    """The same error, its title naming the stage."""
    return ConfigError(f"stage {index} ({name}): {exc.title}", [("stage", f"{index} ({name})")] + list(exc.facts),
                       exc.hint)


def _stage_selector(key: str, stages: list[dict]) -> tuple[int, str] | None:
    """``stages.NAME.rest`` or ``stages.N.rest`` (1-based) -> (index into stages, rest)."""
    if not key.startswith("stages."):
        return None
    sel, _, rest = key[len("stages."):].partition(".")
    names = [str(s.get("name", "")) for s in stages]
    if sel.isdigit() and 1 <= int(sel) <= len(stages):
        pos = int(sel) - 1
    elif sel in names:
        pos = names.index(sel)
    else:
        raise ConfigError(f"no stage {sel!r} in the pipeline", [("override", key), ("stages", ", ".join(names))],
                          "name a stage by its name or its number (1 = first), e.g. stages.1.train.lr=1e-5")
    if not rest:
        raise ConfigError("a stage override needs a key after the stage", [("override", key)],
                          "for example stages.1.train.max_steps=20")
    return pos, rest


def resolve_sequential(recipe_file: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """A sequential pipeline: top-level settings (model, eval.*) and ``stages``, each stage resolved
    against its own method's recipe. Overrides: ``eval.base=false`` (top level),
    ``stages.NAME.key=value`` or ``stages.N.key=value`` (one stage), ``key=value`` (every stage whose
    method has that key, e.g. ``train.max_steps=20``)."""
    config = default_recipe("sequential")
    raw_stages = config.pop("stages", [])
    schema = flatten(config)
    source = str(recipe_path("sequential"))
    if recipe_file:
        user = read_toml(Path(recipe_file))
        _check_method(user, "sequential", recipe_file)
        source = str(recipe_file)
        if "stages" in user:
            raw_stages = user.pop("stages")
        _apply(config, schema, flatten(user), source)
    if not isinstance(raw_stages, list) or not raw_stages or not all(isinstance(s, dict) for s in raw_stages):
        raise ConfigError("a sequential recipe needs at least one [[stages]] table", [("recipe", source)],
                          "see recipes/sequential.toml")
    raw_stages = [dict(s) for s in raw_stages]
    everywhere: list[tuple[str, str, str]] = []
    per_stage: list[list[tuple[str, str, str]]] = [[] for _ in raw_stages]
    for key, value, text in _overrides(overrides):
        found = _stage_selector(key, raw_stages)
        if found is not None:
            pos, rest = found
            if rest in STAGE_KEYS:
                if rest == "method":
                    raw_stages[pos]["method"] = value
                else:
                    raw_stages[pos][rest] = value
            else:
                per_stage[pos].append((rest, value, text))
        elif key in schema:
            _apply(config, schema, {key: value}, f"override {text!r}")
        else:
            everywhere.append((key, value, text))
    stages = [_resolve_stage(i, stage, source, everywhere, per_stage[i - 1])
              for i, stage in enumerate(raw_stages, 1)]
    names = [s["name"] for s in stages]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two stages are named {name!r}", [("recipe", source)], "give every stage its own name")
    for key, _, text in everywhere:  # a key no stage's method knows
        schemas = {k: v for s in stages for k, v in flatten(default_recipe(s["method"])).items()}
        if key not in schemas:
            raise _unknown(key, {**schema, **schemas}, f"override {text!r}")
    config["stages"] = stages
    validate(config)
    return config


def _resolve_stage(index: int, stage: dict, source: str, everywhere: list, mine: list) -> dict:
    name = str(stage.get("name") or f"stage{index}")
    try:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
            raise ConfigError("a stage name is a word (letters, digits, _ . -)", [("got", repr(name))])
        if name == "base":
            raise ConfigError("a stage cannot be named 'base'", [("in", source)],
                              "'base' is the starting model's row in the forgetting matrix")
        method = stage.get("method")
        if method not in STAGE_METHODS:
            raise ConfigError(f"unknown stage method {method!r}",
                              [("in", source), ("methods", ", ".join(STAGE_METHODS))],
                              _close_hint(str(method), STAGE_METHODS)
                              or "set method = \"full\" (or freeze, lora, qlora, dpo)")
        data = stage.get("data")
        if not isinstance(data, str) or not data.strip():
            raise ConfigError("the stage has no data", [("in", source)],
                              "set data = \"DATASET\" (a workspace dataset name or a JSONL path)")
        val = stage.get("val", "")
        if not isinstance(val, str):
            raise ConfigError("val must be a dataset name or path", [("in", source), ("got", repr(val))])
        config = default_recipe(method)
        schema = flatten(config)
        settings = {k: v for k, v in stage.items() if k not in STAGE_KEYS}
        _apply(config, schema, flatten(settings), f"{source}, stage {index} ({name})")
        for key, value, text in everywhere:
            if key in schema:
                _apply(config, schema, {key: value}, f"override {text!r}")
        for key, value, text in mine:
            _apply(config, schema, {key: value}, f"override {text!r}")
        validate(config)
    except ConfigError as exc:
        raise _in_stage(exc, index, name) from exc
    except NotFoundError as exc:
        raise NotFoundError(f"stage {index} ({name}): {exc.title}", exc.facts, exc.hint) from exc
    return {"name": name, "method": method, "data": data, "val": val, **config}


@lru_cache(maxsize=None)
def settings_model(method: str):
    """The pydantic model of ``method``'s settings, built from its built-in recipe (the schema)."""
    from tuneterm.core.config_schema import model_for

    defaults = default_recipe(method)
    defaults.pop("stages", None)
    return model_for(f"{method}_recipe", defaults, choices=CHOICES, bounds=BOUNDS, types=TYPES)


def validate(config: dict) -> dict:
    """Types, choices and bounds through the method's settings model, then the rules between keys."""
    from tuneterm.core.config_schema import check

    method = config.get("method")
    if method in KINDS:
        own = {k: v for k, v in config.items() if k not in ("stages",)}
        check(settings_model(method), own, source=f"the {method} recipe", bounds=BOUNDS, choices=CHOICES)
    flat = flatten(config)
    if flat.get("train.epochs", 1) <= 0 and flat.get("train.max_steps", -1) <= 0:
        raise ConfigError("nothing to train: train.epochs is 0 and train.max_steps is not set")
    targets = flat.get("lora.target_modules")
    if targets is not None and not (targets == "all-linear" or (isinstance(targets, list) and targets
                                                                and all(isinstance(t, str) for t in targets))):
        raise ConfigError("lora.target_modules must be \"all-linear\" or a list of module names",
                          [("got", repr(targets))], 'e.g. lora.target_modules=q_proj,v_proj')
    if method == "freeze" and not flat.get("freeze.last_n_blocks") and not flat.get("freeze.modules"):
        raise ConfigError("freeze trains nothing: set freeze.last_n_blocks or freeze.modules")
    return config
