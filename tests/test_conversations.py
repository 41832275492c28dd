"""Conversations in the workspace DB: save, list, reopen, export, a turn into a dataset."""

from __future__ import annotations

import json

import pytest

from tuneterm.core import conversations as cv
from tuneterm.core.errors import InputError, NotFoundError


def _two_turns() -> cv.Conversation:
    conv = cv.Conversation(["base", "job:abc"], {"system": "Be brief.", "params": {"temperature": 0},
                                                 "columns": [{}, {"system": "Answer with a queue name."}]})
    t0 = conv.add_user("My card was charged twice")
    conv.set_answer(t0, 0, "I am sorry to hear that.", stats={"ttft_ms": 12.0, "completion_tokens": 6, "tokens_per_s": 30.0})
    conv.set_answer(t0, 1, "payments-ops")
    t1 = conv.add_user("And my login fails")
    conv.set_answer(t1, 1, "identity-team")
    conv.set_answer(t1, 0, "Try resetting your password.")
    return conv


def test_save_list_reopen_roundtrip():
    conv = _two_turns()
    cid = cv.save(conv)
    assert cid == conv.id
    again = cv.load(cid)
    assert again.models == ["base", "job:abc"] and again.title == "My card was charged twice"
    assert again.settings["columns"][1]["system"] == "Answer with a queue name."
    assert again.history(1) == [
        {"role": "system", "content": "Answer with a queue name."},
        {"role": "user", "content": "My card was charged twice"},
        {"role": "assistant", "content": "payments-ops"},
        {"role": "user", "content": "And my login fails"},
        {"role": "assistant", "content": "identity-team"},
    ]
    assert again.history(0)[0] == {"role": "system", "content": "Be brief."}
    assert again.answer(0, 0).stats["ttft_ms"] == 12.0 and again.answer(0, 0).model == "base"
    # update in place: a third turn, and the list shows it first with its turn count
    again.add_user("thanks")
    cv.save(again)
    other = cv.Conversation(["base"])
    other.add_user("older")
    cv.save(other)
    listed = {s.id: s for s in cv.list_conversations()}
    assert listed[cid].n_turns == 3 and listed[other.id].n_turns == 1
    cv.delete(other.id)
    with pytest.raises(NotFoundError):
        cv.load(other.id)


def test_swapping_an_answer_replaces_it():
    conv = _two_turns()
    conv.set_answer(0, 1, "platform-eng", model="job:xyz")
    answers = [m for m in conv.messages if m.turn == 0 and m.column == 1]
    assert len(answers) == 1 and answers[0].content == "platform-eng" and answers[0].model == "job:xyz"


def test_exports(tmp_path):
    conv = _two_turns()
    cv.save(conv)
    out = cv.export(cv.load(conv.id), tmp_path / "conv.jsonl")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2 and set(lines[0]) == {"messages"}
    assert [m["role"] for m in lines[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    md = cv.export(conv, tmp_path / "conv.md").read_text()
    assert md.startswith("# My card was charged twice")
    assert "## Turn 2" in md and "**job:abc**" in md and "identity-team" in md and "ttft 12 ms" in md
    with pytest.raises(InputError):
        cv.export(conv, tmp_path / "x.txt", fmt="html")


def test_turn_into_a_jsonl_file(tmp_path):
    conv = _two_turns()
    target = tmp_path / "fixes.jsonl"
    target.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}')
    cv.save_turn_to_dataset(conv, 1, 1, str(target))
    cv.save_turn_to_dataset(conv, 1, 0, str(target), edited="identity-team")
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 3
    assert rows[1]["messages"] == [
        {"role": "system", "content": "Answer with a queue name."},
        {"role": "user", "content": "My card was charged twice"},
        {"role": "assistant", "content": "payments-ops"},
        {"role": "user", "content": "And my login fails"},
        {"role": "assistant", "content": "identity-team"},
    ]
    assert rows[2]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert rows[2]["messages"][-1] == {"role": "assistant", "content": "identity-team"}
    with pytest.raises(InputError):
        cv.save_turn_to_dataset(conv, 1, 0, str(target), edited="  ")
    with pytest.raises(NotFoundError):
        cv.turn_example(cv.Conversation(["a"]), 0, 0)


def test_turn_into_a_workspace_dataset(tmp_path):
    from tuneterm.core.datasets import store
    conv = _two_turns()
    path = cv.save_turn_to_dataset(conv, 0, 1, "chat-fixes")  # a new dataset
    assert store.get("chat-fixes").n_examples == 1
    cv.save_turn_to_dataset(conv, 1, 1, "chat-fixes")
    rec = store.get("chat-fixes")
    assert rec.n_examples == 2
    rows = [json.loads(line) for line in store.resolve_path("chat-fixes").read_text().splitlines()]
    assert rows[-1]["messages"][-1] == {"role": "assistant", "content": "identity-team"}
    assert path.name.endswith(".jsonl")
    # a dataset with splits gets the example in its train split
    src = tmp_path / "split"
    src.mkdir()
    line = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    (src / "train.jsonl").write_text(line + "\n")
    (src / "val.jsonl").write_text(line.replace('"q"', '"v"') + "\n")
    store.import_dataset(src, name="tickets-mini")
    cv.save_turn_to_dataset(conv, 0, 1, "tickets-mini")
    rec = store.get("tickets-mini")
    assert rec.splits == {"train": 2, "val": 1}
    assert "payments-ops" in store.resolve_path("tickets-mini", split="train").read_text()
