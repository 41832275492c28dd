"""The quantize job's configuration: methods, defaults, recipes and ``key.sub=value`` overrides.

Torch-free, so that ``tuneterm quantize`` validates a config in a second, before any model
loads. A resolved config is a plain dict::

    {"model": REF, "method": "int8-dynamic",
     "quant": {...method settings...}, "gate": {...thresholds and inputs...}}
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

from tuneterm.core.errors import ConfigError, NotFoundError

METHODS = ("bnb-int8", "bnb-nf4", "bnb-fp4", "int8-dynamic", "int8-weight-only", "gguf")
CPU_METHODS = ("int8-dynamic", "int8-weight-only", "gguf", "bnb-int8", "bnb-nf4", "bnb-fp4")
GGUF_OUTTYPES = ("f32", "f16", "q8_0")

DEFAULTS: dict = {
    "quant": {
        "device": "auto",  # cpu | cuda | auto (cuda when present); bnb and the gate run there
        "skip_modules": [],  # Linear layers kept in full precision (names ending with these)
        "quantize_lm_head": True,  # int8-*: the output layer is ~20% of a small model's weights
        "compute_dtype": "float32",  # bnb 4-bit compute dtype / int8-weight-only activation dtype
        "double_quant": False,  # bnb 4-bit: quantize the quantization constants too
        "int8_threshold": 6.0,  # bnb-int8: outlier threshold of LLM.int8()
        "outtype": "q8_0",  # gguf: f32 | f16 | q8_0
        "tokenizer_pre": "auto",  # gguf: llama.cpp pre-tokenizer name (auto: detected)
        "bits": 8,  # int8-*: 8 (fewer bits = deliberately lossy, for tests of the gate)
        "quantize_embedding": False,  # int8-*: store the token embedding as int8 too (smaller, a little less exact)
        "smooth_alpha": 0.7,  # int8-dynamic: SmoothQuant strength (0 = off); moves activation outliers into weights
        "outlier_ratio": 1000.0,  # int8-dynamic: keep in float a Linear whose input max/median channel exceeds this (0 = off)
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
    return Path(__file__).resolve().parents[3] / "recipes"


def load_recipe(path: str | Path) -> dict:
    """Read a quantize recipe (``recipes/<method>.toml`` or any path); tuneterm.core.recipes holds training's."""
    path = Path(path)
    if not path.is_file():
        candidate = recipes_dir() / f"{path.name}.toml" if path.suffix != ".toml" else recipes_dir() / path.name
        if candidate.is_file():
            path = candidate
        else:
            raise NotFoundError("recipe not found", [("path", str(path))], f"see the recipes in {recipes_dir()}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", [("file", str(path))], "fix the TOML syntax") from exc


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


def apply_override(config: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError("an override must be key=value", [("override", item)], "e.g. gate.max_ppl_increase=0.02")
    parts = key.strip().split(".")
    if len(parts) == 1 and parts[0] not in ("model", "method"):
        parts = ["quant", parts[0]] if parts[0] in DEFAULTS["quant"] else ["gate", parts[0]]
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError("override goes through a non-table key", [("override", item)])
    node[parts[-1]] = parse_value(value)


def resolve(model: str, method: str | None = None, recipe: dict | None = None,
            overrides: list[str] | None = None, source: str = "command line") -> dict:
    """Defaults < recipe < method argument < overrides; validated. Raises ConfigError."""
    config = copy.deepcopy(DEFAULTS)
    recipe = copy.deepcopy(recipe or {})
    recipe_q = dict(recipe.get("quant", {}) or {})
    for section in ("quant", "gate"):
        config[section].update(recipe.pop(section, {}) or {})
    recipe_method = recipe.pop("method", None)
    recipe.pop("model", None)
    unknown = sorted(recipe)
    if unknown:
        raise ConfigError("unknown recipe keys", [("keys", ", ".join(unknown)), ("source", source)],
                          "a quantize recipe has `method` and the tables [quant] and [gate]")
    config["method"] = method or recipe_method or "int8-dynamic"
    config["model"] = model
    for item in overrides or []:
        apply_override(config, item)
    if config["method"] == "int8-weight-only" and not _given(recipe_q, overrides, "compute_dtype"):
        # _weight_int8pack_mm is fast with bf16 activations and very slow with fp32 ones on CPU
        config["quant"]["compute_dtype"] = "bfloat16"
    if config["method"] in _FIXED_BITS:  # bitsandbytes and GGUF types fix their own width
        config["quant"]["bits"] = _FIXED_BITS[config["method"]]
    return validate(config, source)


def _given(recipe_q: dict, overrides: list[str] | None, key: str) -> bool:
    return key in recipe_q or any(o.split("=", 1)[0].strip() in (key, f"quant.{key}") for o in overrides or [])


def validate(config: dict, source: str = "config") -> dict:
    method = config.get("method")
    if method not in METHODS:
        raise ConfigError(f"unknown quantization method {method!r}", [("source", source)],
                          "use one of " + ", ".join(METHODS))
    for section in ("quant", "gate"):
        extra = sorted(set(config.get(section, {})) - set(DEFAULTS[section]))
        if extra:
            raise ConfigError(f"unknown {section} settings", [("keys", ", ".join(extra)), ("source", source)],
                              "known: " + ", ".join(sorted(DEFAULTS[section])))
    q, g = config["quant"], config["gate"]
    if q["device"] not in ("cpu", "cuda", "auto"):
        raise ConfigError("quant.device must be cpu, cuda or auto", [("quant.device", str(q["device"]))])
    if method == "gguf" and q["outtype"] not in GGUF_OUTTYPES:
        raise ConfigError("unknown GGUF outtype", [("quant.outtype", str(q["outtype"]))],
                          "use one of " + ", ".join(GGUF_OUTTYPES))
    if method.startswith("int8-") and not (isinstance(q["bits"], int) and 2 <= q["bits"] <= 8):
        raise ConfigError("quant.bits must be an integer from 2 to 8", [("quant.bits", str(q["bits"]))])
    if q["compute_dtype"] not in ("float32", "bfloat16", "float16"):
        raise ConfigError("quant.compute_dtype must be float32, bfloat16 or float16",
                          [("quant.compute_dtype", str(q["compute_dtype"]))])
    if not (isinstance(q["smooth_alpha"], (int, float)) and 0 <= q["smooth_alpha"] < 1):
        raise ConfigError("quant.smooth_alpha must be in [0, 1)", [("quant.smooth_alpha", str(q["smooth_alpha"]))])
    if not isinstance(q["skip_modules"], list):
        raise ConfigError("quant.skip_modules must be a list of names", [("quant.skip_modules", str(q["skip_modules"]))])
    for key in ("max_texts", "max_length", "max_new_tokens"):
        if not isinstance(g[key], int) or g[key] < 1:
            raise ConfigError(f"gate.{key} must be a positive integer", [(f"gate.{key}", str(g[key]))])
    for key in ("max_ppl_increase", "max_mean_kl", "min_top1_agreement", "min_exact_match"):
        if g[key] is not None and not isinstance(g[key], (int, float)):
            raise ConfigError(f"gate.{key} must be a number or null", [(f"gate.{key}", str(g[key]))])
    if not isinstance(g["prompts"], list) or not all(isinstance(p, str) for p in g["prompts"]):
        raise ConfigError("gate.prompts must be a list of strings", [("gate.prompts", str(g["prompts"]))])
    return config


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
