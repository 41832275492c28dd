"""Every fixture architecture through every step (issue 13): chat, training (lora, freeze, full),
int8-dynamic quantization and its reload, GGUF export, eval and serve."""

from __future__ import annotations

import json

import pytest
from test_quant_cpu import generate, run_job
from tiny_archs import ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_dynamic_job_quantizes_gates_and_reloads(tiny_arch, arch):
    """Smoothing folds into each norm layout (Gemma's (1 + w), Phi-3's fused projections), so the gate's
    KL and top-1 figures hold; the artifact reloads (Gemma's scaled embedding) and generates."""
    info = run_job(tiny_arch(arch), "int8-dynamic")
    manifest = json.loads((info.dir / "output" / "artifact.json").read_text())
    assert manifest["quant"]["method"] == "int8-dynamic" and manifest["gate_passed"] is True
    assert manifest["quant"]["smoothed_groups"] == 2 * 3 + 1
    report = json.loads((info.dir / "output" / "quality.json").read_text())
    assert report["top1_agreement"] > 0.9 and report["mean_kl"] < 0.01
    loaded, _ = generate(f"job:{info.id}")
    assert loaded.model.config.model_type.startswith(arch[:5])
