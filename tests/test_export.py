"""`tuneterm export --to ollama | llama.cpp`: the Modelfile's Go template renders the same prompt as
the model's Hugging Face chat template (each family, through transformers' own apply_chat_template
and Ollama's way of filling .System/.Messages), the Modelfile sits next to the GGUF with the
family's stop tokens and the recipe's context length, and llama-server's command line is printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tuneterm.core import gotemplate, ollama
from tuneterm.core.jobs import store

CONVERSATIONS = [
    [{"role": "user", "content": "My card was charged twice."}],
    [{"role": "system", "content": "You sort support tickets."}, {"role": "user", "content": "Card charged twice."},
     {"role": "assistant", "content": "billing"}, {"role": "user", "content": "The app crashes on start."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Reset my password, please."}],
]


def _ours(family, messages, system) -> str:
    return gotemplate.render(family.template, gotemplate.ollama_values(messages, system))


def _hf(tokenizer, messages) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token or ""
    if bos and "bos_token" in tokenizer.chat_template and text.startswith(bos):
        return text[len(bos):]  # a template's own BOS: llama.cpp adds it when it tokenizes
    return text


def test_chatml_template_matches_smollm2s_chat_template(embedded_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    family = ollama.family_of(tok.chat_template)
    assert family is ollama.CHATML
    system = ollama.default_system(family, _hf(tok, CONVERSATIONS[0]))
    assert system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    for messages in CONVERSATIONS:
        assert _ours(family, messages, system) == _hf(tok, messages)


@pytest.mark.parametrize("arch,family", [("llama", "llama3"), ("qwen2", "chatml"), ("qwen3", "chatml"),
                                         ("gemma2", "gemma"), ("gemma3", "gemma"), ("phi3", "phi3")])
def test_each_family_template_matches_the_hf_chat_template(embedded_model_dir, arch, family):
    pytest.importorskip("trl")
    from tiny_archs import template_text
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tok.chat_template = template_text(arch)
    fam = ollama.family_of(tok.chat_template)
    assert fam.name == family
    system = ollama.default_system(fam, _hf(tok, CONVERSATIONS[0]))
    for messages in CONVERSATIONS:
        if fam is ollama.GEMMA and messages[0]["role"] == "system":
            continue  # Gemma has no system role (Gemma 2 refuses one, Gemma 3 folds it into the user turn)
        assert _ours(fam, messages, system) == _hf(tok, messages), (arch, messages)


def test_unknown_template_is_a_clear_error():
    with pytest.raises(Exception) as err:
        ollama.family_of("{% for m in messages %}### {{ m.role }}: {{ m.content }}{% endfor %}")
    assert "--to llama.cpp" in err.value.render()


def test_gotemplate_subset():
    t = '{{- if .System }}S={{ .System }}\n{{ end -}}\n{{ range .Messages }}{{ if eq .Role "user" }}U:{{ .Content }}' \
        '{{ else if ne .Role "assistant" }}?{{ else }}A:{{ .Content }}{{ $.System }}{{ end }};{{ end }}'
    values = gotemplate.ollama_values([{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                       {"role": "assistant", "content": "c"}, {"role": "tool", "content": "d"}], "sys")
    assert gotemplate.render(t, values) == "S=sys\n?;U:a\n\nb;A:csys;?;"
    with pytest.raises(ValueError, match="unsupported"):
        gotemplate.render("{{ len .Messages }}", values)


@pytest.fixture
def gguf_job(tmp_workspace):
    """A train job's spec (its recipe: max_length 333) and a gguf quantize job of it laid out as the
    quantize job lays it out (``output/model/`` with the file that ``quant.file`` names), holding the
    embedded SmolLM2 GGUF (a real file, linked, so no conversion runs here)."""
    from tuneterm.core import modelref

    train = store.create_job("train", {"method": "lora", "model": "smollm2-135m-instruct",
                                       "train": {"max_length": 333}})
    quant = store.create_job("quantize", {"model": f"job:{train.id}", "method": "gguf"})
    (quant.dir / "output" / "model").mkdir()
    gguf = quant.dir / "output" / "model" / "model-q4_1.gguf"
    gguf.symlink_to(modelref.embedded_gguf_path())
    (quant.dir / "output" / "artifact.json").write_text(json.dumps(
        {"kind": "gguf", "path": "model", "job": quant.id, "base": f"job:{train.id}",
         "quant": {"method": "gguf", "format": "gguf", "file": gguf.name}}))
    return quant, gguf


def _modelfile_template(text: str) -> str:
    return re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)


def test_export_to_ollama_writes_a_modelfile_next_to_the_gguf(cli, gguf_job):
    job, gguf = gguf_job
    code, out, err = cli("export", f"job:{job.id}", "--to", "ollama")
    assert code == 0, err
    modelfile = gguf.parent / "Modelfile"
    text = modelfile.read_text()
    assert f"FROM ./{gguf.name}" in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    # trained at 333 tokens, the file holds 8192: a chat gets 2048, not the longest training example
    assert ollama.gguf_metadata(gguf)["context_length"] == 8192
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER num_ctx 2048" in text
    assert f"ollama create tuneterm-{job.id.rsplit('-', 1)[-1]} -f {modelfile}" in out
    assert "note:" not in out  # the self-check against the GGUF's own template found no difference
    hf_template = ollama.gguf_metadata(gguf)["tokenizer.chat_template"]
    template = _modelfile_template(text)
    for messages in CONVERSATIONS:  # the file's template, as Ollama would fill it, against the GGUF's template
        system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        assert gotemplate.render(template, gotemplate.ollama_values(messages, system)) == \
            ollama.render_hf_template(hf_template, messages)


def test_export_to_llama_cpp_prints_the_server_command(cli, gguf_job):
    job, gguf = gguf_job
    code, out, err = cli("export", f"job:{job.id}", "--to", "llama.cpp", "--port", "8181")
    assert code == 0, err
    line = out.strip()
    assert line.startswith(f"llama-server -m {gguf} --jinja --host 127.0.0.1 --port 8181")
    assert " -c 2048" in line and not (gguf.parent / "Modelfile").exists()


def test_the_context_is_what_training_used_at_least_2048_at_most_the_model_s():
    assert ollama.context_size(96, 8192) == 2048
    assert ollama.context_size(4096, 8192) == 4096
    assert ollama.context_size(96, 1024) == 1024
    assert ollama.context_size(None, None) is None and ollama.context_size(None, 8192) == 2048


def test_a_trained_prompt_a_modelfile_cannot_hold_is_a_clear_error(cli, gguf_job, monkeypatch):
    from tuneterm.core import trained_prompt

    job, gguf = gguf_job
    monkeypatch.setattr(trained_prompt, "for_ref", lambda ref: trained_prompt.TrainedPrompt(
        job.id, 'Answer in a block: """like this"""'))
    code, _, err = cli("export", f"job:{job.id}", "--to", "ollama")
    assert code == 3 and "cannot write the Modelfile" in err and '"""' in err
    assert not (gguf.parent / "Modelfile").exists()


def test_export_of_a_job_without_a_gguf_says_how_to_make_one(cli, tmp_workspace):
    job = store.create_job("train", {"method": "lora", "model": "smollm2-135m-instruct"})
    (job.dir / "output" / "adapter").mkdir()
    (job.dir / "output" / "artifact.json").write_text(json.dumps({"kind": "adapter", "path": "adapter"}))
    code, _, err = cli("export", f"job:{job.id}", "--to", "ollama")
    assert code == 3 and f"tuneterm quantize job:{job.id} --method gguf" in err


def test_the_self_check_notices_a_template_that_renders_differently():
    from tuneterm.commands.export import _same_prompt

    smol = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
            "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    assert _same_prompt(ollama.CHATML, smol, "")
    assert not _same_prompt(ollama.CHATML, smol.replace("'<|im_end|>' + '\n'", "'<|im_end|>' + '\n\n'"), "")
    assert not _same_prompt(ollama.CHATML, "{{ messages | no_such_filter }}", "")  # cannot render: says so


def test_a_real_gguf_job_of_a_tuned_model_exports_with_its_trained_system_prompt(cli, tiny_model_dir, tmp_path):
    """The whole path as a user runs it: a real LoRA job trained with one system prompt, a real gguf
    quantize job of it (its folder layout, its GGUF's own chat template), then both exports."""
    from test_quant_cpu import run_job

    from tuneterm.core.jobs.plan import plan_train
    from tuneterm.workers.jobctx import JobContext
    from tuneterm.workers.kinds import train

    system = "You route support tickets. Answer with one queue name."
    rows = [{"messages": [{"role": "system", "content": system}, {"role": "user", "content": f"Ticket {i}"},
                          {"role": "assistant", "content": "billing"}]} for i in range(8)]
    data = tmp_path / "routed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = plan_train("lora", model=str(tiny_model_dir), data=str(data),
                     overrides=["train.max_steps=1", "train.batch_size=2", "lora.r=4", "train.max_length=64"]).create()
    train.run(JobContext(job.dir))
    quant = run_job(f"job:{job.id}", "gguf", "quant.outtype=q8_0")

    code, out, err = cli("export", f"job:{quant.id}", "--to", "ollama")
    assert code == 0, err
    [modelfile] = (quant.dir / "output").rglob("Modelfile")
    text = modelfile.read_text()
    gguf = modelfile.parent / re.search(r"^FROM \./(.+)$", text, re.M).group(1)
    assert gguf.is_file() and gguf.suffix == ".gguf"
    context = ollama.gguf_metadata(gguf)["context_length"]
    assert f'SYSTEM """{system}"""' in text and f"PARAMETER num_ctx {ollama.context_size(64, context)}" in text
    assert f"trained with ({len(system)} chars)" in out and "note:" not in out
    hf_template = ollama.gguf_metadata(gguf)["tokenizer.chat_template"]
    for messages in CONVERSATIONS:  # Ollama puts SYSTEM first where a request has none, as tuneterm chat does
        with_system = messages if messages[0]["role"] == "system" else \
            [{"role": "system", "content": system}, *messages]
        assert gotemplate.render(_modelfile_template(text), gotemplate.ollama_values(messages, system)) == \
            ollama.render_hf_template(hf_template, with_system)

    code, out, err = cli("export", f"job:{quant.id}", "--to", "llama.cpp")
    assert code == 0 and out.strip().startswith(f"llama-server -m {gguf} --jinja"), err
    assert "trained with a system prompt" in err
