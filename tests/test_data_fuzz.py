"""Fuzz: random bytes and random JSON lines only ever produce reports, never an unhandled exception."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneterm.core.datasets import export, formats, stats, store
from tuneterm.core.datasets.validate import INTERNAL, validate_file
from tuneterm.core.errors import TunetermError

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

_text = st.text(max_size=20) | st.sampled_from(["\ud800", "<|endoftext|>", "", " ", "{", "[INST]"])
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text
_json = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.sampled_from(["messages", "role", "content", "weight", "tool_calls", "tools", "input", "preferred_output",
                     "non_preferred_completion", "conversations", "from", "value", "instruction", "output",
                     "prompt", "completion", "text", "label", "fields", "id", "function", "arguments"])
    | st.text(max_size=8), kids, max_size=5), max_leaves=25)
_roles = st.sampled_from(["system", "user", "assistant", "tool", "bot", "developer", 3]) | _json
_message = st.fixed_dictionaries({"role": _roles}, optional={"content": _scalars | st.lists(_json, max_size=2),
                                                           "weight": _scalars, "tool_calls": _json,
                                                           "tool_call_id": _scalars})
_chatish = st.fixed_dictionaries({"messages": st.lists(_message | _json, max_size=5)}, optional={"tools": _json})


def _check(path, tmp_path) -> None:
    try:
        report = validate_file(path, model="gpt-4o-mini")
    except TunetermError:  # "cannot tell the format" is a report too, never a traceback
        pass
    else:
        assert sum(report.counts.values()) >= len(report.problems)
        assert all(p.kind and p.severity in ("error", "warning") and p.hint for p in report.problems)
        assert not any(INTERNAL in p.message for p in report.problems)  # no rule was caught off guard
    try:
        list(formats.iter_examples(path))
        stats.stats_file(path, model="gpt-4o-mini")
        rec = store.import_dataset(path, name="fz", skip_invalid=True, replace=True)
    except TunetermError:
        return
    for line in (rec.path / "data.jsonl").read_bytes().splitlines():
        json.loads(line.decode("utf-8"))  # what was stored reads back as strict UTF-8 JSON
    export.export_examples(store.iter_dataset("fz"), tmp_path / "out.jsonl", "sharegpt")


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes(tmp_path_factory, data):
    tmp_path = tmp_path_factory.mktemp("fz")
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    _check(path, tmp_path)


@FUZZ
@given(rows=st.lists(_json | _chatish, min_size=1, max_size=6))
def test_random_json_lines(tmp_path_factory, rows):
    tmp_path = tmp_path_factory.mktemp("fz")
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    _check(path, tmp_path)


@FUZZ
@given(text=st.text(max_size=300))
def test_random_csv(tmp_path_factory, text):
    tmp_path = tmp_path_factory.mktemp("fz")
    path = tmp_path / "f.csv"
    path.write_text("text,label\n" + text, encoding="utf-8", errors="surrogatepass")
    _check(path, tmp_path)
