"""Few-shot: deterministic by seed, "similar" picks the nearest, the fewshot: reference parses,
and chat accepts it on the tiny model."""

from __future__ import annotations

import json

import pytest

from tuneterm.core import fewshot, modelref
from tuneterm.core.errors import InputError

POOL = [
    [{"role": "system", "content": "Route."}, {"role": "user", "content": f"ticket {i} {topic}"},
     {"role": "assistant", "content": label}]
    for i, (topic, label) in enumerate([("refund card charge", "payments-ops"), ("parcel courier late", "logistics"),
                                        ("login password reset", "identity-team"), ("webhook api timeout", "platform-eng"),
                                        ("invoice double charge", "payments-ops"), ("warehouse shipment lost", "logistics")])
]


def test_seeded_selection_is_deterministic_and_seed_dependent():
    a = fewshot.select(POOL, 3, seed=7)
    assert a == fewshot.select(POOL, 3, seed=7)
    assert len(a) == 3 and all(s in POOL for s in a)
    assert any(fewshot.select(POOL, 3, seed=s) != a for s in range(1, 6))


def test_similar_picks_the_nearest_and_puts_it_last():
    shots = fewshot.select(POOL, 2, "my parcel shipment is lost in the warehouse", "similar")
    assert shots[-1] is POOL[5] and shots[0] is POOL[1]
    msgs = fewshot.build_messages("where is my parcel", shots)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"] == "Route." and msgs[-1]["content"] == "where is my parcel"


def test_reference_form_parses_and_rejects_bad_forms(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"messages": m}) for m in POOL) + "\n")
    ref = modelref.parse(f"fewshot:4:similar:{pool}@smollm2-135m-instruct")
    assert ref.kind == "fewshot" and ref.target == "smollm2-135m-instruct"
    spec = fewshot.parse_spec(f"fewshot:3:seed=5:{pool}@job:abc")
    assert (spec.k, spec.strategy, spec.seed, spec.pool, spec.base) == (3, "seed", 5, str(pool), "job:abc")
    for bad in ("fewshot:x:p@default", "fewshot:3:p", "fewshot:3@default"):
        with pytest.raises(InputError):
            modelref.parse(bad)
    msgs = fewshot.apply(spec, [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}])
    assert msgs[0] == {"role": "system", "content": "S"} and len(msgs) == 8 and msgs[-1]["content"] == "Q"


def test_chat_with_a_fewshot_reference_on_the_tiny_model(tiny_model_dir, tmp_path, cli):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"messages": m}) for m in POOL) + "\n")
    code, out, _ = cli("chat", f"fewshot:2:{pool}@{tiny_model_dir}", "refund please", "-n", "3", "--json")
    data = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and data["prompt_tokens"] > 30  # the shots are in the prompt
    code2, out2, _ = cli("chat", str(tiny_model_dir), "refund please", "-n", "3", "--json",
                         "--few-shot", "2", "--pool", str(pool))
    assert code2 == 0 and json.loads(out2.strip().splitlines()[-1])["prompt_tokens"] == data["prompt_tokens"]
