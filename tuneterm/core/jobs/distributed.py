"""The command that runs a multi-process job: torchrun (DDP, FSDP, DeepSpeed through Trainer), an
accelerate config of the user's, and the same command written out for a cluster (torch-free).

One node: ``torchrun --standalone --nproc-per-node N``. Several nodes: torchrun's c10d rendezvous
(``--nnodes N --node-rank R --master-addr H --master-port P``), the same command run on every node,
which is what ``tuneterm train ... --print-launch`` prints, with an ``sbatch`` script for Slurm.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

# torchrun would turn the SIGTERM of `jobs cancel` into its own shutdown (workers killed after a grace
# period, a SignalException traceback, a non-zero exit). It starts with SIGTERM ignored and not in
# its handled signals instead: the ranks (which handle it) stop at the same step, save a checkpoint and
# exit 0, and torchrun then exits 0 after them. SIGKILL still ends everything.
IGNORE_SIGTERM_AND_EXEC = ("import os, signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                           "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
DEFAULT_PORT = 29500


def worker_tail(folder: Path, resume: bool = False) -> list[str]:
    return ["-m", "tuneterm.workers.run", str(folder)] + (["--resume"] if resume else [])


def rendezvous_args(job: dict) -> list[str]:
    """torchrun's rendezvous options: standalone on one node, c10d across ``job["rendezvous"]``'s nodes."""
    rdzv = job.get("rendezvous") or {}
    nnodes = int(rdzv.get("nnodes", 1) or 1)
    if nnodes <= 1:
        return ["--standalone"]
    return [f"--nnodes={nnodes}", f"--node-rank={rdzv.get('node_rank', 0)}",
            f"--master-addr={rdzv.get('master_addr') or '127.0.0.1'}",
            f"--master-port={rdzv.get('master_port') or DEFAULT_PORT}"]


def command(spec: dict, folder: Path, resume: bool = False) -> list[str]:
    """The child process of a job: plain Python for one process, else accelerate or torchrun."""
    job = spec.get("job", {})
    nproc = int(job.get("nproc", 1) or 1)
    nnodes = int((job.get("rendezvous") or {}).get("nnodes", 1) or 1)
    tail = worker_tail(folder, resume)
    if nproc <= 1 and nnodes <= 1:
        return [sys.executable, *tail]
    accel_cfg = (spec.get("config", {}).get("launch", {}) or {}).get("accelerate_config")
    if accel_cfg:  # the user's own accelerate config (FSDP, DeepSpeed, anything accelerate knows)
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accel_cfg),
                "--num_processes", str(nproc * nnodes), *tail]
    return [sys.executable, "-c", IGNORE_SIGTERM_AND_EXEC, "-m", "torch.distributed.run",
            "--signals-to-handle=SIGINT,SIGHUP,SIGQUIT", *rendezvous_args(job), f"--nproc-per-node={nproc}", *tail]


def printable(spec: dict, folder: Path) -> str:
    """What to run by hand (or in a batch system) to start this job: the torchrun line for every node
    and a Slurm script that runs it on each node of an allocation."""
    job = spec.get("job", {})
    nproc = int(job.get("nproc", 1) or 1)
    rdzv = job.get("rendezvous") or {}
    nnodes = int(rdzv.get("nnodes", 1) or 1)
    tail = shlex.join(worker_tail(folder))
    lines = ["# the job's folder must be on a filesystem every node sees (the same path on each)"]
    if nnodes <= 1:
        lines += [shlex.join([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={nproc}"]) + f" {tail}"]
        return "\n".join(lines) + "\n"
    port = rdzv.get("master_port") or DEFAULT_PORT
    lines += [f"# on node R of {nnodes} (R = 0 .. {nnodes - 1}), node 0 at {rdzv.get('master_addr') or 'HOST'}:",
              shlex.join([sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}"]) + " --node-rank=R "
              + shlex.join([f"--master-addr={rdzv.get('master_addr') or 'HOST'}", f"--master-port={port}",
                            f"--nproc-per-node={nproc}"]) + f" {tail}",
              "",
              "# or with Slurm: save as job.sbatch, then `sbatch job.sbatch`",
              "#!/bin/bash",
              f"#SBATCH --job-name=tuneterm-{job.get('id', 'job')}",
              f"#SBATCH --nodes={nnodes}",
              "#SBATCH --ntasks-per-node=1",
              f"#SBATCH --gpus-per-node={nproc}",
              'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              "srun " + shlex.join([sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}"])
              + " --node-rank=$SLURM_NODEID --master-addr=$MASTER_ADDR "
              + shlex.join([f"--master-port={port}", f"--nproc-per-node={nproc}"]) + f" {tail}"]
    return "\n".join(lines) + "\n"
