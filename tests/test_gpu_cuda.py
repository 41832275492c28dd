"""On a real GPU (skipped without CUDA): the bugs of issue 14 that only CUDA shows.

Each test would have failed on the code before the fix: fp32 weights on a GPU, an eager-attention
mask built on the CPU for a CUDA model (Gemma 2), qlora ranks all on cuda:0, the stop flag on the CPU
under NCCL, inference that always loaded on the CPU, and an estimate never checked against a run.
`scripts/gpu_check.py` runs these and writes their outcome to one JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tuneterm.core import jobs, recipes
from tuneterm.workers.jobctx import JobContext

pytestmark = pytest.mark.gpu


@pytest.fixture
def chats(tmp_path) -> Path:
    path = tmp_path / "chats.jsonl"
    rows = [{"messages": [{"role": "system", "content": "Route the ticket."},
                          {"role": "user", "content": f"ticket {i}: my card was charged twice"},
                          {"role": "assistant", "content": ["billing", "bug", "account"][i % 3]}]}
            for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_gemma2_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A 2-layer Gemma 2 (eager attention, a 16-token sliding window) with the embedded tokenizer."""
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

    out = tmp_path_factory.mktemp("tiny-gemma2")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
                          max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                          attn_implementation="eager")
    torch.manual_seed(0)
    Gemma2ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _train(model_dir, data, method, *overrides):
    config = recipes.resolve(method, overrides=["log.every_steps=1", "checkpoint.every_steps=100",
                                                "train.max_steps=3", "train.batch_size=4", "lora.r=4",
                                                *overrides])
    config.update(model=str(model_dir), data=str(data))
    job = jobs.create_job("train", config)
    torch.cuda.reset_peak_memory_stats()
    trainer = __import__("tuneterm.workers.kinds.train", fromlist=["run"]).run(JobContext(job.dir))
    return job, trainer


def _losses(job) -> list[float]:
    return [e["loss"] for e in jobs.read_events(job.id)[0] if e.get("type") == "train"]


@pytest.mark.parametrize("method", ["lora", "full", "qlora"])
def test_training_on_cuda_loads_half_precision_on_the_gpu(tiny_model_dir, chats, method):
    if method == "qlora":
        pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed on this GPU machine")
    job, trainer = _train(tiny_model_dir, chats, method)
    params = list(trainer.model.parameters())
    assert {p.device.type for p in params} == {"cuda"}
    frozen = {p.dtype for p in params if not p.requires_grad}
    assert torch.float32 not in frozen or method == "qlora"  # before: every weight in fp32
    losses = _losses(job)
    assert losses and all(loss == loss for loss in losses)
    assert (job.dir / "output" / "artifact.json").is_file()


def test_packed_loss_equals_padded_loss_for_gemma2_eager_on_cuda(tiny_gemma2_dir, chats):
    """Gemma 2 runs eager attention: the packed path built its additive mask on the CPU (a device error)."""
    results = []
    for packing in ("true", "false"):
        job, _ = _train(tiny_gemma2_dir, chats, "lora", f"train.packing={packing}", "train.precision=fp32",
                        "lora.dropout=0")
        results.append(_losses(job))
    assert len(results[0]) == 3 and results[0] == pytest.approx(results[1], rel=1e-3)


def test_peak_memory_against_the_estimate(tiny_model_dir, chats):
    from tuneterm.workers.train import fit

    config = recipes.resolve("full", overrides=["train.batch_size=4", "train.max_length=256"])
    est = fit.plan_memory(config, tiny_model_dir, "cuda", 1, fit.gpu_gib())
    job, _ = _train(tiny_model_dir, chats, "full", "train.max_length=256")
    peak = torch.cuda.max_memory_allocated() / 2**30
    # The estimate is a back-of-the-envelope upper bound: within 4x of the measured peak either way.
    assert est["total_gib"] / 4 <= max(peak, 1e-3) <= est["total_gib"] * 4, (est["total_gib"], peak)


def test_inference_loads_straight_onto_the_gpu(tiny_model_dir):
    from tuneterm.workers.loading import load

    loaded = load(str(tiny_model_dir))  # device auto
    p = next(loaded.model.parameters())
    assert p.device.type == "cuda" and p.dtype in (torch.bfloat16, torch.float16)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_on_two_gpus_stops_every_rank(cli, tiny_model_dir, chats):
    """NCCL takes CUDA tensors only: the stop flag on the CPU crashed every multi-GPU job at step 1."""
    code, out, err = cli("train", "--model", str(tiny_model_dir), "--data", str(chats), "--method", "lora",
                         "--nproc", "2", "train.max_steps=4", "train.batch_size=2", "lora.r=4")
    assert code == 0, err
    job_id = out.split()[2].rstrip(":")
    info = jobs.wait_for(job_id, 300)
    assert info.state == "succeeded", jobs.tail_log(job_id, 60)
