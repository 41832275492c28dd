"""Quantization, in one package (the job kind is ``tuneterm.workers.kinds.quantize``).

Light at import (the command validates configs through ``.config`` before any model loads):
the work is in ``.pipeline``, the int8 kernels in ``.int8``, SmoothQuant in ``.smooth``, the
per-layer sensitivity search in ``.sensitivity``, the lean decode loop in ``.fastdecode`` and its
``model.generate`` front in ``.fastgen``, GGUF files in ``.gguf``, the quality gate in ``.gate``,
loading an artifact in ``.load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def quantize(parent_ref: str, method: str, config: dict, out_dir: Path,
             emit: Callable[..., None] | None = None, should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Quantize and gate (see ``pipeline.quantize``); ``config`` as resolved by ``config.resolve``."""
    from tuneterm.workers.quantize.pipeline import quantize as work

    return work(parent_ref, method, config, Path(out_dir), emit, should_stop)
