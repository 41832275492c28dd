"""GGUF quant types made by llama.cpp's quantizer (q4_K_M ...), the importance matrix, and the GGUF gate
measured through llama.cpp on the file that ships. Without llama-cpp-python the llama.cpp tests skip;
the refusals before a job exists and the importance matrix's file run everywhere."""

from __future__ import annotations

import importlib.util

import pytest

from tuneterm.core.quantize_config import llama_quantize_path

needs_llamacpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                    reason="llama-cpp-python is not installed (pip install 'tuneterm[gguf]')")
needs_llama_quantize = pytest.mark.skipif(
    llama_quantize_path() is None,
    reason="llama.cpp's llama-quantize is neither on PATH nor in the venv (scripts/build_llama_quantize.sh)")


@pytest.fixture
def no_llama_cpp(monkeypatch, tmp_path):
    """Neither llama-cpp-python nor llama-quantize, whatever this machine has."""
    monkeypatch.setenv("TUNETERM_NO_LLAMACPP", "1")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def test_a_k_quant_without_llama_cpp_is_refused_before_a_job_exists(cli, no_llama_cpp, tmp_workspace):
    code, out, err = cli("quantize", "smollm2-135m-instruct", "--method", "gguf", "quant.outtype=q4_k_m", "--dry-run")
    assert code == 2, (out, err)
    assert "quant.outtype=q4_k_m is made by llama.cpp's quantizer" in err and "tuneterm[gguf]" in err
    assert not list(tmp_workspace.jobs_dir.glob("*"))


def test_an_importance_matrix_needs_llama_cpps_quantizer_and_a_llama_cpp_type(cli, no_llama_cpp):
    code, _, err = cli("quantize", "smollm2-135m-instruct", "--method", "gguf", "quant.outtype=q4_k_m",
                       "quant.imatrix=true", "--dry-run")
    assert code == 2 and "quant.outtype=q4_k_m is made by llama.cpp's quantizer" in err
    assert "tuneterm[gguf]" in err and "scripts/build_llama_quantize.sh" in err
    code, _, err = cli("quantize", "smollm2-135m-instruct", "--method", "gguf", "quant.imatrix=true", "--dry-run")
    assert code == 2 and "quant.imatrix applies to llama.cpp's quant types only" in err


def test_a_4_bit_gguf_type_gets_the_4_bit_perplexity_limit_unless_one_is_given():
    from tuneterm.core.quantize_config import resolve

    assert resolve("m", "gguf", overrides=["quant.outtype=q4_k_m"])["gate"]["max_ppl_increase"] == 0.15
    assert resolve("m", "gguf", overrides=["quant.outtype=q6_k"])["gate"]["max_ppl_increase"] == 0.05
    assert resolve("m", "gguf", overrides=["quant.outtype=q4_k_m", "gate.max_ppl_increase=0.08"])["gate"][
        "max_ppl_increase"] == 0.08
    assert resolve("m", "gguf", {"gate": {"max_ppl_increase": 0.07}}, ["quant.outtype=iq4_xs"])["gate"][
        "max_ppl_increase"] == 0.07


def test_the_four_measured_llama_cpp_types_get_an_importance_matrix_unless_told_otherwise():
    from tuneterm.core.quantize_config import resolve

    for outtype in ("q4_k_m", "q5_k_m", "q6_k", "iq4_xs"):
        assert resolve("m", "gguf", overrides=[f"quant.outtype={outtype}"])["quant"]["imatrix"] is True
    assert resolve("m", "gguf", overrides=["quant.outtype=q4_k_m", "quant.imatrix=false"])["quant"]["imatrix"] is False
    assert resolve("m", "gguf", overrides=["quant.outtype=q4_k_m", "imatrix=false"])["quant"]["imatrix"] is False
    assert resolve("m", "gguf", {"quant": {"imatrix": False}}, ["quant.outtype=q4_k_m"])["quant"]["imatrix"] is False
    assert resolve("m", "gguf", {"quant": {"outtype": "q4_k_m"}})["quant"]["imatrix"] is True
    for other in ("q8_0", "f16", "q4_k_s", "q3_k_m"):  # tuneterm's own types; llama.cpp types not measured
        assert resolve("m", "gguf", overrides=[f"quant.outtype={other}"])["quant"]["imatrix"] is False
    assert resolve("m", "gguf", overrides=["quant.outtype=q8_0", "quant.imatrix=auto"])["quant"]["imatrix"] is False


def test_the_recipe_form_shows_auto_so_false_is_an_edit():
    """The workbench's form sends only what differs from the recipe: the built-in recipe says "auto",
    so a user who types false turns the matrix off (with a bool default, false looked unchanged)."""
    from tuneterm.core import recipes
    from tuneterm.core.errors import ConfigError
    from tuneterm.core.quantize_config import recipes_dir, resolve

    flat = recipes.flatten(recipes.read_toml(recipes_dir() / "gguf.toml"))
    assert flat["quant.imatrix"] == "auto"
    with pytest.raises(ConfigError, match="quant.imatrix"):
        resolve("m", "gguf", overrides=["quant.imatrix=yes"])


def test_an_unknown_gguf_type_names_the_ones_there_are(cli):
    code, _, err = cli("quantize", "smollm2-135m-instruct", "--method", "gguf", "quant.outtype=q4_k_x", "--dry-run")
    assert code == 2 and "q4_k_m" in err and "iq4_xs" in err


def test_the_importance_matrix_file_holds_each_linear_layers_mean_squared_input(tiny_model_dir, tmp_path):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneterm.workers.quantize import gguf as gguf_export
    from tuneterm.workers.quantize import kquant

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["The quick brown fox jumps over the lazy dog.", "Refunds take five business days."]
    stats, tokens = kquant.compute_imatrix(model, tok, texts)
    n_tokens = sum(len(tok(t)["input_ids"]) for t in texts)
    assert tokens == n_tokens
    arch, n_blocks = gguf_export.arch_of(model.config, model), model.config.num_hidden_layers
    path = tmp_path / "imatrix.dat"
    written = kquant.write_imatrix(stats, path, lambda n: gguf_export.gguf_name(n, arch, n_blocks), "unit test")
    back = kquant.read_imatrix(path)
    assert written == len(back) == len(stats)
    assert "blk.0.attn_q.weight" in back and "blk.1.ffn_down.weight" in back
    # llama.cpp's per-tensor importance: the mean over tokens of each input column's squared activation
    layer = model.model.layers[0].mlp.down_proj
    seen = []
    hook = layer.register_forward_hook(lambda m, i, o: seen.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        for t in texts:
            model(tok(t, return_tensors="pt")["input_ids"])
    hook.remove()
    x = torch.cat(seen)
    expected = (x * x).mean(0).numpy()
    assert len(back["blk.0.ffn_down.weight"]) == layer.in_features
    assert np.allclose(back["blk.0.ffn_down.weight"], expected, rtol=1e-4, atol=1e-7)


@needs_llamacpp
@pytest.mark.slow
def test_a_q4_k_m_export_of_the_embedded_model_passes_the_gate_measured_by_llama_cpp():
    from tests.test_quant_cpu import run_job

    info = run_job("smollm2-135m-instruct", "gguf", "quant.outtype=q4_k_m")  # 4-bit: the gate allows +15%
    import json

    report = json.loads((info.dir / "output" / "quality.json").read_text())
    assert report["passed"], report["failures"]
    # q4_k_m gets an importance matrix by default: +4.3% perplexity here, against +11.6% without one
    assert report["quant"]["outtype"] == "q4_k_m" and report["quant"]["imatrix"]["entries"] > 0
    assert report["quant"]["quantizer"] in ("llama-quantize --imatrix", "llama_model_quantize (llama-cpp-python) with an imatrix")
    assert report["ppl_increase"] < 0.05, report["ppl_increase"]  # issue 23's goal for q4_K_M
    assert report["quantized"]["runtime"].startswith("llama.cpp")  # the file itself, not a de-quantized copy
    assert report["quantized"]["label"] == "gguf q4_k_m imatrix"
    assert report["quantized"]["decode_tok_s"] and report["top1_agreement"] > 0.7
    art = info.dir / "output" / "model" / "model-q4_k_m.gguf"
    from tuneterm.workers.llamacpp import quant_label

    assert quant_label(art).startswith("Q4_K_M imatrix, ")
    assert not (info.dir / "output" / "model" / "model-f16.gguf").exists()  # the intermediate is gone


@needs_llamacpp
def test_a_q4_k_m_job_of_the_tiny_model_is_made_gated_and_served_by_llama_cpp(tiny_model_dir):
    from tests.test_quant_cpu import run_job
    from tuneterm.core.generation import GenerationParams, GenerationStats
    from tuneterm.workers.variants import load_variants

    info = run_job(tiny_model_dir, "gguf", "quant.outtype=q4_k_m", "gate.max_ppl_increase=100")
    import json

    report = json.loads((info.dir / "output" / "quality.json").read_text())
    assert report["quantized"]["runtime"].startswith("llama.cpp") and report["scored_tokens"] > 0
    ref = f"job:{info.id}"
    variant = load_variants([ref])[ref]
    try:
        assert variant.label().startswith("llama.cpp, Q4_K_M imatrix, ")  # q4_k_m's default importance matrix
        stats = GenerationStats()
        "".join(variant.stream([{"role": "user", "content": "Hi"}], GenerationParams(max_new_tokens=4), stats))
        assert 1 <= stats.completion_tokens <= 4
    finally:
        variant.group.close()


@needs_llama_quantize
def test_an_importance_matrix_goes_to_llama_quantize(tiny_model_dir):
    from tests.test_quant_cpu import run_job

    info = run_job(tiny_model_dir, "gguf", "quant.outtype=q4_k_m", "quant.imatrix=true", "quant.embedding_type=f16",
                   "gate.max_ppl_increase=100")
    import json

    from tuneterm.workers.quantize.gguf import read_back

    quant = json.loads((info.dir / "output" / "quality.json").read_text())["quant"]
    assert quant["quantizer"] == "llama-quantize --imatrix" and quant["imatrix"]["entries"] > 0
    # the tiny model ties its embedding to the output layer: llama-quantize's --output-tensor-type types it
    assert quant["embedding_tensors"] == {"token_embd.weight": "F16"}
    meta = read_back(info.dir / "output" / "model" / "model-q4_k_m.gguf")
    assert meta["tensors"]["token_embd.weight"][1] == "F16"


@needs_llamacpp
def test_the_embedding_type_reaches_llama_model_quantize(tiny_model_dir, monkeypatch):
    """Through llama-cpp-python's binding (as without llama-quantize): the tied embedding gets
    quant.embedding_type; without it, llama.cpp's own choice (q8_0 for 64-wide rows)."""
    import json

    from tests.test_quant_cpu import run_job
    from tuneterm.workers.quantize import kquant

    monkeypatch.setattr(kquant, "llama_quantize_tool", lambda: None)
    quants = {}
    for etype in ("f16", "auto"):
        info = run_job(tiny_model_dir, "gguf", "quant.outtype=q4_k_m", f"quant.embedding_type={etype}",
                       "gate.max_ppl_increase=100")
        quants[etype] = json.loads((info.dir / "output" / "quality.json").read_text())["quant"]
    assert quants["f16"]["quantizer"].startswith("llama_model_quantize")
    assert quants["f16"]["embedding_type"] == "f16" and quants["f16"]["embedding_tensors"] == {"token_embd.weight": "F16"}
    assert "embedding_type" not in quants["auto"] and quants["auto"]["embedding_tensors"] == {"token_embd.weight": "Q8_0"}


def _tensor_bytes(path) -> dict:
    from gguf import GGUFReader

    return {t.name: bytes(t.data) for t in GGUFReader(path).tensors}


@needs_llamacpp
def test_llama_model_quantize_takes_the_importance_matrix_as_llama_quantize_does(tiny_model_dir, tmp_path, monkeypatch):
    """The binding gets the matrix (a C array since llama.cpp 0.3.36's API): the rounding changes, and
    where llama-quantize is there too, both write the same tensors from the same matrix."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneterm.workers.quantize import gguf as gguf_export
    from tuneterm.workers.quantize import kquant

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    src = tmp_path / "model-f16.gguf"
    gguf_export.export(model, tok, src, "f16")
    stats, _ = kquant.compute_imatrix(model, tok, ["Refunds take five business days.", "The sky is blue."])
    rng = np.random.default_rng(0)  # a lopsided matrix, so that weighting the rounding must change it
    stats = {n: (v * rng.uniform(0.01, 100, size=v.shape).astype(v.dtype), c) for n, (v, c) in stats.items()}
    arch = gguf_export.arch_of(model.config, model)
    imatrix = tmp_path / "imatrix.dat"
    kquant.write_imatrix(stats, imatrix, lambda n: gguf_export.gguf_name(n, arch, model.config.num_hidden_layers))
    tool = llama_quantize_path()
    monkeypatch.setattr(kquant, "llama_quantize_tool", lambda: None)
    assert kquant.quantize_file(src, tmp_path / "plain.gguf", "q4_k_m", 1).startswith("llama_model_quantize")
    used = kquant.quantize_file(src, tmp_path / "weighted.gguf", "q4_k_m", 1, imatrix=imatrix)
    assert used == "llama_model_quantize (llama-cpp-python) with an imatrix"
    plain, weighted = _tensor_bytes(tmp_path / "plain.gguf"), _tensor_bytes(tmp_path / "weighted.gguf")
    assert plain.keys() == weighted.keys()
    assert plain["blk.0.ffn_down.weight"] != weighted["blk.0.ffn_down.weight"]
    if tool is not None:
        monkeypatch.setattr(kquant, "llama_quantize_tool", lambda: tool)
        assert kquant.quantize_file(src, tmp_path / "cli.gguf", "q4_k_m", 1, imatrix=imatrix) == "llama-quantize --imatrix"
        assert _tensor_bytes(tmp_path / "cli.gguf") == weighted


def test_an_embedding_type_applies_to_llama_cpp_types_only(cli):
    code, _, err = cli("quantize", "smollm2-135m-instruct", "--method", "gguf", "quant.embedding_type=q8_0", "--dry-run")
    assert code == 2 and "quant.embedding_type applies to llama.cpp's quant types only" in err
    code, _, err = cli("quantize", "smollm2-135m-instruct", "--method", "gguf", "quant.outtype=q4_k_m",
                       "quant.embedding_type=q3_k", "--dry-run")
    assert code == 2 and "q6_k" in err


def test_llama_quantize_is_found_beside_this_python_when_not_on_path(cli, monkeypatch, tmp_path):
    """scripts/build_llama_quantize.sh installs into .venv/bin, which is not on PATH when CI runs
    .venv/bin/python; `tuneterm doctor` says where it is, or how to get it."""
    import sys

    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    tool = venv_bin / "llama-quantize"
    tool.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert llama_quantize_path() is None  # not executable: not a program
    tool.chmod(0o755)
    assert llama_quantize_path() == str(tool)
    code, out, _ = cli("doctor")
    assert f"ok llama-quantize (llama.cpp's quantizer program): {tool}" in out
    monkeypatch.setenv("TUNETERM_NO_LLAMACPP", "1")
    assert llama_quantize_path() is None
    code, out, _ = cli("doctor")
    assert "llama-quantize (llama.cpp's quantizer program): not found (optional" in out
    assert "scripts/build_llama_quantize.sh builds it" in out


def test_every_llama_cpp_type_the_config_accepts_has_a_quantizer_type_and_a_width():
    from tuneterm.core.quantize_config import GGUF_OUTTYPES, LLAMACPP_TYPES
    from tuneterm.workers.quantize import kquant

    assert set(LLAMACPP_TYPES) == set(kquant.TYPES) == set(kquant.BITS)
    assert set(GGUF_OUTTYPES) == set(LLAMACPP_TYPES) | {"f32", "f16", "q8_0"}
