"""The leaderboard of a sweep (torch-free): trials ranked by the validation metric with their 95%
intervals and costs, the final test comparison, the ``--json`` document and the terminal text.
The CLI and the workbench's Sweep view both read a sweep's ``state.json`` through this module."""

from __future__ import annotations

import io

STATUS_TEXT = {"pending": "queued", "running": "running", "rung_done": "waiting for its rung", "done": "done",
               "done_early": "done (early rung)", "pruned": "pruned", "stopped": "stopped", "failed": "failed",
               "not_run": "not run"}


def _best_run(trial: dict) -> dict | None:
    scored = [r for r in trial["runs"] if r.get("score") and r["score"].get("value") is not None]
    return max(scored, key=lambda r: (r["score"]["value"], r["rung"])) if scored else None


def _job_of(run: dict) -> str | None:
    return run.get("train_job") or run.get("eval_job")


def rows(state: dict) -> list[dict]:
    """Every trial as a leaderboard row, scored ones first (best first), then the others."""
    out = []
    for trial in state["trials"]:
        run = _best_run(trial)
        cost = {"wall_s": 0.0}
        for r in trial["runs"]:
            c = r.get("cost") or {}
            cost["wall_s"] = round(cost["wall_s"] + (c.get("wall_s") or 0.0), 1)
            for key in ("peak_mem_mb", "train_tokens"):
                if c.get(key) is not None:
                    cost[key] = max(cost.get(key) or 0, c[key])
        score = run["score"] if run else None
        out.append({
            "key": trial["key"], "method": trial["method"], "label": trial["label"], "status": trial["status"],
            "value": score["value"] if score else None, "ci95": score.get("ci95") if score else None,
            "n": score.get("n") if score else None,
            "rung": (run["rung"] + 1) if run else None, "rungs": trial["rungs"],
            "steps": run.get("steps") if run else None,
            "job": _job_of(run) if run else (_job_of(trial["runs"][-1]) if trial["runs"] else None),
            "ref": run.get("ref") if run else None, "cost": cost, "note": trial.get("error"),
        })
    scored = sorted((r for r in out if r["value"] is not None), key=lambda r: (-r["value"], r["cost"]["wall_s"]))
    for rank, row in enumerate(scored, 1):
        row["rank"] = rank
    rest = [r for r in out if r["value"] is None]
    for row in rest:
        row["rank"] = None
    return scored + rest


def ranked(state: dict) -> list[dict]:
    """The scored rows only, best first."""
    return [r for r in rows(state) if r["value"] is not None]


def document(state: dict) -> dict:
    """What ``tuneterm sweep --json`` prints."""
    board = rows(state)
    best = next((r for r in board if r["rank"] == 1), None)
    return {"schema": state.get("schema"), "sweep": state["id"], "status": state.get("status"),
            "model": state["model"], "dataset": state["dataset"], "shape": state["shape"],
            "metric": state["metric"], "split_sizes": state.get("counts"), "budget_s": state.get("budget_s"),
            "spent_s": state.get("spent_s"), "notes": state.get("notes", []), "leaderboard": board,
            "best": best["job"] if best else None, "best_ref": best["ref"] if best else None,
            "final": state.get("final")}


def fmt_score(value, ci95) -> str:
    if value is None:
        return "–"
    if ci95 and ci95[0] is not None and ci95[1] is not None:
        return f"{100 * value:.1f} [{100 * ci95[0]:.1f}, {100 * ci95[1]:.1f}]"
    return f"{100 * value:.1f}"


def fmt_cost(cost: dict) -> str:
    parts = [f"{cost.get('wall_s') or 0:.0f} s"]
    if cost.get("peak_mem_mb"):
        parts.append(f"{cost['peak_mem_mb']:.0f} MiB")
    if cost.get("train_tokens"):
        parts.append(f"{cost['train_tokens'] / 1000:.0f}k tok")
    return ", ".join(parts)


def table_cells(row: dict) -> tuple[str, ...]:
    """The cells of one leaderboard row (the CLI table and the Sweep view share them)."""
    rung = f"{row['rung']}/{row['rungs']}" if row["rung"] else "–"
    status = STATUS_TEXT.get(row["status"], row["status"])
    return (str(row["rank"] or "–"), row["label"], fmt_score(row["value"], row["ci95"]), rung, status,
            fmt_cost(row["cost"]), f"job:{row['job']}" if row["job"] else "–")


HEADERS = ("#", "trial", "val metric (95% CI)", "rung", "status", "cost (wall, peak mem, tokens)", "job")


def final_lines(state: dict) -> list[str]:
    final = state.get("final") or {}
    if not final:
        return []
    if final.get("state") != "done":
        return [f"test evaluation: {final.get('state')}" + (f" ({final['error']})" if final.get("error") else "")]
    out = [f"test split ({state['metric']}, eval job {final['eval_job']}):"]
    for name, s in final["scores"].items():
        out.append(f"  {name:<10} {fmt_score(s['value'], s['ci95'])}  {s['ref']}")
    for c in final["comparisons"]:
        lo, hi = c["ci95"] or (None, None)
        ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None else ""
        star = " *" if c["significant"] else ""
        p = c["p_value"]
        p_text = "p<0.001" if p is not None and p < 0.001 else f"p={p:.3g}" if p is not None else "p=?"
        out.append(f"  best vs {c['other'].replace('_', '-')}: {100 * c['delta']:+.1f} pt{ci}{star} "
                   f"({c['test']}, {p_text})")
    out += [f"warning: {w}" for w in final.get("warnings", [])]
    return out


def render(state: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tuneterm sweep {state['id']}: {state['shape']}, ranked by validation "
                        f"{state['metric']}", show_lines=False)
    for h in HEADERS:
        table.add_column(h, overflow="fold")
    for row in rows(state):
        table.add_row(*table_cells(row))
    buf = io.StringIO()
    console = Console(file=buf, width=170, force_terminal=False, color_system=None)
    console.print(table)
    for note in state.get("notes", []):
        console.print(f"note: {note}")
    for row in rows(state):
        if row["note"] and row["status"] in ("failed", "stopped", "pruned"):
            console.print(f"{row['label']}: {row['note']}")
    for line in final_lines(state):
        console.print(line)
    console.print(f"spent {state.get('spent_s', 0):.0f} s of a {state.get('budget_s', 0):.0f} s budget "
                  "(plus the final test evaluation)")
    return buf.getvalue()
