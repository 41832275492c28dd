"""GPU-box paths, checked on the CPU wherever torch allows a stand-in (issue 14).

Each test names the bug it guards: a stop flag all-reduced on a device the process group does not
serve, every rank loading onto cuda:0, fp32 weights on a GPU, multi-node launch, rank-aware saving
under FSDP, and the memory estimate from config.json alone.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist

from tuneterm.core import jobs, memory
from tuneterm.core.jobs import distributed
from tuneterm.workers import device


@pytest.fixture
def process_group(monkeypatch):
    """A one-process group with the backend string given; destroyed afterwards."""
    import socket

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(s.getsockname()[1]))

    def make(backend: str):
        dist.init_process_group(backend, rank=0, world_size=1)

    yield make
    if dist.is_initialized():
        dist.destroy_process_group()


def test_stop_flag_goes_where_a_cuda_only_group_can_take_it(process_group):
    # NCCL serves CUDA tensors only. `cuda:gloo` is the CPU stand-in: a group with no CPU backend,
    # where a CPU tensor fails exactly as it does under NCCL.
    process_group("cuda:gloo")
    with pytest.raises(RuntimeError, match="No backend type associated with device type cpu"):
        dist.all_reduce(torch.tensor([1.0]))  # what the stop check did before
    assert device.collective_device(local_rank=3) == torch.device("cuda", 3)


def test_stop_flag_stays_on_the_cpu_for_gloo(process_group):
    process_group("gloo")
    flag = torch.tensor([1.0], device=device.collective_device())
    dist.all_reduce(flag)
    assert flag.device.type == "cpu" and flag.item() == 1.0


def test_precision_auto_is_half_on_gpus_and_fp32_on_the_cpu(monkeypatch):
    assert device.resolve_dtype(None, "cpu") is torch.float32
    assert device.resolve_dtype("auto", "cpu") is torch.float32
    assert device.resolve_dtype("bf16", "cpu") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.resolve_dtype("auto", "cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a V100 or a T4
    assert device.resolve_dtype("auto", "cuda:1") is torch.float16
    with pytest.raises(Exception, match="unknown dtype"):
        device.resolve_dtype("int3", "cpu")


def test_each_rank_loads_onto_its_own_gpu(monkeypatch):
    assert device.training_device_map(3) is None  # the CPU: a plain load
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.training_device_map(3) == {"": 3}  # qlora used device_map="cuda": every rank on cuda:0
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert device.inference_device_map("cuda") == "auto"  # spread a model bigger than one GPU
    assert device.inference_device_map("cuda:2") == {"": 2}
    assert device.inference_device_map("cpu") is None


def test_device_auto_and_a_missing_gpu():
    assert device.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="no CUDA device"):
            device.resolve_device("cuda")


def test_weights_load_in_the_precision_of_the_recipe(tiny_model_dir):
    from tuneterm.workers.train import methods

    config = {"method": "lora", "train": {"precision": "bf16"}, "lora": {"r": 4}}
    model = methods.prepare("lora", tiny_model_dir, config)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}  # adapters keep fp32 for AdamW
    assert methods.prepare("lora", tiny_model_dir, {**config, "train": {}}).dtype is torch.float32  # CPU auto


def test_strategy_files_are_training_arguments(monkeypatch):
    import dataclasses

    from transformers import TrainingArguments

    from tuneterm.workers.train.trainer import strategy_args

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    assert strategy_args({"launch": {"strategy": "fsdp"}}) == {}  # one process: nothing to shard
    monkeypatch.setenv("WORLD_SIZE", "2")
    for strategy, key in (("fsdp", "fsdp"), ("zero2", "deepspeed"), ("zero3", "deepspeed")):
        args = strategy_args({"launch": {"strategy": strategy}})
        assert key in args and set(args) <= fields, strategy
    zero3 = strategy_args({"launch": {"strategy": "zero3"}})["deepspeed"]["zero_optimization"]
    assert zero3["stage"] == 3 and zero3["stage3_gather_16bit_weights_on_model_save"] is True
    assert strategy_args({"launch": {"strategy": "ddp"}}) == {}


def test_multi_node_launch_uses_torchrun_rendezvous(tmp_path):
    spec = {"job": {"id": "j", "nproc": 8, "rendezvous": {"nnodes": 4, "node_rank": 2, "master_addr": "gpu-01",
                                                          "master_port": 29600}}, "config": {}}
    cmd = distributed.command(spec, tmp_path)
    assert "--standalone" not in cmd
    assert {"--nnodes=4", "--node-rank=2", "--master-addr=gpu-01", "--master-port=29600",
            "--nproc-per-node=8"} <= set(cmd)
    one = distributed.command({"job": {"nproc": 2}, "config": {}}, tmp_path)
    assert "--standalone" in one and "--nproc-per-node=2" in one


def test_print_launch_writes_a_slurm_script_and_starts_nothing(cli, tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                        {"role": "assistant", "content": f"a{i}"}]})
                              for i in range(8)) + "\n")
    code, out, err = cli("train", "--model", str(tiny_model_dir), "--data", str(data), "--method", "lora",
                         "--nproc", "8", "--nnodes", "2", "--print-launch")
    assert code == 0, err
    assert "#SBATCH --nodes=2" in out and "--node-rank=$SLURM_NODEID" in out and "--nproc-per-node=8" in out
    [job] = jobs.list_jobs()
    assert job.state == "queued" and not (job.dir / "pid").exists()
    assert str(job.dir) in out
    code, _, err = cli("train", "--model", str(tiny_model_dir), "--data", str(data), "--method", "lora",
                       "--nnodes", "2")
    assert code == 2 and "--master-addr" in err


def test_memory_estimate_from_config_alone(tiny_model_dir, tmp_path):
    import shutil

    from tuneterm.workers.train import fit

    from_weights = memory.inspect_checkpoint(tiny_model_dir)
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_model_dir / "config.json", config_only)
    from_meta = fit.meta_shape(config_only)
    assert from_meta.n_params == from_weights.n_params and from_meta.n_layers == from_weights.n_layers
    assert from_meta.linear == from_weights.linear

    config = {"method": "full", "train": {"batch_size": 8, "max_length": 512}}
    on_cpu = fit.plan_memory(dict(config), config_only, "cpu")
    assert on_cpu["fits"] is None and on_cpu["precision"] == "fp32"
    big = fit.plan_memory(dict(config), config_only, "cuda", gpu=80.0)
    assert big["fits"] is True and big["precision"] == "bf16"
    # A GPU just too small for the activations: checkpointing makes it fit, and says so.
    need = big["total_gib"]
    with_gc = memory.estimate(from_meta, {"method": "full", "train": {"batch_size": 8, "max_length": 512,
                                                                      "gradient_checkpointing": True}}, "cuda")
    assert with_gc["total_gib"] < need
    tight = {"method": "full", "train": {"batch_size": 8, "max_length": 512}}
    squeezed = fit.plan_memory(tight, config_only, "cuda", gpu=(need + with_gc["total_gib"]) / 2 / 0.9)
    assert squeezed["gradient_checkpointing_auto"] and tight["train"]["gradient_checkpointing"] is True
    assert "switched on" in fit.describe(squeezed)
    hopeless = fit.plan_memory(dict(config), config_only, "cuda", gpu=need / 1000)
    assert hopeless["fits"] is False and "--method lora" in hopeless["advice"]


def test_sharding_divides_the_estimate():
    shape = memory.ModelShape(n_params=7_000_000_000, n_layers=32, hidden=4096)
    full = {"method": "full", "train": {"batch_size": 1, "max_length": 512}}
    one = memory.estimate(shape, full, "cuda")
    zero3 = memory.estimate(shape, {**full, "_nproc": 8, "launch": {"strategy": "zero3"}}, "cuda")
    assert zero3["weights_gib"] == pytest.approx(one["weights_gib"] / 8)
    assert zero3["optimizer_gib"] == pytest.approx(one["optimizer_gib"] / 8)


def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run for real")
    out = tmp_path / "gpu-check.json"
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--out", str(out)], capture_output=True,
                          text=True, timeout=120, cwd=__import__("pathlib").Path(__file__).parent.parent)
    assert done.returncode == 0 and "needs CUDA" in done.stdout
    report = json.loads(out.read_text())
    assert report["cuda"] is None and "needs CUDA" in report["skipped"]
