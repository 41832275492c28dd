"""The quantize job's configuration: methods, defaults, recipes and ``key.sub=value`` overrides.

Torch-free, so that ``tuneterm quantize`` validates a config in a second, before any model
loads. A resolved config is a plain dict::

    {"model": REF, "method": "int8-dynamic",
     "quant": {...method settings...}, "gate": {...thresholds and inputs...}}
"""

from __future__ import annotations

import copy
import difflib
import json
import tomllib
from pathlib import Path
from typing import Literal, Union

from tuneterm.core.errors import ConfigError, NotFoundError

METHODS = ("bnb-int8", "bnb-nf4", "bnb-fp4", "int8-dynamic", "int8-weight-only", "gguf")
# f32/f16/q8_0: tuneterm's own writer; the K-quants and iq4_xs: llama.cpp's quantizer (workers/quantize/kquant.py)
GGUF_OUTTYPES = ("f32", "f16", "q8_0", "q4_k_m", "q5_k_m", "q6_k", "iq4_xs", "q4_k_s", "q5_k_s", "q3_k_m", "q2_k")

DEFAULTS: dict = {
    "quant": {
        "device": "auto",  # cpu | cuda | auto (cuda when present); bnb and the gate run there
        "skip_modules": [],  # Linear layers kept in full precision (names ending with these)
        "quantize_lm_head": True,  # int8-*: the output layer is ~20% of a small model's weights
        "compute_dtype": "float32",  # bnb 4-bit compute dtype / int8-weight-only activation dtype
        "double_quant": False,  # bnb 4-bit: quantize the quantization constants too
        "int8_threshold": 6.0,  # bnb-int8: outlier threshold of LLM.int8()
        "outtype": "q8_0",  # gguf: f32 | f16 | q8_0 (tuneterm) | q4_k_m | q5_k_m | q6_k | iq4_xs ... (llama.cpp)
        "imatrix": "auto",  # gguf K-quants: an importance matrix from calibration text and the parent's training data: true | false | auto (on for q4_k_m, q5_k_m, q6_k, iq4_xs)
        "embedding_type": "auto",  # gguf K-quants: type of the token embedding and output layer (auto: llama.cpp's)
        "tokenizer_pre": "auto",  # gguf: llama.cpp pre-tokenizer name (auto: detected)
        "bits": 8,  # int8-*: 8 (fewer bits = deliberately lossy, for tests of the gate)
        "quantize_embedding": False,  # int8-*: store the token embedding as int8 too (smaller, a little less exact)
        "smooth_alpha": 0.5,  # int8-dynamic: SmoothQuant strength (0 = off); moves activation outliers into weights
        "outlier_ratio": 1000.0,  # int8-dynamic: keep in float a Linear whose input max/median channel exceeds this (0 = off)
        "keep_sensitive": 0,  # int8-*: keep in float the N Linear layers whose int8 moves the output most (measured)
    },
    "gate": {
        "enabled": True,  # measure the quantized model against its parent
        "data": "",  # held-out text: a dataset name (its val split) or a JSONL/text file; "" = built-in
        "max_texts": 16,  # texts used for perplexity, KL and top-1 agreement
        "max_length": 256,  # tokens per text
        "prompts": [],  # prompts for generation speed and exact match; [] = built-in set
        "max_new_tokens": 32,  # greedy tokens per prompt
        "max_ppl_increase": 0.05,  # fail when ppl(quant)/ppl(parent) - 1 exceeds this (null = no limit)
        "max_mean_kl": None,  # fail when the mean KL(parent || quant) per token exceeds this
        "min_top1_agreement": None,  # fail when next-token argmax agrees less often than this
        "min_exact_match": None,  # fail when fewer greedy generations match the parent exactly
    },
}

_FIXED_BITS = {"bnb-int8": 8, "bnb-nf4": 4, "bnb-fp4": 4}


def recipes_dir() -> Path:
    from tuneterm.core.resources import recipes_dir as builtin

    return builtin()


def recipe_file(path: str | Path) -> Path:
    """A recipe path, or a built-in recipe's name (``int8-dynamic`` / ``int8-dynamic.toml``)."""
    path = Path(path)
    if path.is_file():
        return path
    candidate = recipes_dir() / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    if candidate.is_file():
        return candidate
    raise NotFoundError("recipe not found", [("path", str(path))], f"see the recipes in {recipes_dir()}")


def load_recipe(path: str | Path) -> dict:
    """Read a quantize recipe (``recipes/<method>.toml``, a name, or any path) with
    ``tuneterm.core.recipes.read_toml`` (the training recipes' reader: same errors)."""
    from tuneterm.core import recipes

    return recipes.read_toml(recipe_file(path))


def help_for(method: str) -> dict[str, str]:
    """``"quant.smooth_alpha" -> its comment`` in the method's built-in recipe (the settings' help)."""
    from tuneterm.core.recipe_comments import read_comments

    path = recipes_dir() / f"{method}.toml"
    return read_comments(path)[1] if path.is_file() else {}


def schema(method: str) -> dict:
    """Every setting a quantize config may have, flat (``"gate.max_texts" -> default``)."""
    from tuneterm.core import recipes

    return recipes.flatten({k: v for k, v in DEFAULTS.items()})


def parse_value(text: str):
    """``key=value`` values: TOML/JSON literals (numbers, true/false, lists), else a string."""
    low = text.strip().lower()
    if low in ("null", "none"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _full_key(key: str) -> str:
    """``bits`` -> ``quant.bits``, ``max_texts`` -> ``gate.max_texts`` (short forms stay accepted)."""
    if "." in key or key in ("model", "method"):
        return key
    return f"quant.{key}" if key in DEFAULTS["quant"] else f"gate.{key}"


def _unknown(key: str, method: str, source: str) -> ConfigError:
    known = schema(method)
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    section = key.split(".")[0]
    hint = ("did you mean " + " or ".join(close) + "?") if close else \
        ("known: " + ", ".join(sorted(k for k in known if k.startswith(section + "."))) if section in DEFAULTS
         else "a quantize recipe has `method` and the tables [quant] and [gate]")
    what = f"unknown {section} settings" if section in DEFAULTS else "unknown recipe keys"
    return ConfigError(what, [("keys", key), ("source", source)], hint)


def _typed(key: str, value, method: str, source: str):
    """``value`` checked against the type of the setting's default; the recipe comment is the hint."""
    like = schema(method).get(key)
    ok = True
    if like is None or value is None:
        ok = value is None or key.startswith("gate.") or isinstance(value, (int, float))
    elif key == "quant.imatrix":
        ok = isinstance(value, bool) or value == "auto"
    elif isinstance(like, bool):
        ok = isinstance(value, bool)
    elif isinstance(like, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(like, float):
            value = float(value)
    elif isinstance(like, list):
        ok = isinstance(value, list)
    elif isinstance(like, str):
        ok = isinstance(value, str)
    if not ok:
        help_text = help_for(method).get(key, "")
        raise ConfigError(f"{key} has the wrong type", [(key, repr(value)), ("source", source)],
                          f"{key}: {help_text}" if help_text else f"the default is {like!r}")
    return value


def _set(config: dict, key: str, value) -> None:
    section, _, name = key.partition(".")
    if name:
        config.setdefault(section, {})[name] = value
    else:
        config[section] = value


def apply_override(config: dict, item: str) -> None:
    """One ``key.sub=value`` (parsed by ``tuneterm.core.recipes.parse_override``), checked."""
    from tuneterm.core import recipes

    key, value = recipes.parse_override(item)
    key = _full_key(key)
    if key == "model":
        config["model"] = value
        return
    if key == "method":
        config["method"] = value
        return
    if key not in schema(config.get("method", "")):
        raise _unknown(key, config.get("method", ""), f"override {item!r}")
    _set(config, key, _typed(key, parse_value(value), config.get("method", ""), f"override {item!r}"))


def resolve(model: str, method: str | None = None, recipe: dict | None = None,
            overrides: list[str] | None = None, source: str = "command line") -> dict:
    """Defaults < the method's built-in recipe < the user's recipe < method argument < overrides;
    every key and type checked against the settings (``schema``). Raises ConfigError."""
    from tuneterm.core import recipes

    recipe = copy.deepcopy(recipe or {})
    recipe_q = dict(recipe.get("quant", {}) or {})
    chosen = method or recipe.get("method") or "int8-dynamic"
    if chosen not in METHODS:
        raise ConfigError(f"unknown quantization method {chosen!r}", [("source", source)],
                          "use one of " + ", ".join(METHODS))
    config = copy.deepcopy(DEFAULTS)
    builtin = recipes_dir() / f"{chosen}.toml"
    layers = [(recipes.read_toml(builtin), str(builtin))] if builtin.is_file() else []
    layers.append((recipe, source))
    for data, where in layers:
        data = dict(data)
        data.pop("method", None)
        data.pop("model", None)
        for key, value in recipes.flatten(data).items():
            if key not in schema(chosen):
                raise _unknown(key, chosen, where)
            _set(config, key, _typed(key, value, chosen, where))
    config["method"] = chosen
    config["model"] = model
    for item in overrides or []:
        apply_override(config, item)
    if config["method"] == "int8-weight-only" and not _given(recipe_q, overrides, "compute_dtype"):
        # _weight_int8pack_mm is fast with bf16 activations and very slow with fp32 ones on CPU
        config["quant"]["compute_dtype"] = "bfloat16"
    outtype = config["quant"].get("outtype")
    if config["method"] == "gguf" and outtype in LOW_BIT_GGUF and not _given_gate(recipe, overrides, "max_ppl_increase"):
        # 4 bits and fewer cost more than 8 (as the bnb 4-bit recipes say): fail above +15%, not +5%
        config["gate"]["max_ppl_increase"] = 0.15
    if config["quant"].get("imatrix") == "auto":
        # measured (docs/gguf.md): q4_K_M of the embedded model +11.6% perplexity without a matrix, +4.3% with one
        config["quant"]["imatrix"] = config["method"] == "gguf" and outtype in IMATRIX_BY_DEFAULT
    if config["method"] in _FIXED_BITS:  # bitsandbytes and GGUF types fix their own width
        config["quant"]["bits"] = _FIXED_BITS[config["method"]]
    return validate(config, source)


def _given_gate(recipe: dict, overrides: list[str] | None, key: str) -> bool:
    return key in dict(recipe.get("gate", {}) or {}) or any(
        o.split("=", 1)[0].strip() in (key, f"gate.{key}") for o in overrides or [])


def _given(recipe_q: dict, overrides: list[str] | None, key: str) -> bool:
    return key in recipe_q or any(o.split("=", 1)[0].strip() in (key, f"quant.{key}") for o in overrides or [])


CHOICES = {
    "method": METHODS,
    "quant.device": ("cpu", "cuda", "auto"),
    "quant.outtype": GGUF_OUTTYPES,
    "quant.embedding_type": ("auto", "f16", "bf16", "q8_0", "q6_k", "q5_k", "q4_k"),
    "quant.compute_dtype": ("float32", "bfloat16", "float16"),
}
BOUNDS = {
    "quant.bits": {"ge": 2, "le": 8}, "quant.smooth_alpha": {"ge": 0, "lt": 1}, "quant.keep_sensitive": {"ge": 0},
    "quant.outlier_ratio": {"ge": 0}, "quant.int8_threshold": {"ge": 0},
    "gate.max_texts": {"ge": 1}, "gate.max_length": {"ge": 1}, "gate.max_new_tokens": {"ge": 1},
}
TYPES = {"quant.skip_modules": list[str], "gate.prompts": list[str], "model": str,
         "quant.imatrix": Union[bool, Literal["auto"]]}


def settings_model():
    """The pydantic model of a quantize config (tuneterm.core.config_schema), built from DEFAULTS."""
    global _MODEL
    if _MODEL is None:
        from tuneterm.core.config_schema import model_for

        _MODEL = model_for("quantize_config", {"model": "", "method": "int8-dynamic", **DEFAULTS},
                           choices=CHOICES, bounds=BOUNDS, types=TYPES)
    return _MODEL


_MODEL = None


def validate(config: dict, source: str = "config") -> dict:
    """Types, choices and bounds of every setting (one pydantic model; the same error words as recipes)."""
    from tuneterm.core.config_schema import check

    method = config.get("method")
    if method not in METHODS:
        raise ConfigError(f"unknown quantization method {method!r}", [("source", source)],
                          "use one of " + ", ".join(METHODS))
    for section in ("quant", "gate"):
        extra = sorted(set(config.get(section, {})) - set(DEFAULTS[section]))
        if extra:
            raise ConfigError(f"unknown {section} settings", [("keys", ", ".join(extra)), ("source", source)],
                              "known: " + ", ".join(sorted(DEFAULTS[section])))
    check(settings_model(), config, source=source, bounds=BOUNDS, choices=CHOICES)
    return config


LLAMACPP_TYPES = GGUF_OUTTYPES[3:]  # made by llama.cpp's quantizer, not by tuneterm's writer
# quant.imatrix turns on for these unless the recipe or the command line sets it: the four types issue 23
# names, each measured better with a matrix (docs/gguf.md); the other K-quants were not measured
IMATRIX_BY_DEFAULT = ("q4_k_m", "q5_k_m", "q6_k", "iq4_xs")
LOW_BIT_GGUF = ("q4_k_m", "iq4_xs", "q4_k_s", "q3_k_m", "q2_k")  # gate.max_ppl_increase defaults to 0.15
LLAMACPP_HINT = ("pip install 'tuneterm[gguf]' (llama-cpp-python; docs/gguf.md gives the CMAKE_ARGS of a portable "
                 "build), or put llama.cpp's llama-quantize on PATH (scripts/build_llama_quantize.sh builds it "
                 "into .venv/bin)")


def llama_cpp_python_installed() -> bool:
    """llama-cpp-python importable (not imported: that loads the library); TUNETERM_NO_LLAMACPP hides it."""
    import importlib.util
    import os

    if os.environ.get("TUNETERM_NO_LLAMACPP"):
        return False
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def llama_quantize_path() -> str | None:
    """llama.cpp's ``llama-quantize``: on PATH, else beside this Python (``scripts/build_llama_quantize.sh``
    installs it into ``.venv/bin``, which is not on PATH when the venv is not activated).
    TUNETERM_NO_LLAMACPP hides it, as it hides llama-cpp-python."""
    import os
    import shutil
    import sys

    if os.environ.get("TUNETERM_NO_LLAMACPP"):
        return None
    found = shutil.which("llama-quantize")
    if found:
        return found
    beside = Path(sys.executable).parent / "llama-quantize"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def check_gguf_tools(outtype: str, imatrix: bool, embedding_type: str = "auto") -> None:
    """Refuse, before a job exists, a GGUF type or an importance matrix this install cannot make."""
    if outtype not in LLAMACPP_TYPES:
        if imatrix or embedding_type != "auto":
            key = "quant.imatrix" if imatrix else "quant.embedding_type"
            raise ConfigError(f"{key} applies to llama.cpp's quant types only",
                              [("quant.outtype", outtype)], f"use e.g. quant.outtype=q4_k_m, or drop {key}")
        return
    # an importance matrix goes to llama-quantize, or to llama-cpp-python's llama_model_quantize: either will do
    if llama_quantize_path() is None and not llama_cpp_python_installed():
        raise ConfigError(f"quant.outtype={outtype} is made by llama.cpp's quantizer, which is not installed",
                          [("quant.outtype", outtype)], LLAMACPP_HINT)


def from_spec(config: dict) -> dict:
    """A job's frozen config back to a full one. TOML has no null, so a threshold missing from
    spec.toml was null when the command resolved it (the command always writes every other key)."""
    full = copy.deepcopy(DEFAULTS)
    for section in ("quant", "gate"):
        given = dict(config.get(section, {}) or {})
        if section == "gate":
            for key in ("max_ppl_increase", "max_mean_kl", "min_top1_agreement", "min_exact_match"):
                full["gate"][key] = given.pop(key, None)
        full[section].update(given)
    if "model" not in config:
        raise ConfigError("the quantize job's config has no model", [("config", str(sorted(config)))])
    full["model"] = config["model"]
    full["method"] = config.get("method", "int8-dynamic")
    return validate(full, "spec.toml")
