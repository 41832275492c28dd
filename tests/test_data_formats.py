"""Format detection and conversion to canonical chat: every supported input, real files."""

from __future__ import annotations

import json

import pytest

from tuneterm.core.datasets import export, formats
from tuneterm.core.errors import DatasetError, NotFoundError


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def _records(path, **kw):
    return list(formats.iter_records(path, **kw))


def test_chat_jsonl_with_weight_tools_and_tool_calls_passes_through(tmp_path):
    ex = {
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": "order 5?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "lookup", "arguments": "{\"id\": 5}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"state\": \"shipped\"}"},
            {"role": "assistant", "content": "draft", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "It shipped.", "weight": 1},
        ],
    }
    p = _write(tmp_path / "c.jsonl", json.dumps(ex) + "\n")
    assert formats.detect(p) == formats.Format("jsonl", "chat")
    (rec,) = _records(p)
    assert rec.ok and rec.example == ex and rec.schema == "chat"


def test_csv_with_column_mapping_becomes_classification_chat_and_keeps_raw_rows(tmp_path):
    p = _write(tmp_path / "t.csv", 'id,body,queue\n1,"charged twice",payments-ops\n'
                                   '2,"API 500, ""urgent""\nsecond line",platform-eng\n3,"too",many,cells\n')
    mapping = {"text": "body", "label": "queue"}
    assert formats.detect(p, mapping=mapping) == formats.Format("csv", "classification")
    recs = _records(p, mapping=mapping)
    assert [r.line for r in recs] == [2, 3, 5]
    first = recs[0].example["messages"]
    assert "payments-ops, platform-eng" in first[0]["content"]  # the system prompt lists the labels
    assert first[1:] == [{"role": "user", "content": "charged twice"}, {"role": "assistant", "content": "payments-ops"}]
    assert recs[1].example["messages"][1]["content"] == 'API 500, "urgent"\nsecond line'
    assert recs[1].raw == b'2,"API 500, ""urgent""\nsecond line",platform-eng'  # multi-line row, byte for byte
    assert not recs[2].ok and recs[2].problems[0].kind == "format_error" and recs[2].unit == "row"


def test_tsv_without_mapping(tmp_path):
    p = _write(tmp_path / "c.tsv", "text\tlabel\nhello\tgreet\nbye\tfarewell\n")
    recs = _records(p)
    assert formats.detect(p).container == "tsv"
    assert [r.example["messages"][2]["content"] for r in recs] == ["greet", "farewell"]


def test_alpaca_json_array_with_input_and_history(tmp_path):
    rows = [{"instruction": "Add", "input": "2 and 3", "output": "5", "system": "math"},
            {"instruction": "Hi", "output": "Hello", "history": [["a", "b"]]}]
    p = _write(tmp_path / "a.json", json.dumps(rows))
    assert formats.detect(p) == formats.Format("json", "alpaca")
    a, b = (r.example["messages"] for r in _records(p))
    assert a == [{"role": "system", "content": "math"}, {"role": "user", "content": "Add\n\n2 and 3"},
                 {"role": "assistant", "content": "5"}]
    assert [m["content"] for m in b] == ["a", "b", "Hi", "Hello"]


def test_sharegpt_prompt_completion_extraction(tmp_path):
    sg = _write(tmp_path / "s.jsonl", json.dumps({"system": "be nice", "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}) + "\n")
    assert [m["role"] for m in _records(sg)[0].example["messages"]] == ["system", "user", "assistant"]
    pc = _write(tmp_path / "pc.jsonl", '{"prompt": "2+2=", "completion": " 4"}\n')
    assert _records(pc)[0].example["messages"][1] == {"role": "assistant", "content": " 4"}  # never stripped
    ex = _write(tmp_path / "e.jsonl", '{"text": "Ann: 3 pens", "fields": {"name": "Ann", "qty": 3}}\n'
                                      '{"text": "Bo", "fields": {"name": "Bo", "city": "Oslo"}}\n')
    assert formats.detect(ex).schema == "extraction"
    recs = _records(ex)
    assert "name, qty, city" in recs[0].example["messages"][0]["content"]
    assert json.loads(recs[1].example["messages"][2]["content"]) == {"name": "Bo", "qty": None, "city": "Oslo"}


def test_dpo_both_spellings_and_trl_style(tmp_path):
    rows = [
        {"input": {"messages": [{"role": "user", "content": "q"}]},
         "preferred_completion": [{"role": "assistant", "content": "good"}],
         "non_preferred_completion": [{"role": "assistant", "content": "bad"}]},
        {"prompt": "q2", "chosen": "yes", "rejected": "no"},
    ]
    p = _write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    a, b = _records(p)
    assert a.example["preferred_output"] == [{"role": "assistant", "content": "good"}]
    assert "preferred_completion" not in a.example
    assert [x.kind for x in a.problems] == ["preference_completion_spelling"] * 2
    assert b.example == {"input": {"messages": [{"role": "user", "content": "q2"}]},
                         "preferred_output": [{"role": "assistant", "content": "yes"}],
                         "non_preferred_output": [{"role": "assistant", "content": "no"}]}


def test_parquet_and_arrow(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"instruction": ["a", "b"], "output": ["x", "y"]})
    pq.write_table(table, tmp_path / "d.parquet")
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    for name, container in (("d.parquet", "parquet"), ("d.arrow", "arrow")):
        assert formats.detect(tmp_path / name) == formats.Format(container, "alpaca")
        assert [e["messages"][1]["content"] for e in formats.iter_examples(tmp_path / name)] == ["x", "y"]


def test_hf_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"prompt": ["q1", "q2"], "completion": ["a1", "a2"]}).save_to_disk(str(tmp_path / "hf"))
    assert formats.detect(tmp_path / "hf") == formats.Format("hf", "prompt_completion")
    assert len(list(formats.iter_examples(tmp_path / "hf"))) == 2


def test_forced_format_and_unknown_format(tmp_path):
    p = _write(tmp_path / "x.jsonl", '{"question": "q", "answer": "a"}\n')
    with pytest.raises(DatasetError) as err:
        formats.detect(p)
    assert "question" in dict(err.value.facts)["keys seen"]
    mapped = list(formats.iter_examples(p, fmt="prompt_completion", mapping={"prompt": "question", "completion": "answer"}))
    assert mapped[0]["messages"][0]["content"] == "q"
    assert formats.parse_format("tsv:classification") == ("tsv", "classification")
    with pytest.raises(DatasetError):
        formats.parse_format("yaml")
    with pytest.raises(NotFoundError):
        formats.detect(tmp_path / "missing.jsonl")


def test_export_alpaca_and_sharegpt_round_trip(tmp_path):
    examples = [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                      {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
                      {"role": "assistant", "content": "a2"}]},
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "1"}, {"role": "assistant", "content": "done"}]},
    ]
    for to in ("alpaca", "sharegpt"):
        res = export.export_examples(examples, tmp_path / f"{to}.jsonl", to)
        assert (res.written, res.skipped, res.reasons) == (1, 1, {"tool calls": 1})
        back = list(formats.iter_examples(tmp_path / f"{to}.jsonl"))
        assert back == examples[:1]  # the conversion loses nothing it writes
    res = export.export_examples(examples, tmp_path / "o.jsonl", "openai")
    assert res.written == 2 and list(formats.iter_examples(tmp_path / "o.jsonl")) == examples


def test_hf_dataset_dict_keeps_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    from tuneterm.core.datasets import store

    rows = {"instruction": ["a", "b", "c"], "output": ["x", "y", "z"]}
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                               "validation": datasets.Dataset.from_dict({"instruction": ["d"], "output": ["w"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    rec = store.import_dataset(tmp_path / "dd", name="dd")
    assert rec.splits == {"train": 3, "val": 1} and rec.source_format == "hf:alpaca"


def test_export_refuses_when_nothing_fits(tmp_path):
    pair = {"input": {"messages": [{"role": "user", "content": "q"}]},
            "preferred_output": [{"role": "assistant", "content": "a"}],
            "non_preferred_output": [{"role": "assistant", "content": "b"}]}
    out = tmp_path / "x.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(DatasetError):
        export.export_examples([pair], out, "alpaca")
    assert out.read_text() == "keep me\n" and [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]
