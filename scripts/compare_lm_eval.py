"""Check tuneterm's log-likelihood multiple-choice scoring against lm-evaluation-harness.

Runs evals/general_mc (48 items) on the embedded model twice, through lm-eval's ``hf`` model
with an equivalent local task YAML (written to a temporary folder) and through tuneterm's
runner, and compares the count of correct items, the per-item predictions and the summed
log-likelihoods. Offline; lm-eval is NOT a tuneterm dependency:

    .venv/bin/pip install lm-eval
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python scripts/compare_lm_eval.py [--limit N]

Prints one JSON line; exit code 0 when the correct counts are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(key, "1")

TASK_YAML = """task: tuneterm_general_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
"""


def run_lm_eval(model_dir: Path, items: Path, limit: int | None, batch_size: int) -> dict[int, dict]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tuneterm_general_mc.yaml").write_text(TASK_YAML.format(items=items))
        results = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["tuneterm_general_mc"],
            task_manager=TaskManager(include_path=tmp), batch_size=batch_size, device="cpu",
            log_samples=True, limit=limit, num_fewshot=0,
        )
    out = {}
    for s in results["samples"]["tuneterm_general_mc"]:
        lls = [float(r[0]) for r in s["filtered_resps"]]
        out[int(s["doc_id"])] = {"acc": float(s["acc"]), "logprobs": lls}
    return out


def run_tuneterm(limit: int | None, batch_size: int) -> list[dict]:
    from tuneterm.core.evals.spec import load_task
    from tuneterm.core.evals.variants import parse_variants
    from tuneterm.workers.evals.runner import RunOptions, collect

    spec = load_task(REPO / "evals" / "general_mc" / "general_mc.yaml")
    opts = RunOptions(out_dir=None, limit=limit, batch_size=batch_size, use_cache=False, progress=False)
    outcomes, _ = collect([spec], parse_variants(["smollm2-135m-instruct"]), opts)
    out = outcomes[spec.name]["smollm2-135m-instruct"]
    rows = []
    for item, rec in zip(out.items, out.records):
        lps = rec["logprobs"]
        pred = max(range(len(lps)), key=lambda k: (lps[k], -k))
        rows.append({"id": item.id, "acc": float(pred == item.gold), "logprobs": lps})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    from tuneterm.workers.loading import local_path

    model_dir = local_path("smollm2-135m-instruct")[0]
    items = REPO / "evals" / "general_mc" / "items.jsonl"
    ours = run_tuneterm(args.limit, args.batch_size)
    theirs = run_lm_eval(model_dir, items, args.limit, args.batch_size)
    n = len(ours)
    disagree = [ours[i]["id"] for i in range(n) if ours[i]["acc"] != theirs[i]["acc"]]
    max_diff = max(abs(a - b) for i in range(n) for a, b in zip(ours[i]["logprobs"], theirs[i]["logprobs"]))
    result = {
        "items": n,
        "tuneterm_correct": int(sum(r["acc"] for r in ours)),
        "lm_eval_correct": int(sum(theirs[i]["acc"] for i in range(n))),
        "per_item_disagreements": disagree,
        "max_abs_loglik_diff": round(max_diff, 6),
    }
    result["equal"] = result["tuneterm_correct"] == result["lm_eval_correct"] and not disagree
    print(json.dumps(result))
    return 0 if result["equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
