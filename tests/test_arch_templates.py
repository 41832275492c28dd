"""Real chat templates (TRL's, on the fixture architectures): a system role folded where the template
has none, assistant-only loss on templates that do not render prefix by prefix, and
`data validate --model` naming the rows a template changes or cannot render."""

from __future__ import annotations

import json

import pytest
from tiny_archs import ARCHS

from tuneterm.workers.train.data import IGNORE, tokenize_example

MULTI = [{"role": "system", "content": "You route tickets."},
         {"role": "user", "content": "My card was charged twice."},
         {"role": "assistant", "content": "payments-ops"},
         {"role": "user", "content": "And the app will not load."},
         {"role": "assistant", "content": "platform-eng"}]


def _tokenizer(tiny_arch, arch):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_arch(arch))


@pytest.mark.parametrize("arch", ARCHS)
def test_multi_turn_assistant_only_labels_are_exactly_the_replies(tiny_arch, arch):
    """Every template (Qwen3's thinking tags and Phi-3's trailing end-of-text included) gets a loss on
    both replies, their end-of-turn token, and nothing of the system or user text."""
    tok = _tokenizer(tiny_arch, arch)
    item = tokenize_example(tok, {"messages": MULTI}, max_length=512)
    assert item is not None
    trained = tok.decode([t for t, lab in zip(item["input_ids"], item["labels"]) if lab != IGNORE])
    assert "payments-ops" in trained and "platform-eng" in trained
    for text in ("route tickets", "charged twice", "will not load", "user", "system"):
        assert text not in trained, (arch, text, trained)
    assert tok.eos_token in trained  # the end-of-turn token is learned, so generation stops


def test_gemma_template_without_system_role_gets_it_in_the_first_user_turn(tiny_arch, capsys):
    from tuneterm.core import chat_templates
    from tuneterm.workers.engine import encode_chat

    tok = _tokenizer(tiny_arch, "gemma2")
    assert chat_templates.rejects_system(tok)
    text = chat_templates.render(tok, MULTI[:3])
    assert text.startswith("<bos><start_of_turn>user\nYou route tickets.\n\nMy card was charged twice.<end_of_turn>")
    ids = encode_chat(tok, MULTI[:2])  # chat: no TemplateError either
    assert tok.decode(ids[0]).endswith("<start_of_turn>model\n")
    assert not chat_templates.rejects_system(_tokenizer(tiny_arch, "gemma3"))  # Gemma 3 handles it itself


def test_data_validate_with_a_model_names_the_rows_its_template_changes(tiny_arch, tmp_path, cli):
    rows = [{"messages": MULTI[:3]} for _ in range(10)]
    rows.append({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                              {"role": "assistant", "content": "c"}]})
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = cli("data", "validate", str(path), "--model", str(tiny_arch("gemma2")), "--json")
    report = json.loads(out)
    assert report["counts"]["template_folds_system"] == 10
    assert report["counts"]["template_error"] == 1 and code != 0
    bad = [p for p in report["problems"] if p["kind"] == "template_error"]
    assert bad[0]["line"] == 11 and "alternate" in bad[0]["message"]
    code, out, _ = cli("data", "validate", str(path), "--model", str(tiny_arch("qwen2")), "--json")
    assert "template_folds_system" not in json.loads(out)["counts"]
