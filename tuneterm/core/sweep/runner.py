"""Running a sweep: trials as jobs, successive halving on the validation score, a time budget,
and a state file that lets an interrupted sweep resume (torch-free).

The state lives in ``<workspace>/sweeps/<id>/state.json`` (replaced atomically after every
change; the workbench's Sweep view reads it). Each trial has runs, one per rung it reached; a run
is a training job (none for few-shot) and an eval job on the validation split.

Successive halving: a training trial's first rung trains ``1/eta^(rungs-1)`` of its recipe's
steps; when every trial of a rung is scored, the best ``1/eta`` go on to the next rung (trained
from the start with more steps) and the others are pruned. Few-shot and feature trials have one
rung. A run whose ETA passes the end of the budget is cancelled (its job keeps a checkpoint);
when the budget ends, running jobs are cancelled and no new ones start. On resume, finished
trials are reused and cancelled jobs are resumed from their checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from tuneterm.core.fsutil import atomic_write_json
from tuneterm.core.jobs import launcher, store
from tuneterm.core.sweep import plan as sweep_plan
from tuneterm.core.sweep.data import SweepData
from tuneterm.core.sweep.space import Candidate

SCHEMA = "tuneterm.sweep/1"
FINAL_STATES = ("done", "pruned", "failed")


@dataclass
class Options:
    budget_s: float
    concurrency: int = 1
    poll_s: float = 0.5
    eval_batch_size: int = 16


def sweeps_root() -> Path:
    from tuneterm.core.workspace import workspace

    return workspace().root / "sweeps"


def new_state(sweep_id: str, model: str, dataset: str, data: SweepData, space, candidates: list[Candidate],
              metric: str, notes: list[str]) -> dict:
    trials = []
    for cand in candidates:
        steps = sweep_plan.full_steps(sweep_plan.check(cand, space.source), data.counts["train"])
        rungs = space.rungs if steps is not None else 1
        trials.append({"key": cand.key, "method": cand.method, "label": cand.label,
                       "params": [[k, list(v) if isinstance(v, tuple) else v] for k, v in cand.params],
                       "full_steps": steps, "rungs": rungs, "status": "pending", "next_rung": 0,
                       "runs": [], "error": None})
    return {"schema": SCHEMA, "id": sweep_id, "created_at": store.now_iso(), "model": model,
            "dataset": dataset, "shape": data.shape, "metric": metric, "space": space.source,
            "eta": space.eta, "seed": space.seed, "budget_s": 0.0, "spent_s": 0.0, "status": "new",
            "counts": data.counts, "notes": list(data.notes) + notes, "trials": trials, "final": None}


def load_state(folder: Path) -> dict | None:
    import json

    path = folder / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def save_state(folder: Path, state: dict) -> None:
    atomic_write_json(folder / "state.json", state)


def candidate_of(trial: dict) -> Candidate:
    return Candidate(trial["method"], tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in trial["params"]))


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


STOP_WAIT_S = 5.0  # how long stopping waits for a cancelled job to exit


class SweepRunner:
    """Runs the trials of ``state`` within ``opts.budget_s`` seconds (more on each resume)."""

    def __init__(self, folder: Path, state: dict, data: SweepData, opts: Options,
                 on_change: Callable[[dict], None] | None = None) -> None:
        self.folder, self.state, self.data, self.opts = folder, state, data, opts
        self.on_change = on_change
        self.val_task = sweep_plan.write_task(data, "val", folder / "tasks")
        self.test_task = sweep_plan.write_task(data, "test", folder / "tasks")
        self.active: list[tuple[dict, dict]] = []  # (trial, run) with a live job

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> dict:
        state = self.state
        started = time.monotonic()
        spent_before = float(state.get("spent_s") or 0.0)
        state["budget_s"] = float(self.opts.budget_s)
        # the loop ends early enough that stopping the running jobs (up to STOP_WAIT_S) still fits the budget
        reserve = min(0.05 * self.opts.budget_s, STOP_WAIT_S + 2 * self.opts.poll_s)
        deadline = started + max(0.0, self.opts.budget_s - spent_before - reserve)
        state["status"] = "running"
        if deadline > started:  # nothing is resumed only to be stopped again at once
            self._adopt()
        self._save()
        try:
            while True:
                self._poll()
                now = time.monotonic()
                state["spent_s"] = round(spent_before + now - started, 1)
                if now >= deadline:
                    self._stop_all("the budget ran out")
                    break
                self._stop_late(deadline - now)
                while len(self.active) < max(1, self.opts.concurrency) and deadline - now > self._cheapest():
                    nxt = self._next()
                    if nxt is None:
                        break
                    self._start(*nxt)
                if not self.active:
                    if self._next() is None:
                        break
                    if deadline - now <= self._cheapest():
                        self._stop_all("the budget left is shorter than the quickest trial so far")
                        break
                time.sleep(self.opts.poll_s)
            state["spent_s"] = round(spent_before + time.monotonic() - started, 1)
            self._final()
            state["status"] = "finished"
        except KeyboardInterrupt:
            self._stop_all("interrupted", wait=10.0)
            if state.get("final") and state["final"].get("state") == "running":
                self._cancel_job(state["final"]["eval_job"], 10.0)
            state["spent_s"] = round(spent_before + time.monotonic() - started, 1)
            state["status"] = "interrupted"
            self._save()
            raise
        self._save()
        return state

    def _save(self) -> None:
        save_state(self.folder, self.state)
        if self.on_change:
            self.on_change(self.state)

    # --- resume -----------------------------------------------------------------------------------

    def _adopt(self) -> None:
        """Pick up the runs of an earlier invocation: live jobs are followed, cancelled ones resumed."""
        for trial in self.state["trials"]:
            if trial["status"] == "not_run":  # the budget or an interruption kept it from starting
                trial["status"], trial["error"] = "pending", None
            elif trial["status"] == "done_early":  # the halving goes on where it stopped
                trial["status"] = "rung_done"
            if trial["status"] in FINAL_STATES:
                continue
            for run in trial["runs"]:
                if run["phase"] not in ("train", "eval"):
                    continue
                job_id = run["train_job"] if run["phase"] == "train" else run["eval_job"]
                info = store.get_job(job_id)
                # cancelled by us (a SIGTERM that came before the child set its handler reads as failed)
                if info.state == "cancelled" or (info.state == "failed" and run.get("stop_reason")):
                    launcher.resume(job_id)
                elif info.state == "queued" and not store.job_alive(info.dir):
                    launcher.launch(job_id)
                trial["status"], trial["error"] = "running", None
                run["note"] = "resumed"
                run.pop("stop_reason", None)
                self.active.append((trial, run))

    # --- choosing the next run ----------------------------------------------------------------------

    def _next(self) -> tuple[dict, int] | None:
        """The next (trial, rung) to start, promoting the best of a finished rung first."""
        for trial in self.state["trials"]:
            if trial["status"] == "pending":
                return trial, trial["next_rung"]
        self._promote()
        for trial in self.state["trials"]:
            if trial["status"] == "pending":
                return trial, trial["next_rung"]
        return None

    def _promote(self) -> None:
        waiting = [t for t in self.state["trials"] if t["status"] == "rung_done"]
        if not waiting or any(t["status"] in ("pending", "running") for t in self.state["trials"]):
            return
        rung = min(len(t["runs"]) - 1 for t in waiting)
        group = [t for t in waiting if len(t["runs"]) - 1 == rung]
        group.sort(key=lambda t: _value(t), reverse=True)
        keep = max(1, math.ceil(len(group) / int(self.state["eta"])))
        for i, trial in enumerate(group):
            if i < keep:
                trial["status"], trial["next_rung"] = "pending", rung + 1
            else:
                trial["status"] = "pruned"
                trial["error"] = (f"pruned after rung {rung + 1}: not in the best {keep} of {len(group)} "
                                  "(successive halving)")

    def _cheapest(self) -> float:
        """Wall time of the quickest scored run so far: less budget than that starts nothing new."""
        times = [r["cost"]["wall_s"] for t in self.state["trials"] for r in t["runs"]
                 if r.get("score") and (r.get("cost") or {}).get("wall_s")]
        return min(times) if times else 0.0

    def _steps(self, trial: dict, rung: int) -> int | None:
        if trial["full_steps"] is None or rung >= trial["rungs"] - 1:
            return None  # the full recipe
        return max(1, round(trial["full_steps"] / int(self.state["eta"]) ** (trial["rungs"] - 1 - rung)))

    # --- starting and following jobs --------------------------------------------------------------

    def _start(self, trial: dict, rung: int) -> None:
        cand = candidate_of(trial)
        steps = self._steps(trial, rung)
        run = {"rung": rung, "steps": steps, "train_job": None, "eval_job": None, "phase": "train",
               "score": None, "cost": {}, "ref": None}
        trial["runs"].append(run)
        trial["status"] = "running"
        name = f"sweep {self.state['id']} {cand.label}" + (f" rung {rung + 1}" if trial["rungs"] > 1 else "")
        try:
            if cand.method == "fewshot":
                run["ref"] = sweep_plan.fewshot_ref(cand, self.state["model"], self.data.train, self.state["seed"])
                self._start_eval(trial, run)
            else:
                job = sweep_plan.train_plan(cand, self.state["model"], self.data, steps=steps,
                                            seed=self.state["seed"], name=name).create()
                run["train_job"], run["ref"] = job.id, f"job:{job.id}"
                launcher.launch(job.id)
        except Exception as exc:  # noqa: BLE001 - a trial that cannot start fails alone
            run["phase"], trial["status"], trial["error"] = "failed", "failed", _message(exc)
            self._save()
            return
        self.active.append((trial, run))
        self._save()

    def _start_eval(self, trial: dict, run: dict) -> None:
        name = f"sweep {self.state['id']} val {trial['label']}"
        job = sweep_plan.eval_plan([run["ref"]], self.val_task, name=name,
                                   batch_size=self.opts.eval_batch_size).create()
        run["eval_job"], run["phase"] = job.id, "eval"
        launcher.launch(job.id)

    def _poll(self) -> None:
        for trial, run in list(self.active):
            job_id = run["train_job"] if run["phase"] == "train" else run["eval_job"]
            info = store.get_job(job_id)
            if info.state in store.ACTIVE:
                continue
            self._add_cost(run, info)
            if info.state != "succeeded":
                self.active.remove((trial, run))
                if info.state == "cancelled" or run.get("stop_reason"):
                    trial["status"] = "stopped"
                    trial["error"] = run.get("stop_reason") or "its job was cancelled"
                else:
                    run["phase"], trial["status"] = "failed", "failed"
                    trial["error"] = f"job {job_id} failed: {info.error or 'see its log'}"
                self._save()
                continue
            if run["phase"] == "train":
                try:
                    self._start_eval(trial, run)
                except Exception as exc:  # noqa: BLE001
                    self.active.remove((trial, run))
                    run["phase"], trial["status"], trial["error"] = "failed", "failed", _message(exc)
                self._save()
                continue
            self.active.remove((trial, run))
            try:
                run["score"] = self._score(info)
            except Exception as exc:  # noqa: BLE001
                run["phase"], trial["status"], trial["error"] = "failed", "failed", _message(exc)
                self._save()
                continue
            if run["score"].get("eval_peak_mem_mb"):
                run["cost"]["peak_mem_mb"] = max(run["cost"].get("peak_mem_mb") or 0, run["score"]["eval_peak_mem_mb"])
            run["phase"] = "done"
            last = run["rung"] >= trial["rungs"] - 1
            trial["status"] = "done" if last else "rung_done"
            self._save()

    def _score(self, info) -> dict:
        from tuneterm.core.evals.report import load_report

        report = load_report(info.dir / "output")
        task = next(iter(report["tasks"].values()))
        (vid, res), = task["variants"].items()
        metric = self.state["metric"]
        if metric not in res.get("metrics", {}):
            raise ValueError(f"the eval report has no metric {metric!r} (has {', '.join(res.get('metrics', {}))})")
        m = res["metrics"][metric]
        speed = res.get("speed") or {}
        return {"value": m["value"], "ci95": m.get("ci95"), "n": res["n"],
                "eval_peak_mem_mb": round(speed["peak_memory_bytes"] / 2**20, 1)
                if speed.get("peak_memory_bytes") else None}

    def _add_cost(self, run: dict, info) -> None:
        cost = run["cost"]
        wall = _seconds(info.started_at, info.finished_at)
        if wall is not None:
            key = "train_s" if run["phase"] == "train" else "eval_s"
            cost[key] = round(cost.get(key, 0.0) + wall, 1)
            cost["wall_s"] = round(cost.get("train_s", 0.0) + cost.get("eval_s", 0.0), 1)
        events, _ = store.read_events(info.id)
        peaks = [e["peak_mem_mb"] for e in events if isinstance(e.get("peak_mem_mb"), (int, float))]
        tokens = [e["tokens"] for e in events if isinstance(e.get("tokens"), (int, float))]
        if peaks:
            cost["peak_mem_mb"] = max(peaks + [cost.get("peak_mem_mb") or 0])
        if tokens and run["phase"] == "train":
            cost["train_tokens"] = max(tokens)

    # --- budget ---------------------------------------------------------------------------------------

    def _stop_late(self, left_s: float) -> None:
        """Cancel a training run whose ETA passes the end of the budget: it cannot be scored in time."""
        for trial, run in list(self.active):
            job_id = run["train_job"] if run["phase"] == "train" else run["eval_job"]
            eta = _eta(job_id)
            if eta is not None and eta > left_s and not run.get("stop_reason"):
                run["stop_reason"] = (f"stopped early: its {'training' if run['phase'] == 'train' else 'scoring'} "
                                      f"would end {eta:.0f} s from now, past the end of the budget "
                                      f"({left_s:.0f} s left)")
                self._cancel_job(job_id, 0.0)

    def _stop_all(self, why: str, wait: float = STOP_WAIT_S) -> None:
        for trial, run in list(self.active):
            job_id = run["train_job"] if run["phase"] == "train" else run["eval_job"]
            run["stop_reason"] = f"stopped: {why}"
            self._cancel_job(job_id, wait)
            trial["status"], trial["error"] = "stopped", f"stopped: {why}"
            info = store.get_job(job_id)
            if info.state in store.FINISHED:
                self._add_cost(run, info)
        self.active.clear()
        for trial in self.state["trials"]:
            if trial["status"] == "pending":
                trial["status"], trial["error"] = "not_run", f"not run: {why}"
            elif trial["status"] == "rung_done":
                trial["status"] = "done_early"  # scored at an early rung; the budget ended the halving
        self._save()

    @staticmethod
    def _cancel_job(job_id: str, wait: float) -> None:
        try:
            launcher.cancel(job_id, wait=wait)
        except Exception:  # noqa: BLE001 - it finished meanwhile
            pass

    # --- the final test ---------------------------------------------------------------------------

    def _final(self) -> None:
        """The best trial scored once on the test split, with the base model and the runner-up."""
        from tuneterm.core.sweep.leaderboard import ranked

        board = ranked(self.state)
        if not board:
            return
        refs = [board[0]["ref"], self.state["model"]] + ([board[1]["ref"]] if len(board) > 1 else [])
        final = self.state.get("final") or {}
        if final.get("refs") != refs or final.get("state") in ("failed", None):
            job = sweep_plan.eval_plan(refs, self.test_task, name=f"sweep {self.state['id']} test",
                                       baseline=refs[0], batch_size=self.opts.eval_batch_size).create()
            final = {"refs": refs, "eval_job": job.id, "state": "running", "trial": board[0]["key"]}
            self.state["final"] = final
            launcher.launch(job.id)
            self._save()
        elif final.get("state") == "running":
            info = store.get_job(final["eval_job"])
            if info.state == "cancelled":
                launcher.resume(final["eval_job"])
        while True:
            info = store.get_job(final["eval_job"])
            if info.state in store.FINISHED:
                break
            time.sleep(self.opts.poll_s)
        if info.state != "succeeded":
            final.update(state="failed", error=info.error or f"see `tuneterm jobs logs {info.id}`")
            return
        from tuneterm.core.evals.report import load_report

        final.update(state="done", **test_summary(load_report(info.dir / "output"), refs, self.state["metric"]))


def test_summary(report: dict, refs: list[str], metric: str) -> dict:
    """The test scores of best/base/runner-up and best's paired comparisons with the other two."""
    task = next(iter(report["tasks"].values()))
    names = ["best", "base", "runner_up"][:len(refs)]
    scores = {}
    for name, ref in zip(names, refs):
        res = task["variants"].get(ref) or {}
        m = (res.get("metrics") or {}).get(metric) or {}
        scores[name] = {"ref": ref, "value": m.get("value"), "ci95": m.get("ci95"), "n": res.get("n")}
    comparisons, warnings = [], []
    for name, ref in list(zip(names, refs))[1:]:
        c = next((c for c in task["comparisons"] if c["variant"] == ref and c["metric"] == metric), None)
        if c is None or c.get("delta") is None:
            continue
        lo, hi = c.get("ci95") or [None, None]
        row = {"other": name, "ref": ref, "delta": -c["delta"],  # best minus the other
               "ci95": [-hi, -lo] if lo is not None and hi is not None else None,
               "test": c.get("test"), "p_value": c.get("p_value"), "significant": bool(c.get("significant")),
               "n": c.get("n")}
        comparisons.append(row)
        if not row["significant"]:
            warnings.append(f"the best trial and the {name.replace('_', '-')} ({ref}) differ by "
                            f"{row['delta']:+.3f} on the test split, within noise (p={row['p_value']:.3g})")
    return {"scores": scores, "comparisons": comparisons, "warnings": warnings}


def _eta(job_id: str) -> float | None:
    """Seconds a running job still needs: a training job's ``eta_s``, or an eval job's pace between
    its progress events (model loading left out)."""
    info = store.get_job(job_id)
    last = info.last_event or {}
    if isinstance(last.get("eta_s"), (int, float)):
        return float(last["eta_s"])
    if last.get("type") != "eval_progress":
        return None
    events, _ = store.read_events(job_id)
    steps = [e for e in events if e.get("type") == "eval_progress" and isinstance(e.get("time"), (int, float))]
    if len(steps) < 2 or steps[-1]["done"] <= steps[0]["done"]:
        return None
    rate = (steps[-1]["time"] - steps[0]["time"]) / (steps[-1]["done"] - steps[0]["done"])
    return rate * (steps[-1]["total"] - steps[-1]["done"])


def _value(trial: dict) -> float:
    scores = [r["score"]["value"] for r in trial["runs"] if r.get("score") and r["score"].get("value") is not None]
    return max(scores) if scores else float("-inf")


def _message(exc: Exception) -> str:
    title = getattr(exc, "title", None)
    facts = getattr(exc, "facts", None) or []
    if title:
        return title + ("; " + "; ".join(f"{k}: {v}" for k, v in facts) if facts else "")
    return f"{type(exc).__name__}: {exc}"


def list_states() -> list[dict]:
    """Every sweep of the workspace (its state), newest first; a damaged state file is skipped."""
    import json

    root = sweeps_root()
    out = []
    for path in sorted(root.glob("*/state.json")) if root.is_dir() else []:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and state.get("schema") == SCHEMA:
            out.append(state)
    return sorted(out, key=lambda s: s.get("created_at") or "", reverse=True)
