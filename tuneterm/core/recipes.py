"""Training recipes: commented TOML files under ``recipes/`` (torch-free).

The built-in recipe of a method is also its schema: a user's recipe file and every
``key.sub=value`` override must name keys that exist there and values of the same type.
Everything is checked in the parent, before a job is created, so a typo fails in a second
with the close matches listed, not after a model load.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path

from tuneterm.core.errors import ConfigError, NotFoundError

METHODS = ("full", "freeze", "lora", "qlora")
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"

CHOICES = {
    "method": METHODS,
    "train.lr_scheduler": ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                           "polynomial"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.loss": ("assistant", "all"),
    "train.batching": ("length_grouped", "random"),
    "quant.quant_type": ("nf4", "fp4"),
    "quant.compute_dtype": ("float32", "bfloat16", "float16"),
}
MINIMUM = {  # key -> smallest allowed value
    "train.epochs": 0, "train.batch_size": 1, "train.grad_accum": 1, "train.max_length": 8,
    "train.weight_decay": 0, "train.max_grad_norm": 0, "train.warmup_ratio": 0, "train.cpu_threads": 0,
    "eval.every_steps": 0, "eval.early_stopping_patience": 0, "log.every_steps": 1,
    "checkpoint.every_steps": 1, "checkpoint.keep": 0, "lora.r": 1, "lora.alpha": 1, "lora.dropout": 0,
    "freeze.last_n_blocks": 0,
}


def recipe_path(method: str) -> Path:
    if method not in METHODS:
        raise ConfigError(f"unknown training method {method!r}", [("methods", ", ".join(METHODS))],
                          _close_hint(method, METHODS))
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


def resolve(method: str, recipe_file: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """The built-in recipe of ``method``, then the user's file, then the overrides; validated."""
    config = default_recipe(method)
    schema = flatten(config)
    if recipe_file:
        user = read_toml(Path(recipe_file))
        user_method = user.get("method", method)
        if user_method != method:
            raise ConfigError("the recipe is for another method",
                              [("recipe", str(recipe_file)), ("its method", str(user_method)),
                               ("--method", method)], f"use --method {user_method}, or edit the recipe")
        for key, value in flatten(user).items():
            if key not in schema:
                raise _unknown(key, schema, str(recipe_file))
            _set(config, key, _coerce(key, value, schema[key], str(recipe_file)))
    for text in overrides:
        key, value = parse_override(text)
        if key == "method":
            raise ConfigError("choose the method with --method, not an override", [("override", text)])
        if key not in schema:
            raise _unknown(key, schema, f"override {text!r}")
        _set(config, key, _coerce(key, value, schema[key], f"override {text!r}"))
    validate(config)
    return config


def validate(config: dict) -> dict:
    flat = flatten(config)
    for key, allowed in CHOICES.items():
        if key in flat and flat[key] not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}", [("got", repr(flat[key]))],
                              _close_hint(str(flat[key]), allowed))
    for key, low in MINIMUM.items():
        if key in flat and flat[key] < low:
            raise ConfigError(f"{key} must be at least {low}", [("got", repr(flat[key]))])
    if flat.get("train.lr", 1) <= 0:
        raise ConfigError("train.lr must be above 0", [("got", repr(flat.get("train.lr")))])
    if flat.get("train.epochs", 1) <= 0 and flat.get("train.max_steps", -1) <= 0:
        raise ConfigError("nothing to train: train.epochs is 0 and train.max_steps is not set")
    if flat.get("train.warmup_ratio", 0) >= 1:
        raise ConfigError("train.warmup_ratio must be below 1", [("got", repr(flat["train.warmup_ratio"]))])
    if "lora.dropout" in flat and flat["lora.dropout"] >= 1:
        raise ConfigError("lora.dropout must be below 1", [("got", repr(flat["lora.dropout"]))])
    targets = flat.get("lora.target_modules")
    if targets is not None and not (targets == "all-linear" or (isinstance(targets, list) and targets
                                                                and all(isinstance(t, str) for t in targets))):
        raise ConfigError("lora.target_modules must be \"all-linear\" or a list of module names",
                          [("got", repr(targets))], 'e.g. lora.target_modules=q_proj,v_proj')
    if config.get("method") == "freeze" and not flat.get("freeze.last_n_blocks") and not flat.get("freeze.modules"):
        raise ConfigError("freeze trains nothing: set freeze.last_n_blocks or freeze.modules")
    return config
