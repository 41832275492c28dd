"""Job kind ``sequential``: a pipeline of training stages run one after another as one job.

Each stage is an ordinary train config (full | freeze | lora | qlora | dpo) run through the train
kind's entry point (:func:`tuneterm.workers.kinds.train.run`) with a per-stage view of the job context:
its own ``checkpoints/N-NAME/`` and ``output/stages/N-NAME/`` folders, and every event tagged with
``stage`` (1-based) and ``stage_name``. A stage starts from the previous stage's full weights; an
adapter (LoRA/QLoRA, or a DPO stage trained with LoRA) is merged into them first.

After each stage the model is evaluated (mean token loss and perplexity on the assistant tokens)
on the validation data of that stage and of every earlier one; a ``stage_eval`` event and
``output/stages.json`` (a stage x validation-set matrix) make forgetting visible.

Resume (``tuneterm jobs resume ID``): stages whose output and evaluation are recorded in
stages.json are skipped; the interrupted stage continues from its own last checkpoint.
"""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path

from tuneterm.core.fsutil import atomic_write_json
from tuneterm.workers.adapters import merge_adapter
from tuneterm.workers.jobctx import JobContext

STATE_FILE = "stages.json"


class StageContext:
    """The job context as one stage sees it: the stage's config, folders and event tags."""

    def __init__(self, parent: JobContext, index: int, name: str, config: dict, resume: bool):
        self._parent = parent
        self.index = index
        self.name = name
        self.config = config
        self.resume = resume
        self.checkpoints_dir = parent.checkpoints_dir / stage_folder(index, name)
        self.output_dir = parent.output_dir / "stages" / stage_folder(index, name)
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def __getattr__(self, attr):  # should_stop, is_main, world_size, local_rank, id, heartbeat, ...
        return getattr(self._parent, attr)

    def event(self, **fields) -> None:
        self._parent.event(stage=self.index, stage_name=self.name, **fields)

    def log(self, msg: str) -> None:
        self._parent.log(f"[stage {self.index} {self.name}] {msg}")

    def write_artifact(self, kind, path, base=None, quant=None, **extra):
        """The stage's own output/stages/N-NAME/artifact.json (not the job's)."""
        return JobContext.write_artifact(self, kind, path, base=base, quant=quant, **extra)


def stage_folder(index: int, name: str) -> str:
    return f"{index}-{name}"


# --- state (output/stages.json) ---------------------------------------------------------------

def _load_state(ctx, stages: list[dict]) -> dict:
    path = ctx.output_dir / STATE_FILE
    if ctx.resume and path.is_file():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if [s["name"] for s in state.get("stages", [])] == [s["name"] for s in stages]:
                return state
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return {
        "job": ctx.id, "metric": "loss (mean over assistant tokens); perplexity = exp(loss)",
        "val_sets": [s["name"] for s in stages if s.get("eval_data")],
        "stages": [{"index": i, "name": s["name"], "method": s["method"], "state": "pending"}
                   for i, s in enumerate(stages, 1)],
        "rows": [],  # "base" and the stages evaluated so far, in order
        "matrix": {"loss": {}, "perplexity": {}},  # row -> val set -> value
    }


def _save_state(ctx, state: dict) -> None:
    if ctx.is_main:
        atomic_write_json(ctx.output_dir / STATE_FILE, state)


# --- the pipeline ---------------------------------------------------------------------------------

def run(ctx) -> dict:
    config = ctx.config
    stages: list[dict] = config["stages"]
    ev = config.get("eval", {})
    state = _load_state(ctx, stages)
    _save_state(ctx, state)
    model = _start_model(config["model"])
    val_sets = [(s["name"], s["eval_data"]) for s in stages if s.get("eval_data")]
    ctx.log(f"sequential pipeline: {' -> '.join(s['name'] + ' (' + s['method'] + ')' for s in stages)}")

    if ev.get("base", True) and "base" not in state["matrix"]["loss"] and val_sets:
        ctx.log("evaluating the starting model on every stage's validation data")
        row = _evaluate_row(ctx, model, val_sets, ev, 0, "base")
        if row is None:
            return state
        _record_row(ctx, state, "base", row, 0)

    for index, stage in enumerate(stages, 1):
        entry = state["stages"][index - 1]
        name = stage["name"]
        if entry.get("state") == "succeeded" and entry.get("model") and name in state["matrix"]["loss"]:
            model = str(ctx.output_dir / entry["model"])
            ctx.event(type="stage_skip", stage=index, stage_name=name, reason="finished before the resume")
            ctx.log(f"stage {index} {name}: finished earlier, skipped")
            continue
        if entry.get("state") != "trained":
            stage_config = _stage_config(stage, model, (ctx.config.get("log") or {}).get("report_to") or ())
            sctx = StageContext(ctx, index, name, stage_config,
                                resume=bool(ctx.resume and entry.get("state") in ("running", "cancelled")))
            entry.update(state="running", start_model=str(model))
            _save_state(ctx, state)
            sctx.event(type="stage_begin", method=stage["method"], data=stage["data"],
                       start_model=str(model), index=index, total_stages=len(stages),
                       resume=sctx.resume)
            sctx.log(f"{stage['method']} on {stage['data']} from {model}")
            trainer = _train_stage(sctx)
            metrics = _final_metrics(trainer)
            del trainer
            _free()
            if ctx.should_stop:
                entry["state"] = "cancelled"
                _save_state(ctx, state)
                sctx.event(type="stage_end", state="cancelled")
                return state
            model_dir = _stage_model(sctx, stage["method"])
            entry.update(state="trained", model=str(model_dir.relative_to(ctx.output_dir)), metrics=metrics)
            _save_state(ctx, state)
            sctx.event(type="stage_end", state="trained", model=str(model_dir),
                       **{k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        model = str(ctx.output_dir / entry["model"])
        seen = [(n, p) for n, p in val_sets if n in [s["name"] for s in stages[:index]]]
        if seen:
            row = _evaluate_row(ctx, model, seen, ev, index, name)
            if row is None:  # stopped during the evaluation: the stage's weights are kept
                return state
        else:
            row = {}
        _record_row(ctx, state, name, row, index)
        entry["state"] = "succeeded"
        _save_state(ctx, state)

    state["forgetting"] = forgetting(state)
    _save_state(ctx, state)
    final = Path(model)
    ctx.write_artifact("model", final, base=config["model"], method="sequential",
                       stages=[s["name"] for s in stages])
    _write_summary(ctx, state)
    ctx.event(type="done", stages=len(stages), model=str(final))
    ctx.log("forgetting matrix (loss; rows: after stage, columns: validation set)\n" + format_matrix(state))
    return state


def _start_model(ref: str) -> str:
    from tuneterm.workers.loading import local_path

    path, facts = local_path(ref)
    if facts.get("adapter"):
        from tuneterm.core.errors import ConfigError

        raise ConfigError("a sequential pipeline starts from full weights, not an adapter",
                          [("model", ref)], "merge it first (lora.merge=true) and start from that job:ID")
    return str(path)


def _stage_config(stage: dict, model: str, report_to=()) -> dict:
    """The stage as a train job's config, starting from ``model``."""
    config = {k: v for k, v in stage.items() if k not in ("name", "val")}
    config["model"] = model
    if report_to and not (config.get("log") or {}).get("report_to"):  # the pipeline's trackers
        config["log"] = {**config.get("log", {}), "report_to": list(report_to)}
    if "lora" in config and isinstance(config["lora"], dict):
        config["lora"] = {**config["lora"], "merge": True}  # the next stage needs full weights
    return config


def _train_stage(sctx: StageContext):
    """The train kind's entry point (its ``dpo`` dispatch included) on the stage's context."""
    from tuneterm.workers.kinds import train

    return train.run(sctx)


def _final_metrics(trainer) -> dict:
    state = getattr(trainer, "state", None)
    out: dict = {}
    if state is not None:
        out["global_step"] = state.global_step
        for entry in reversed(state.log_history):
            if "loss" in entry and "final_loss" not in out:
                out["final_loss"] = float(entry["loss"])
            if "eval_loss" in entry and "eval_loss" not in out:
                out["eval_loss"] = float(entry["eval_loss"])
    return out


def _stage_model(sctx: StageContext, method: str) -> Path:
    """The stage's full-weights folder; an adapter-only output is merged into its base here."""
    manifest_path = sctx.output_dir / "artifact.json"
    if not manifest_path.is_file():
        from tuneterm.core.errors import RuntimeFailure

        raise RuntimeFailure(f"stage {sctx.index} ({sctx.name}) wrote no artifact",
                             [("folder", str(sctx.output_dir)), ("method", method)])
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    folder = sctx.output_dir / manifest["path"]
    if manifest.get("kind") == "model":
        return folder
    merged = sctx.output_dir / "merged"
    if not (merged / "config.json").is_file():
        sctx.log(f"merging the {manifest.get('kind')} at {folder} into {sctx.config['model']}")
        merge_adapter(folder, Path(sctx.config["model"]), merged)
    return merged


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


# --- evaluation ---------------------------------------------------------------------------------

def _evaluate_row(ctx, model: str, val_sets: list[tuple[str, str]], ev: dict, index: int, row_name: str):
    """{val set: {loss, perplexity, tokens, examples}} for ``model``; None when a stop came first."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(device).eval()
    row = {}
    try:
        for val_name, path in val_sets:
            if ctx.should_stop:
                return None
            result = evaluate_file(net, tokenizer, path, device, max_length=int(ev.get("max_length", 256)),
                                   batch_size=int(ev.get("batch_size", 8)),
                                   max_examples=int(ev.get("max_examples", 0)))
            row[val_name] = result
            ctx.event(type="stage_eval", stage=index, stage_name=row_name, val_set=val_name, **result)
            ctx.log(f"after {row_name}: {val_name} loss {result['loss']:.4f} perplexity {result['perplexity']:.2f}")
            ctx.heartbeat()
    finally:
        del net
        _free()
    return row


def evaluate_file(model, tokenizer, path: str | Path, device: str = "cpu", max_length: int = 256,
                  batch_size: int = 8, max_examples: int = 0) -> dict:
    """Mean cross-entropy over the assistant tokens of a chat (or preference) JSONL file."""
    import torch
    import torch.nn.functional as F

    from tuneterm.workers.train.data import IGNORE, ChatDataset, PadToLongest

    rows = _eval_rows(path)
    if max_examples > 0:
        rows = rows[:max_examples]
    data = ChatDataset(tokenizer, rows, max_length, "assistant")
    collate = PadToLongest(tokenizer.pad_token_id)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            targets = batch["labels"][:, 1:]
            keep = targets != IGNORE
            total += float(F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="sum"))
            count += int(keep.sum())
    loss = total / max(count, 1)
    return {"loss": round(loss, 5), "perplexity": round(math.exp(min(loss, 50.0)), 4), "tokens": count,
            "examples": len(data)}


def _eval_rows(path: str | Path) -> list[dict]:
    """Chat rows; preference pairs count as their input followed by the preferred output."""
    from tuneterm.core.datasets.schemas import messages_of
    from tuneterm.core.jsonl import iter_jsonl

    return [row if "messages" in row else {"messages": messages_of(row)}
            for _, row in iter_jsonl(path, what="evaluation data")]


def _record_row(ctx, state: dict, row_name: str, row: dict, index: int) -> None:
    for metric in ("loss", "perplexity"):
        state["matrix"][metric][row_name] = {k: v[metric] for k, v in row.items()}
    state.setdefault("details", {})[row_name] = row
    if row_name not in state["rows"]:
        state["rows"].append(row_name)
    _save_state(ctx, state)


def forgetting(state: dict) -> dict:
    """Per validation set: loss after the last stage minus loss right after its own stage (> 0 = forgot)."""
    loss = state.get("matrix", {}).get("loss", {})
    rows = state.get("rows", [])
    if not rows:
        return {}
    last = loss.get(rows[-1], {})
    return {col: round(last[col] - loss[col][col], 5) for col in state.get("val_sets", [])
            if col in last and col in loss.get(col, {})}


def format_matrix(state: dict, metric: str = "loss") -> str:
    """The matrix as a small text table (rows: after stage; columns: validation sets)."""
    cols = state.get("val_sets", [])
    rows = state.get("matrix", {}).get(metric, {})
    width = max([len("after \\ val")] + [len(r) for r in rows] + [0])
    lines = ["after \\ val".ljust(width) + "".join(f"  {c:>12}" for c in cols)]
    for name in state.get("rows", list(rows)):
        values = rows.get(name, {})
        cells = "".join(f"  {values[c]:>12.4f}" if c in values else f"  {'-':>12}" for c in cols)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)


def _write_summary(ctx, state: dict) -> None:
    from tuneterm.core.fsutil import atomic_write_text

    lines = [f"# Sequential fine-tune (tuneterm job {ctx.id})", "",
             "Stages: " + " -> ".join(f"{s['name']} ({s['method']})" for s in state["stages"]), "",
             "Validation loss after each stage (lower is better; a rise in an earlier column is forgetting):", "",
             "```", format_matrix(state), "```", "",
             "Forgetting (last row minus the row of the set's own stage): "
             + (", ".join(f"{k} {v:+.4f}" for k, v in state.get("forgetting", {}).items()) or "-"), "",
             f"Use it: `tuneterm chat job:{ctx.id} \"...\"`. Figures: `stages.json`.", ""]
    if ctx.is_main:
        from tuneterm.workers.train.output import hub_card

        atomic_write_text(ctx.output_dir / "README.md", hub_card(ctx, "\n".join(lines)))
