"""``tuneterm export``: a GGUF job's model for Ollama (a Modelfile next to the GGUF) or llama.cpp
(the ``llama-server`` command line). Torch-free.

Each chat family has a fixed Ollama template (Go template syntax) written to render the same
prompt as the family's Hugging Face chat template, its stop tokens, and the default system prompt
the HF template inserts when a conversation has none (SmolLM2 and Qwen2.5 do). The family is read
from the chat template inside the GGUF. ``tests/test_export.py`` renders both for the same messages
(``tuneterm.core.gotemplate``) and compares.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tuneterm.core.errors import InputError


@dataclass(frozen=True)
class Family:
    name: str
    markers: tuple[str, ...]  # substrings of the HF chat template that identify the family
    template: str  # Ollama TEMPLATE (Go text/template)
    stop: tuple[str, ...]
    system_re: str | None = None  # finds a default system prompt in the HF template's render


CHATML = Family(
    "chatml", ("<|im_start|>",),
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
    ("<|im_end|>", "<|im_start|>"),
    r"<\|im_start\|>system\n(.*?)<\|im_end\|>",
)
LLAMA3 = Family(  # Llama 3.1's template: a system header always, with its knowledge and default dates
    "llama3", ("<|start_header_id|>",),
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    "{{ if .System }}{{ .System }}{{ end }}<|eot_id|>"
    "{{- range .Messages }}{{ if ne .Role \"system\" }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
)
GEMMA = Family(  # Gemma has no system role: its templates refuse one or fold it into the first user turn
    "gemma", ("<start_of_turn>",),
    "{{- range .Messages }}{{ if eq .Role \"user\" }}<start_of_turn>user\n{{ .Content }}<end_of_turn>\n"
    "{{ else if eq .Role \"assistant\" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n{{ end }}{{ end }}"
    "<start_of_turn>model\n",
    ("<end_of_turn>", "<start_of_turn>"),
)
PHI3 = Family(
    "phi3", ("<|user|>", "<|end|>"),
    "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
    ("<|end|>", "<|user|>", "<|assistant|>", "<|endoftext|>"),
)
FAMILIES = (LLAMA3, GEMMA, PHI3, CHATML)  # checked in this order


def family_of(chat_template: str) -> Family:
    for family in FAMILIES:
        if all(m in chat_template for m in family.markers):
            return family
    raise InputError("no Ollama template for this model's chat template",
                     [("template starts", chat_template[:80].replace("\n", "\\n")),
                      ("families", ", ".join(f.name for f in FAMILIES))],
                     "use `tuneterm export job:ID --to llama.cpp` (llama-server applies the GGUF's own template)")


def default_system(family: Family, hf_render_without_system: str) -> str:
    """The system prompt the HF template adds to a conversation that has none ('' when it adds none)."""
    if not family.system_re:
        return ""
    m = re.search(family.system_re, hf_render_without_system, re.S)
    return m.group(1) if m else ""


def gguf_metadata(path: Path) -> dict:
    """``general.architecture``, ``tokenizer.chat_template`` and ``general.name`` of a GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out: dict = {}
    for key in ("general.architecture", "tokenizer.chat_template", "general.name", "general.license"):
        field = reader.fields.get(key)
        if field is not None and field.data:
            out[key] = bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    field = reader.fields.get(f"{out.get('general.architecture')}.context_length")
    if field is not None and field.data:
        out["context_length"] = int(field.parts[field.data[0]][0])
    return out


MIN_CONTEXT = 2048  # the least context an exported model gets: the longest training example is no limit for chat


def context_size(trained_at: int | None, model_context: int | None) -> int | None:
    """The context an exported model runs with: what it was trained at, at least MIN_CONTEXT (a chat
    longer than any training example must still fit), never more than the model's own context."""
    if not trained_at and not model_context:
        return None
    size = max(int(trained_at or 0), MIN_CONTEXT)
    return min(size, int(model_context)) if model_context else size


def render_hf_template(chat_template: str, messages: list[dict], bos: str = "", eos: str = "") -> str:
    """The HF chat template rendered as transformers does (jinja2, sandboxed, trim_blocks/lstrip_blocks),
    with the generation prompt."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: __import__("datetime").datetime.now().strftime(fmt)
    return env.from_string(chat_template).render(messages=messages, add_generation_prompt=True,
                                                 bos_token=bos, eos_token=eos)


def modelfile(gguf: Path, family: Family, system: str, params: dict, source: str) -> str:
    lines = [f"# Ollama Modelfile for {source}, written by `tuneterm export --to ollama` ({family.name} template)",
             f"FROM ./{gguf.name}", f'TEMPLATE """{family.template}"""']
    if system:
        if '"""' in system:  # a Modelfile's triple-quoted value has no escape for its own delimiter
            raise ValueError('the system prompt holds """, which a Modelfile\'s SYSTEM """...""" cannot hold')
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in family.stop]
    lines += [f"PARAMETER {k} {v}" for k, v in params.items()]
    return "\n".join(lines) + "\n"


def llama_server_command(gguf: Path, params: dict, port: int = 8080) -> str:
    args = ["llama-server", "-m", str(gguf), "--jinja", "--host", "127.0.0.1", "--port", str(port)]
    if params.get("num_ctx"):
        args += ["-c", str(params["num_ctx"])]
    if "temperature" in params:
        args += ["--temp", str(params["temperature"])]
    if "top_p" in params:
        args += ["--top-p", str(params["top_p"])]
    return " ".join(shlex.quote(a) for a in args)
