"""sample_data/ is exactly what scripts/make_sample_data.py writes, and it meets the shared contract."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"
QUEUES = {"payments-ops", "platform-eng", "identity-team", "logistics"}


def test_generator_reproduces_the_committed_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(SAMPLES) for p in SAMPLES.rglob("*") if p.is_file() and p.name != "README.md")
    assert generated == committed
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (SAMPLES / rel).read_bytes(), rel
    assert sum((SAMPLES / rel).stat().st_size for rel in committed) < 1_000_000


def _rows(rel: str) -> list[dict]:
    return [json.loads(x) for x in (SAMPLES / rel).read_text(encoding="utf-8").splitlines()]


def test_tickets_follow_the_contract_and_never_leak_between_splits():
    sizes = {"train": 300, "val": 60, "test": 80}
    texts: dict[str, set[str]] = {}
    for split, n in sizes.items():
        rows = _rows(f"tickets/{split}.jsonl")
        assert len(rows) == n
        for r in rows:
            system, user, assistant = r["messages"]
            assert system["role"] == "system" and all(q in system["content"] for q in QUEUES)
            assert user["role"] == "user" and assistant["role"] == "assistant" and assistant["content"] in QUEUES
        assert set(Counter(r["messages"][2]["content"] for r in rows).values()) == {n // 4}  # balanced
        texts[split] = {r["messages"][1]["content"] for r in rows}
    pool = {r["messages"][1]["content"] for r in _rows("fewshot/pool.jsonl")}
    groups = list(texts.values()) + [pool]
    assert all(not (a & b) for i, a in enumerate(groups) for b in groups[i + 1:])


def test_other_samples_have_their_shapes():
    for r in _rows("extraction/test.jsonl"):
        obj = json.loads(r["messages"][2]["content"])
        assert list(obj) == ["customer_name", "order_id", "product", "quantity", "delivery_city"]
    for r in _rows("preferences/train.jsonl"):
        assert set(r) == {"input", "preferred_output", "non_preferred_output"}
        assert r["preferred_output"][0]["content"] in QUEUES
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    assert list(manifest["datasets"]) == ["tickets", "extraction", "domain_qa", "general", "preferences"]
    for entry in manifest["datasets"].values():
        assert all((SAMPLES / rel).is_file() for rel in entry["splits"].values())
