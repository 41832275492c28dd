"""`hf:ORG/NAME` from the standard Hugging Face cache offline, and an adapter trained on it that
names its base by repo id, so it still loads after the cache moves."""

from __future__ import annotations

import json
import shutil

import torch
from test_train_methods import tickets, train  # noqa: F401 - tickets is a fixture


def _fake_cache(root, repo, model_dir):
    """The Hub cache layout: models--ORG--NAME/{refs/main, snapshots/REV/...}."""
    folder = root / ("models--" + repo.replace("/", "--"))
    rev = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(rev)
    shutil.copytree(model_dir, folder / "snapshots" / rev)
    return root


def test_adapter_of_a_hub_model_survives_a_moved_cache(tiny_arch, tickets, tmp_path, monkeypatch):  # noqa: F811
    from huggingface_hub import constants

    from tuneterm.workers.loading import load

    cache = _fake_cache(tmp_path / "hub", "Org/Tiny", tiny_arch("qwen2"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    job, _ = train("hf:Org/Tiny", tickets, "lora", "train.max_steps=1", "train.batch_size=4", "train.lr=5e-2")
    adapter = job.dir / "output" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "Org/Tiny"
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = load(str(adapter)).model(ids).logits
    moved = tmp_path / "elsewhere"
    shutil.move(str(cache), str(moved))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(moved))
    with torch.no_grad():
        after = load(str(adapter)).model(ids).logits
    torch.testing.assert_close(after, before)
