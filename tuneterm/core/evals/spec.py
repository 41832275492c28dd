"""Eval task specs: YAML files under ``evals/``, validated before any model loads.

A task file (one task per file)::

    name: tickets            # unique within a run
    version: 1               # bump on any prompt/data/scoring change: part of every cache key
    type: generate           # generate | choice (log-likelihood) | perplexity
    data: {path: ../../sample_data/tickets/test.jsonl, id: id, limit: null}
    prompt: {template: null, system: null, chat_template: true}
    fewshot: {n: 0, pool: null, seed: 1234, sampler: random}
    generation: {max_new_tokens: 16, temperature: 0, stop: ["\\n"]}
    extract: [strip, first_line, lowercase, {regex: "(payments-ops|platform-eng)"}, json]
    metrics: [exact_match, {f1: {average: macro}}, {module: ./my_metric}]

A suite is a folder of task files or a suite file (``suite: NAME`` + ``tasks: [paths]``).
Errors name the file and the field (``data.path``, ``metrics[2]``...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneterm.core.errors import InputError, NotFoundError, TunetermError

TASK_TYPES = ("generate", "choice", "perplexity")
EXTRACT_STEPS = ("strip", "lowercase", "first_line", "first_word", "json", "remove_punctuation")
_VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    path: str | None = None  # JSONL or CSV file, relative to the spec file
    dataset: str | None = None  # or a workspace dataset name
    split: str | None = None  # for a workspace dataset: train | val | test
    id: str | None = None  # the field that holds a stable item id (else a content hash)
    limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        if bool(self.path) == bool(self.dataset):
            raise ValueError("give exactly one of data.path (a file) or data.dataset (a workspace dataset)")
        return self


class PromptSpec(_Strict):
    template: str | None = None  # None with chat rows = the row's own messages
    system: str | None = None  # overrides the row's system message when set
    chat_template: bool | None = None  # None = on for generate, off for choice/perplexity


class FewShotSpec(_Strict):
    n: int = Field(default=0, ge=0, le=64)
    pool: str | None = None  # a file (relative to the spec) or a workspace dataset name
    seed: int = 1234
    sampler: Literal["random", "first_n"] = "random"
    delimiter: str = "\n\n"  # between examples when the chat template is off


class GenerationSpec(_Strict):
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    # generate tasks: answers constrained to this JSON schema (inline, or a .json file relative to the
    # spec), through the grammar engine of `tuneterm serve`'s response_format (xgrammar); remote
    # variants get it as response_format json_schema
    json_schema: dict[str, Any] | str | None = None


class MetricRef(_Strict):
    name: str  # the key the report uses
    module: str  # a built-in name or a path to a local evaluate module
    options: dict[str, Any] = Field(default_factory=dict)
    judge: dict[str, Any] | None = None  # LLM-as-judge settings (model, rubric, threshold)


class TaskSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][\w.\-]*$")
    version: int | str
    type: Literal["generate", "choice", "perplexity"]
    description: str = ""
    data: DataSpec
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    target: str | None = None  # a template; default {{target}} (chat rows: the last assistant turn)
    choices: list[str] | str | None = None  # choice tasks: a list, or the field holding the list
    target_delimiter: str = " "  # lm-eval's convention: context + " " + choice
    text: str | None = None  # perplexity: the template of the scored text (default: the target)
    fewshot: FewShotSpec = Field(default_factory=FewShotSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    extract: list[str | dict[str, Any]] = Field(default_factory=list)
    metrics: list[MetricRef] = Field(default_factory=list)
    source: str = ""  # the file it came from (filled in by the loader)

    @field_validator("extract")
    @classmethod
    def _extract_steps(cls, steps: list) -> list:
        for i, step in enumerate(steps):
            if isinstance(step, str):
                if step not in EXTRACT_STEPS:
                    raise ValueError(f"extract[{i}]: unknown step {step!r}; expected one of {', '.join(EXTRACT_STEPS)} or {{regex: ...}}")
            elif isinstance(step, dict):
                if set(step) - {"regex", "group", "default"} or "regex" not in step:
                    raise ValueError(f"extract[{i}]: a mapping step is {{regex: PATTERN, group: N, default: TEXT}}")
                try:
                    re.compile(step["regex"])
                except re.error as exc:
                    raise ValueError(f"extract[{i}]: bad regex {step['regex']!r}: {exc}") from exc
            else:
                raise ValueError(f"extract[{i}]: a step is a name or {{regex: ...}}")
        return steps

    @model_validator(mode="after")
    def _by_type(self) -> "TaskSpec":
        if self.type == "choice" and self.choices is None:
            raise ValueError("choices: a choice task needs a list of choices or the name of the field holding them")
        if self.type != "choice" and self.choices is not None:
            raise ValueError(f"choices: only choice tasks take choices (this task's type is {self.type})")
        if not self.metrics:
            default = {"generate": "exact_match", "choice": "accuracy", "perplexity": "perplexity"}[self.type]
            self.metrics = [MetricRef(name=default, module=default)]
        return self

    @property
    def use_chat_template(self) -> bool:
        if self.prompt.chat_template is not None:
            return self.prompt.chat_template
        return self.type == "generate"

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()


def _metric_refs(raw: Any, file: Path) -> list[dict]:
    """``metrics:`` accepts ``name``, ``{name: {options}}``, ``{module: path, name: ..}``, ``{judge: {...}}``."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _spec_error(file, "metrics", "must be a list, e.g. [exact_match, {f1: {average: macro}}]")
    out = []
    for i, item in enumerate(raw):
        field = f"metrics[{i}]"
        if isinstance(item, str):
            out.append({"name": item, "module": item})
        elif isinstance(item, dict) and "module" in item:
            extra = set(item) - {"module", "name", "options"}
            if extra:
                raise _spec_error(file, field, f"unknown keys {sorted(extra)}; use module, name, options")
            name = item.get("name") or Path(str(item["module"])).stem
            out.append({"name": name, "module": str(item["module"]), "options": item.get("options") or {}})
        elif isinstance(item, dict) and "judge" in item:
            judge = item["judge"]
            if not isinstance(judge, dict) or not judge.get("model") or not judge.get("rubric"):
                raise _spec_error(file, field, "a judge needs {model: REF, rubric: TEXT, threshold: 0.5}")
            out.append({"name": item.get("name", "judge"), "module": "judge", "judge": judge})
        elif isinstance(item, dict) and len(item) == 1:
            (name, opts), = item.items()
            if opts is not None and not isinstance(opts, dict):
                raise _spec_error(file, f"{field}.{name}", "options must be a mapping")
            out.append({"name": name, "module": name, "options": opts or {}})
        else:
            raise _spec_error(file, field, "a metric is a name, {name: {options}} or {module: PATH}")
    return out


class SpecErrors(InputError):
    """Several problems in one spec file; reads as the first one (facts) and renders them all."""

    def __init__(self, errors: list[TunetermError]):
        first = errors[0]
        super().__init__(f"{len(errors)} problems in the eval spec; the first: {first.title}", first.facts, first.hint)
        self.errors = errors

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


def flatten(errors: list[TunetermError]) -> list[TunetermError]:
    """One entry per problem (a :class:`SpecErrors` counts as its parts)."""
    return [part for e in errors for part in (e.errors if isinstance(e, SpecErrors) else [e])]


def _validation_error(path: Path, err: dict) -> InputError:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field (typo?)"
    top = str(err["loc"][0]) if err["loc"] else ""
    return _spec_error(path, loc, msg, _key_line(path, top) if top else None)


def _spec_error(file: Path, field: str, message: str, line: int | None = None) -> InputError:
    facts = [("file", str(file))]
    if line is not None:
        facts.append(("line", str(line)))
    facts += [("field", field), ("problem", message)]
    return InputError("invalid eval spec", facts, "fix the field and run again; see docs/evals.md for the spec format")


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NotFoundError("cannot read the eval spec", [("file", str(path)), ("problem", exc.strerror or str(exc))]) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise _spec_error(path, "(yaml)", str(getattr(exc, "problem", exc)), mark.line + 1 if mark else None) from exc


def _key_line(path: Path, key: str) -> int | None:
    """Best-effort line of a top-level ``key:`` for error messages."""
    try:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(rf"^{re.escape(key)}\s*:", line):
                return n
    except OSError:
        pass
    return None


def load_task(path: str | Path) -> TaskSpec:
    """Parse and validate one task file."""
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise _spec_error(path, "(top level)", "a task spec is a mapping with name, version, type, data, metrics")
    if "suite" in raw:
        raise _spec_error(path, "suite", "this is a suite file, not a task; load it with load_suite")
    raw = dict(raw)
    raw["metrics"] = _metric_refs(raw.get("metrics"), path)
    raw["source"] = str(path.resolve())
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        found = [_validation_error(path, err) for err in exc.errors()]
        raise (found[0] if len(found) == 1 else SpecErrors(found)) from exc
    check_templates(spec)
    _resolve_json_schema(spec, path)
    return spec


def _resolve_json_schema(spec: TaskSpec, path: Path) -> None:
    """``generation.json_schema`` as a mapping (a file name is read now, so the cache key holds the schema)."""
    schema = spec.generation.json_schema
    if schema is None:
        return
    field, line = "generation.json_schema", _key_line(path, "generation")
    if spec.type != "generate":
        raise _spec_error(path, field, f"only generate tasks take a JSON schema (this task's type is {spec.type})", line)
    if isinstance(schema, str):
        file = (spec.base_dir / schema).expanduser()
        try:
            schema = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise _spec_error(path, field, f"cannot read {file}: {exc.strerror or exc}", line) from exc
        except ValueError as exc:
            raise _spec_error(path, field, f"{file} is not JSON: {exc}", line) from exc
        if not isinstance(schema, dict):
            raise _spec_error(path, field, f"{file} holds no JSON object (a JSON schema is an object)", line)
    if not schema:
        raise _spec_error(path, field, "an empty schema constrains nothing; give {type: object, properties: ...}", line)
    spec.generation.json_schema = schema


def check_templates(spec: TaskSpec) -> None:
    """Templates may only use ``{{name}}`` placeholders (no logic): catch ``{{ x | y }}`` early."""
    path = Path(spec.source)
    for field, text in (("prompt.template", spec.prompt.template), ("prompt.system", spec.prompt.system),
                        ("target", spec.target), ("text", spec.text)):
        if text and "{{" in text:
            stripped = _VAR_RE.sub("", text)
            if "{{" in stripped or "}}" in stripped:
                raise _spec_error(path, field, "a placeholder is {{field}} (letters, digits, _ and .); no filters or logic")


def is_suite_file(path: Path) -> bool:
    raw = _read_yaml(path)
    return isinstance(raw, dict) and "suite" in raw


def load_suite(path: str | Path, errors: list | None = None) -> list[TaskSpec]:
    """A task file, a suite file or a folder of task files -> validated tasks (names unique).

    With ``errors`` (a list), a task file or suite entry that fails is appended to it and the others
    still load, so ``eval --check`` reports every problem in one run."""
    from tuneterm.core.resources import builtin_fallback

    path = builtin_fallback(Path(path))  # evals/... from any directory: the built-in suites
    if not path.exists() and path.suffix in (".yaml", ".yml") and path.with_suffix("").is_dir():
        path = path.with_suffix("")  # evals/tickets.yaml -> the task folder evals/tickets/
    if not path.exists():
        raise NotFoundError(
            "no such eval spec or suite", [("path", str(path))],
            "give a task .yaml file, a suite .yaml file or a folder of task files (see evals/)",
        )
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise NotFoundError("the folder holds no task files", [("folder", str(path))], "add NAME.yaml task specs")
        tasks = []
        for f in files:
            tasks.extend(_collecting(errors, lambda f=f: load_suite(f, errors) if is_suite_file(f) else [load_task(f)]))
    elif is_suite_file(path):
        raw = _read_yaml(path)
        entries = raw.get("tasks")
        if not isinstance(entries, list) or not entries:
            raise _spec_error(path, "tasks", "a suite file lists its task files: tasks: [a.yaml, b/]", _key_line(path, "tasks"))
        extra = set(raw) - {"suite", "tasks", "description"}
        if extra:
            raise _spec_error(path, sorted(extra)[0], "unknown field in a suite file (suite, tasks, description)")
        tasks = []
        for i, entry in enumerate(entries):
            target = (path.parent / str(entry))
            if not target.exists():
                err = _spec_error(path, f"tasks[{i}]", f"{entry} does not exist (relative to the suite file)")
                if errors is None:
                    raise err
                errors.append(err)
                continue
            tasks.extend(_collecting(errors, lambda target=target: load_suite(target, errors)))
    else:
        tasks = [load_task(path)]
    seen: dict[str, str] = {}
    for t in tasks:
        if t.name in seen and seen[t.name] != t.source:
            raise _spec_error(Path(t.source), "name", f"task name {t.name!r} is also used by {seen[t.name]}")
        seen[t.name] = t.source
    # the same file reached twice (folder + suite file) counts once
    unique = {t.source: t for t in tasks}
    return list(unique.values())


def _collecting(errors: list | None, load) -> list[TaskSpec]:
    """``load()``, or [] with its error appended to ``errors`` (raised when ``errors`` is None)."""
    if errors is None:
        return load()
    try:
        return load()
    except TunetermError as exc:
        errors.append(exc)
        return []
