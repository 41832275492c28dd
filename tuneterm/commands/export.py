"""``tuneterm export job:ID --to ollama|llama.cpp``: run a GGUF job's model in Ollama or llama.cpp."""

from __future__ import annotations

import argparse
import re

ORDER = 47
PROBE = [{"role": "system", "content": "You sort support tickets."},
         {"role": "user", "content": "My card was charged twice."},
         {"role": "assistant", "content": "billing"},
         {"role": "user", "content": "The app crashes on start."}]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write an Ollama Modelfile for a GGUF job, or print its llama-server command",
                       description="--to ollama writes a Modelfile next to the job's GGUF (the chat template and stop "
                                   "tokens of the model's family, parameters from the recipe) and prints the "
                                   "`ollama create` command; --to llama.cpp prints the `llama-server` command line.")
    p.add_argument("job", metavar="job:ID", help="a finished quantize job with --method gguf")
    p.add_argument("--to", required=True, choices=("ollama", "llama.cpp"))
    p.add_argument("--name", help="the Ollama model name (default: tuneterm-<job suffix>)")
    p.add_argument("--port", type=int, default=8080, help="llama-server's port (default 8080)")
    p.set_defaults(func=run)


def _gguf_of(job_ref: str):
    from tuneterm.core.errors import InputError
    from tuneterm.core.jobs import store
    from tuneterm.core.modelref import job_artifact

    job_id = store.resolve_id(job_ref)
    artifact = job_artifact(job_id, store.jobs_root())
    if artifact.kind != "gguf":
        raise InputError(f"job {job_id} made a {artifact.kind}, not a GGUF file", [("artifact", str(artifact.path))],
                         f"make one first: tuneterm quantize job:{job_id} --method gguf")
    import json

    recorded = json.loads((store.jobs_root() / job_id / "output" / "artifact.json").read_text())["path"]
    path = store.jobs_root() / job_id / "output" / recorded  # as the job holds it (a link stays a link)
    if path.is_dir():  # a gguf quantize job's folder: the file, its tokenizer and config (``quant.file`` names it)
        path = path / str(artifact.quant.get("file") or "")
    if path.suffix != ".gguf" or not path.is_file():
        raise InputError(f"job {job_id}'s GGUF file is missing", [("expected", str(path))],
                         f"quantize again: tuneterm quantize {artifact.base or f'job:{job_id}'} --method gguf")
    return job_id, path


def recipe_params(job_id: str, model_context: int | None = None) -> dict:
    """Ollama parameters from the recipes behind the model: the context (``train.max_length`` of the
    training job it came from, at least ``ollama.MIN_CONTEXT``, at most the model's own ``model_context``)
    and tuneterm's chat sampling defaults."""
    import tomllib

    from tuneterm.core import ollama
    from tuneterm.core.generation import GenerationParams
    from tuneterm.core.jobs import store
    from tuneterm.core.modelcard import base_lineage

    params: dict = {}
    trained_at = None
    folders = [store.jobs_root() / job_id] + [store.jobs_root() / r[4:].split("@")[0]
                                              for r in base_lineage(store.jobs_root() / job_id) if r.startswith("job:")]
    for folder in folders:
        try:
            config = tomllib.loads((folder / "spec.toml").read_text(encoding="utf-8")).get("config", {})
        except (OSError, ValueError):
            continue
        max_length = (config.get("train") or {}).get("max_length") or config.get("max_length")
        if max_length:
            trained_at = int(max_length)
            break
    context = ollama.context_size(trained_at, model_context)
    if context:
        params["num_ctx"] = context
    defaults = GenerationParams()
    params.update(temperature=defaults.temperature, top_p=defaults.top_p)
    return params


def _same_prompt(family, hf_template: str, system: str) -> bool:
    """Whether the Modelfile's template, filled as Ollama fills it, renders the GGUF's own template's prompt
    for a test conversation (without its system message where the template refuses one)."""
    from tuneterm.core import gotemplate, ollama

    for messages in (PROBE, PROBE[1:]):
        try:
            theirs = ollama.render_hf_template(hf_template, messages)
        except ValueError:  # the template's own raise_exception (Gemma 2 refuses a system message)
            continue
        except Exception:  # noqa: BLE001 - jinja features this renderer lacks
            return False
        return gotemplate.render(family.template, gotemplate.ollama_values(messages, system)) == theirs
    return False


def run(args: argparse.Namespace) -> int:
    import sys

    from tuneterm.core import ollama, trained_prompt
    from tuneterm.core.fsutil import atomic_write_text

    from tuneterm.core.errors import InputError

    job_id, gguf = _gguf_of(args.job)
    meta = ollama.gguf_metadata(gguf)
    params = recipe_params(job_id, meta.get("context_length"))
    trained = trained_prompt.for_ref(f"job:{job_id}")  # what `tuneterm chat job:ID` and serve send it
    if args.to == "llama.cpp":
        print(ollama.llama_server_command(gguf, params, args.port))
        if trained:
            print(f"note: job {trained.job_id} was trained with a system prompt ({len(trained.text)} chars); "
                  "llama-server does not add one: send it as the system message", file=sys.stderr)
        return 0
    hf_template = meta.get("tokenizer.chat_template") or ""
    family = ollama.family_of(hf_template)
    try:
        system = ollama.default_system(family, ollama.render_hf_template(hf_template, PROBE[1:2]))
    except Exception:  # noqa: BLE001 - a template this renderer cannot run: no default system prompt taken
        system = ""
    if trained:  # Ollama's SYSTEM goes first when a request has none, as the trained prompt does in tuneterm
        system = trained.text
    try:
        text = ollama.modelfile(gguf, family, system, params, f"job:{job_id}")
    except ValueError as exc:
        raise InputError("cannot write the Modelfile", [("job", job_id), ("problem", str(exc))],
                         "write its SYSTEM line by hand; the prompt is the `system_prompt` of the training job's output/artifact.json") from exc
    target = gguf.parent / "Modelfile"
    atomic_write_text(target, text)
    same = _same_prompt(family, hf_template, system)
    name = args.name or "tuneterm-" + re.sub(r"[^a-z0-9._-]", "-", job_id.lower().rsplit("-", 1)[-1])
    print(f"wrote {target} ({family.name} template, stop {', '.join(family.stop)})")
    if trained:
        print(f"SYSTEM is the prompt job {trained.job_id} was trained with ({len(trained.text)} chars)")
    if not same:
        print("note: the Modelfile's template renders a different prompt than the GGUF's own chat template "
              "for a test conversation (or that template could not be rendered here); check it before relying on it")
    print(f"ollama create {name} -f {target}")
    print(f"ollama run {name}")
    return 0
