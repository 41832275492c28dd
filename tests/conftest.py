"""Shared fixtures: a temporary workspace for every test, the network blocked except
127.0.0.1, the embedded model converted once per machine, and a tiny Llama for ML tests."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Converted checkpoints are cached across test runs (the conversion takes ~25 s).
SHARED_MODELS = Path(os.environ.get("TUNETERM_TEST_MODELS", REPO / ".tuneterm-test-cache" / "models"))

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TUNETERM_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Idle OpenMP threads sleep instead of spinning: the test process and the job processes it
    # starts share the CPUs, and spinning threads starve each other (tuneterm.core.generation).
    "OMP_WAIT_POLICY": "PASSIVE",
}


def pytest_configure(config):
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
    # The torch-free ``sleep`` job kind (tests/kinds/sleep.py) for the job tests; job children
    # import it from the repository root.
    os.environ["TUNETERM_EXTRA_KINDS"] = "sleep=tests.kinds.sleep"
    os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ.pop("OPENAI_BASE_URL", None)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:
        cuda = False
    if not cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if item.get_closest_marker("gpu"):  # not `in item.keywords`: that holds path parts too
                item.add_marker(skip)


# --- the network: loopback only ---------------------------------------------------------------

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback_only(address) -> None:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            raise ConnectionRefusedError(f"network blocked in tests: {address!r}")


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _loopback_only(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _loopback_only(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _block_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


# --- the workspace -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def tmp_workspace(tmp_path, monkeypatch):
    """Every test gets its own workspace and config; converted models are shared."""
    home = tmp_path / "ws"
    monkeypatch.setenv("TUNETERM_HOME", str(home))
    monkeypatch.setenv("TUNETERM_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("TUNETERM_MODELS_DIR", str(SHARED_MODELS))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    try:
        from tuneterm.core.settings import get_settings

        get_settings(fresh=True)
    except ImportError:
        pass
    from tuneterm.core.workspace import Workspace

    return Workspace(home)


@pytest.fixture
def cli(capsys):
    """Run ``tuneterm ARGS`` in-process; returns (exit_code, stdout, stderr)."""
    from tuneterm.cli import main

    def run(*args: str):
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def run_cli():
    """Run ``python -m tuneterm ARGS`` in a subprocess with the test environment."""
    import subprocess

    def run(*args: str, timeout: float = 600, input: str | None = None):
        return subprocess.run(
            [sys.executable, "-m", "tuneterm", *args],
            capture_output=True, text=True, timeout=timeout, input=input, cwd=REPO,
        )

    return run


# --- models ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted once and cached in SHARED_MODELS."""
    from tuneterm.core import modelref
    from tuneterm.workers.loading import ensure_converted

    return ensure_converted(modelref.embedded_gguf_path(), SHARED_MODELS)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A 2-layer Llama (hidden 64) with the embedded model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_arch(embedded_model_dir):
    """``tiny_arch(arch) -> Path``: the tiny checkpoint of one of ``tiny_archs.ARCHS`` (built once, cached)."""
    from tiny_archs import tiny_model

    return lambda arch: tiny_model(arch, SHARED_MODELS)


@pytest.fixture
def copy_tree():
    def copy(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch at one thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    tiny models on a shared 2-core box run faster and steadier that way."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
