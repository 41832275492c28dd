"""tuneterm.workers.adapters: one merge and one multi-adapter helper, on the tiny Llama with a real
(random, non-zero) LoRA adapter built by peft."""

from __future__ import annotations

import torch


def _adapter(tiny_model_dir, folder, seed):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(folder)
    return model.eval()


def test_merge_adapter_gives_the_adapted_model_and_add_adapter_switches(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneterm.workers.adapters import add_adapter, merge_adapter

    ids = torch.tensor([[1, 5, 9, 13, 17]])
    first = _adapter(tiny_model_dir, tmp_path / "a", 0)
    second = _adapter(tiny_model_dir, tmp_path / "b", 1)
    with torch.no_grad():
        want_a, want_b = first(ids).logits, second(ids).logits
    merge_adapter(tmp_path / "a", tiny_model_dir, tmp_path / "merged")
    assert (tmp_path / "merged" / "tokenizer_config.json").is_file()
    assert not (tmp_path / "merged.tmp").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, want_a, atol=1e-4)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model = add_adapter(base, tmp_path / "a", "a")
    model = add_adapter(model, tmp_path / "b", "b")
    with torch.no_grad():
        model.set_adapter("a")
        assert torch.allclose(model(ids).logits, want_a, atol=1e-5)
        model.set_adapter("b")
        assert torch.allclose(model(ids).logits, want_b, atol=1e-5)
