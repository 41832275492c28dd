"""Cost estimates across providers: one --compare for all, dated and marked prices, exact or banded tokens."""

from __future__ import annotations

import json

import pytest

from tuneterm.core import cost
from tuneterm.core.errors import ConfigError
from tuneterm.core.prices import PROVIDERS, load_prices
from tuneterm.core.providers import get
from tuneterm.core.providers.tokens import counter
from tuneterm.core.resources import sample_data_dir

TICKETS = sample_data_dir() / "tickets" / "train.jsonl"


@pytest.fixture(autouse=True)
def _pinned_today(monkeypatch):
    monkeypatch.setenv("TUNETERM_TODAY", "2026-12-05")


def test_compare_on_the_sample_tickets_lists_every_provider(cli):
    code, out, err = cli("cost", str(TICKETS), "--compare", "--json")
    assert code == 0, err
    rows = json.loads(out)["compare"]
    assert {r["provider"] for r in rows} == set(PROVIDERS)
    for r in rows:
        assert r["prices_as_of"] and r["prices_source"]
        assert r["tokens_exact"] or r["token_band"] > 0
        if r["price_status"] != "verified":
            assert r["provider"] != "openai" or r["estimated_cost_usd"] is None
    code, text, _ = cli("cost", str(TICKETS), "--compare")
    for name in PROVIDERS:
        assert f"\n{name} " in text
    assert "unknown" in text and "±10%" in text and "no new jobs from 2027-01-06" in text
    assert "until 2027-04-14*" in text  # Azure gpt-4.1 training, existing customers


def test_unverified_and_unknown_prices_never_print_as_confident_numbers(cli):
    code, out, _ = cli("cost", str(TICKETS), "--provider", "fireworks")
    assert code == 0 and "(unverified price)" in out and "(unverified)" in out
    code, out, _ = cli("cost", str(TICKETS), "--provider", "together")
    assert code == 0 and "cost         unknown" in out and "≈ $" not in out
    code, out, _ = cli("cost", str(TICKETS), "--provider", "mistral", "--json")
    r = json.loads(out)
    assert r["estimated_cost_usd"] is None and r["minimum_total_usd"] == 6.0  # $4 minimum + $2 first month
    assert r["price_status"] == "unknown"


def test_minimum_fee_is_the_floor_of_a_known_price(tmp_path):
    prices = tmp_path / "mistral.toml"
    prices.write_text('[[model]]\nid = "open-mistral-7b"\ntraining = 1.0\nverified = true\n'
                      'tokenizer = "mistral:mistral_instruct_tokenizer_240323.model.v3"\n', encoding="utf-8")
    r = cost.estimate(TICKETS, "open-mistral-7b", provider="mistral", prices=prices)
    assert r["billed_tokens"] < 4e6 and r["estimated_cost_usd"] == 4.0 and r["minimum_fee_applied"]
    assert r["total_usd"] == 6.0


def test_together_bills_validation_tokens_per_eval():
    val = sample_data_dir() / "tickets" / "val.jsonl"
    table = load_prices(None, "together")
    plain = cost.estimate(TICKETS, None, 2, val, provider="together", prices=table)
    with_evals = cost.estimate(TICKETS, None, 2, val, provider="together", prices=table, n_evals=3)
    assert with_evals["billed_tokens"] - plain["billed_tokens"] == 3 * with_evals["validation"]["total_tokens"]


def test_llama_and_mistral_counts_are_their_own_tokenizers():
    from llama_models.datatypes import RawMessage
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer

    example = json.loads(TICKETS.read_text(encoding="utf-8").splitlines()[0])
    fmt = ChatFormat(Tokenizer.get_instance())
    msgs = [RawMessage(role=m["role"], content=m["content"]) for m in example["messages"]]
    whole = fmt.encode_dialog_prompt(msgs).tokens  # adds an assistant header to prime a reply
    assert counter("llama3").example(example) == len(whole) - len(fmt.encode_dialog_prompt([]).tokens) + 1

    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    tekken = counter("mistral:tekken_240911.json")
    expected = tekken.mt.encode_chat_completion(ChatCompletionRequest.from_openai(messages=example["messages"]))
    assert tekken.example(example) == len(expected.tokens)


def test_rows_without_a_tokenizer_here_are_banded_estimates():
    r = cost.estimate(TICKETS, "Qwen-32B", provider="azure")
    assert not r["tokens_exact"] and r["token_band"] == 0.10
    assert any("estimate" in n for n in r["notes"])


def test_savings_for_another_provider_needs_its_inference_prices(tmp_path):
    with pytest.raises(ConfigError) as err:
        cost.savings(TICKETS, None, 1000, 3, provider="fireworks")
    assert "fireworks price table" in err.value.title
    own = tmp_path / "fw.toml"
    own.write_text('[[model]]\nid = "accounts/fireworks/models/llama-v3p1-8b-instruct"\ntokenizer = "llama3"\n'
                   'training = 0.5\nbase_input = 0.2\nbase_output = 0.2\nft_input = 0.2\nft_output = 0.2\n'
                   'as_of = "2026-12-05"\nsource = "my contract"\n', encoding="utf-8")
    s = cost.savings(TICKETS, None, 100_000, 3, prices=own, provider="fireworks")
    assert s["provider"] == "fireworks" and s["break_even_requests"] and s["savings_per_request_usd"] > 0


def test_every_provider_declares_what_the_issue_asks():
    for name in PROVIDERS:
        p = get(name)
        assert p.key_env.endswith("_API_KEY") and p.billing and p.token_accounting and p.data_format
        table = p.table()
        assert table.models and table.as_of and table.source
        assert table.get(p.default_model)


def test_the_estimate_reports_the_providers_data_rules(tmp_path):
    rows = [json.loads(line) for line in TICKETS.read_text(encoding="utf-8").splitlines()[:4]]
    rows[1]["messages"] = rows[1]["messages"][1:][::-1]  # assistant before user
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]), encoding="utf-8")
    together = cost.estimate(path, None, provider="together")
    assert together["data_problems"][0]["line"] == 2 and "alternating" in together["data_problems"][0]["problem"]
    fireworks = cost.estimate(path, None, provider="fireworks")
    assert any("at least 3" in p["problem"] for p in fireworks["data_problems"])
    assert any(w.startswith("1 problem(s) under the data rules of Fireworks") for w in fireworks["warnings"])
