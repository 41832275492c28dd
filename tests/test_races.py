"""Several processes at once on one workspace, as a team on a shared box starts them: the embedded
model's conversion into an empty models folder, and `data import` of one name. Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_LOAD = """
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
from tuneterm.workers.loading import local_path
path, _ = local_path("smollm2-135m-instruct")
inode = path.stat().st_ino  # the folder this process was given; a later rename would change it
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
print(path, inode, len(tok), sum(p.numel() for p in model.parameters()), float(model.model.norm.weight.sum()))
"""


def test_processes_started_together_with_an_empty_models_folder_all_get_a_whole_model(tmp_path):
    models = tmp_path / "models"
    env = dict(os.environ, TUNETERM_MODELS_DIR=str(models), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _LOAD], env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err[-2000:]
    lines = {out.strip() for out, _ in results}
    assert len(lines) == 1  # the same folder, converted once, tokenizer and weights for all three
    folder, inode, vocab, params, _ = lines.pop().split()
    assert int(vocab) > 40000 and int(params) > 100_000_000
    assert Path(folder).stat().st_ino == int(inode)  # nobody replaced it after a process was given it
    assert [p.name for p in models.iterdir() if p.is_dir()] == [Path(folder).name]  # no temporary folder left


def test_four_imports_of_one_name_at_once_end_in_one_dataset_and_clean_errors(tmp_path):
    rows = (REPO / "sample_data" / "tickets" / "train.jsonl").read_text().splitlines()
    src = tmp_path / "tix.jsonl"
    src.write_text("\n".join(rows * 20) + "\n")  # the build takes long enough for all four to overlap
    cmd = [sys.executable, "-m", "tuneterm.cli", "data", "import", str(src), "--name", "tix"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert sorted(code for code, _, _ in results) == [0, 2, 2, 2], results
    for code, out, err in results:
        assert "Traceback" not in err and "OSError" not in err
        if code:
            assert "already exists" in err, err
    from tuneterm.core.datasets import store

    assert store.get("tix").n_examples == len(rows) * 20
    datasets = Path(os.environ["TUNETERM_HOME"]) / "datasets"
    assert sorted(p.name for p in datasets.iterdir() if not p.name.startswith(".")) == ["tix"]
    assert not [p for p in datasets.iterdir() if p.name.startswith(".import-")]
