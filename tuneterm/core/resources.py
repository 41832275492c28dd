"""What tuneterm ships inside the package: recipes, eval suites and metrics, sample data, prices.

Everything the program reads at run time lives under ``tuneterm/data/`` and is found through
``importlib.resources``, so a wheel installed with pip, pipx or ``uv tool install`` works from any
directory. (In a checkout, the top-level ``recipes``, ``evals`` and ``sample_data`` are links to
these folders.) A user's own ``recipes/`` or ``evals/`` in the working directory are looked up by
the commands that take paths; the built-in ones are the fallback.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def data_dir() -> Path:
    """``tuneterm/data`` as a real folder (packages are installed unzipped)."""
    return Path(str(files("tuneterm") / "data"))


def recipes_dir() -> Path:
    return data_dir() / "recipes"


def evals_dir() -> Path:
    return data_dir() / "evals"


def metrics_dir() -> Path:
    return evals_dir() / "metrics"


def sample_data_dir() -> Path:
    return data_dir() / "sample_data"


BUILTIN_FOLDERS = ("recipes", "evals", "sample_data")


def builtin_fallback(path: Path) -> Path:
    """``sample_data/...``, ``evals/...`` or ``recipes/...`` that is not in the working directory:
    the built-in copy, when there is one (so the README's paths work from any directory with an
    installed wheel). Anything else, or a path that exists, comes back unchanged."""
    if path.exists() or path.is_absolute() or not path.parts or path.parts[0] not in BUILTIN_FOLDERS:
        return path
    candidate = data_dir() / path
    return candidate if candidate.exists() else path
