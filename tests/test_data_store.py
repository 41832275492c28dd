"""The workspace store and the `tuneterm data` commands, end to end on real files and real SQLite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tuneterm.core.datasets import store
from tuneterm.core.errors import DatasetError, NotFoundError, UsageError

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"
BROKEN = SAMPLES / "broken" / "broken.jsonl"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_import_samples_keeps_splits_and_is_idempotent(tmp_workspace):
    names = store.import_samples(SAMPLES)
    assert names == ["tickets", "extraction", "domain_qa", "general", "preferences"]
    assert store.import_samples(SAMPLES) == []
    tickets = store.get("tickets")
    assert tickets.splits == {"train": 300, "val": 60, "test": 80} and tickets.n_examples == 440
    assert tickets.meta["labels"] == {q: 110 for q in ("identity-team", "logistics", "payments-ops", "platform-eng")}
    train = store.resolve_path("tickets", "train")
    assert train == tmp_workspace.root / "datasets" / "tickets" / "train.jsonl"
    assert train.read_bytes() == (SAMPLES / "tickets" / "train.jsonl").read_bytes()  # canonical input stays as is
    assert store.resolve_path("tickets", "validation").name == "val.jsonl"
    assert store.resolve_path("tickets").name == "data.jsonl"
    assert store.get("preferences").meta["schema"] == "dpo"
    with pytest.raises(NotFoundError) as err:
        store.resolve_path("general", "test")
    assert "data split general" in err.value.hint
    assert store.resolve_path(str(BROKEN)) == BROKEN  # an existing file is itself
    with pytest.raises(NotFoundError):
        store.resolve_path("no-such-dataset")


def test_import_records_hash_and_provenance_and_never_touches_the_source(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("body,queue\nrefund me,payments-ops\nlogin broken,identity-team\n", encoding="utf-8")
    before = (_sha(src), src.stat().st_mtime_ns)
    rec = store.import_dataset(src, name="csvt", mapping={"text": "body", "label": "queue"})
    assert (_sha(src), src.stat().st_mtime_ns) == before
    data = rec.path / "data.jsonl"
    assert rec.content_hash == _sha(data) and rec.n_examples == 2 and rec.source_format == "csv:classification"
    meta = json.loads((rec.path / "meta.json").read_text())
    assert meta["source"]["files"][0]["sha256"] == before[0]
    assert meta["mapping"] == {"text": "body", "label": "queue"}
    assert [r.name for r in store.list_datasets()] == ["csvt"]
    with pytest.raises(UsageError):
        store.import_dataset(src, name="csvt")
    with pytest.raises(UsageError):
        store.import_dataset(src, name="../evil")


def test_errors_abort_import_without_leftovers_and_skip_invalid_keeps_rejects_byte_for_byte(tmp_workspace):
    with pytest.raises(DatasetError) as err:
        store.import_dataset(BROKEN, name="b")
    assert "--skip-invalid" in err.value.hint
    assert not store.exists("b") and list(tmp_workspace.datasets_dir.iterdir()) == []
    rec = store.import_dataset(BROKEN, name="b", skip_invalid=True)
    raw_lines = BROKEN.read_bytes().split(b"\n")
    problems = [json.loads(x) for x in (rec.path / "rejects.problems.jsonl").read_text().splitlines()]
    rejected_lines = [p["line"] for p in problems]
    assert (rec.path / "rejects.jsonl").read_bytes() == b"".join(raw_lines[n - 1] + b"\n" for n in rejected_lines)
    assert 4 in rejected_lines and 3 in rejected_lines  # the non-UTF-8 and the broken-JSON lines, untouched
    assert rec.n_rejected == len(rejected_lines) and rec.n_examples + rec.n_rejected == 31  # 32 lines - 1 blank
    assert all(json.loads(line) for line in (rec.path / "data.jsonl").read_text(encoding="utf-8").splitlines())


def test_csv_rejects_keep_the_header(tmp_path):
    src = tmp_path / "c.csv"
    src.write_text("text,label\nok one,a\nok two,b\nbad,\n", encoding="utf-8")
    rec = store.import_dataset(src, name="c", skip_invalid=True)
    assert rec.n_examples == 2 and (rec.path / "rejects.csv").read_text() == "text,label\nbad,\n"


def test_cli_import_ls_show_split_export_rm(cli, tmp_path):
    code, out, err = cli("data", "import", str(SAMPLES / "tickets"), "--name", "tk")
    assert code == 0 and "imported tk: 440 examples" in out, err
    code, out, _ = cli("data", "ls", "--json")
    assert code == 0 and json.loads(out)[0]["splits"] == {"train": 300, "val": 60, "test": 80}
    code, out, _ = cli("data", "show", "tk", "--n", "2")
    assert code == 0 and out.count("--- example") == 2 and "payments-ops (110)" in out
    code, out, _ = cli("data", "split", "tk", "--val", "0.1", "--test", "0.1", "--seed", "7", "--json")
    assert code == 0 and json.loads(out)["splits"] == {"train": 352, "val": 44, "test": 44}
    out_file = tmp_path / "tk.alpaca.jsonl"
    code, out, _ = cli("data", "export", "tk", "-o", str(out_file), "--to", "alpaca", "--split", "test")
    assert code == 0 and len(out_file.read_text().splitlines()) == 44
    assert set(json.loads(out_file.read_text().splitlines()[0])) == {"instruction", "input", "output", "system"}
    code, out, _ = cli("data", "convert", str(out_file), "--to", "openai", "-o", str(tmp_path / "back.jsonl"))
    assert code == 0 and "wrote 44 examples" in out
    code, out, _ = cli("data", "rm", "tk")
    assert code == 0 and not (tmp_path / "ws" / "datasets" / "tk").exists()
    code, _, err = cli("data", "show", "tk")
    assert code == 4 and "no dataset named 'tk'" in err and "Traceback" not in err


def test_cli_import_errors_and_convert_refuses_invalid_rows(cli, tmp_path):
    code, _, err = cli("data", "import", str(BROKEN))
    assert code == 3 and "line 3: invalid_json" in err and "Traceback" not in err
    code, out, _ = cli("data", "import", str(BROKEN), "--skip-invalid", "--json")
    assert code == 0 and json.loads(out)["n_rejected"] == 22
    code, _, err = cli("data", "convert", str(BROKEN), "--to", "sharegpt", "-o", str(tmp_path / "x.jsonl"))
    assert code == 3 and not (tmp_path / "x.jsonl").exists()
    code, out, _ = cli("data", "convert", str(BROKEN), "--to", "sharegpt", "-o", str(tmp_path / "x.jsonl"),
                       "--skip-invalid", "--json")
    result = json.loads(out)
    assert code == 0 and result["invalid_skipped"] == 22 and result["written"] + result["skipped"] == 9
    code, _, err = cli("data", "import", str(tmp_path), "--map", "nonsense")
    assert code == 2


def test_append_examples_updates_files_counts_and_hash():
    store.import_samples(SAMPLES)
    before = store.get("tickets")
    ex = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "new ticket"},
                       {"role": "assistant", "content": "logistics"}]}
    after = store.append_examples("tickets", [ex])
    assert after.splits["train"] == 301 and after.n_examples == 441
    assert after.content_hash == _sha(after.path / "data.jsonl") != before.content_hash
    assert json.loads(store.resolve_path("tickets", "train").read_text().splitlines()[-1]) == ex
    with pytest.raises(DatasetError):
        store.append_examples("tickets", [{"messages": [{"role": "user", "content": "no reply"}]}])
    assert store.get("tickets").n_examples == 441


def test_append_examples_creates_a_missing_dataset():
    ex = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    rec = store.append_examples("fresh", [ex])
    assert rec.n_examples == 1 and rec.splits == {} and store.resolve_path("fresh").read_text().count("\n") == 1
    assert store.append_examples("fresh", [ex]).n_examples == 2


def test_dataset_modules_import_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys\nimport tuneterm.core.datasets.store, tuneterm.core.datasets.stats, tuneterm.core.datasets.split\n"
            "import tuneterm.core.datasets.export, tuneterm.commands.data\n"
            "print([m for m in ('torch', 'transformers', 'datasets', 'peft', 'pyarrow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_convert_csv_with_forced_format_and_mapping(cli, tmp_path):
    src = tmp_path / "qa.txt"
    src.write_text("question\tanswer\nWhat is 2+2?\t4\nCapital of France?\tParis\n", encoding="utf-8")
    out = tmp_path / "qa.jsonl"
    code, text, err = cli("data", "convert", str(src), "--format", "tsv:prompt_completion", "--map", "prompt=question",
                          "--map", "completion=answer", "--to", "openai", "-o", str(out), "--json")
    assert code == 0, err
    assert json.loads(text)["source_format"] == "tsv:prompt_completion"
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[1]["messages"] == [{"role": "user", "content": "Capital of France?"},
                                   {"role": "assistant", "content": "Paris"}]
    code, _, err = cli("data", "convert", str(src), "--to", "yaml", "-o", str(out))
    assert code == 2 and "openai, alpaca, sharegpt" in err
