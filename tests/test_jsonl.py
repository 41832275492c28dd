"""One JSONL reader (tuneterm.core.jsonl): a bad line names the file and the line, never a traceback,
for every reader built on it (eval data, few-shot pools, dataset splits)."""

from __future__ import annotations

import pytest

from tuneterm.core.errors import DatasetError, InputError
from tuneterm.core.jsonl import iter_jsonl, read_jsonl


def test_rows_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("bad, words", [('{"a": 1', "not valid JSON"), ("[1, 2]", "not a JSON object")])
def test_a_bad_line_names_file_and_line(tmp_path, bad, words):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n' + bad + "\n")
    with pytest.raises(DatasetError) as caught:
        read_jsonl(path, what="eval data")
    assert words in caught.value.title and "eval data" in caught.value.title
    assert ("file", str(path)) in caught.value.facts and ("line", "2") in caught.value.facts
    assert caught.value.exit_code == 3


def test_fewshot_pool_with_a_broken_line_is_an_input_error(tmp_path):
    from tuneterm.core.fewshot import load_pool

    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": \n')
    with pytest.raises(InputError) as caught:
        load_pool(str(pool))
    assert ("line", "2") in caught.value.facts


def test_a_dataset_split_stops_at_a_damaged_line(tmp_path):
    from tuneterm.core.datasets.split import split_file

    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": []}\nnot json\n')
    with pytest.raises(DatasetError) as caught:
        split_file(data, tmp_path, 0.5, 0.0, 0)
    assert ("line", "2") in caught.value.facts
