"""Cost estimates: epochs heuristic, billing caps, the reference's checks, prices, shutdowns, CLI."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from tuneterm.core import cost
from tuneterm.core.errors import ConfigError
from tuneterm.core.openai_tokens import count_example_tokens
from tuneterm.core.prices import load_prices

REPO = Path(__file__).resolve().parents[1]
TODAY = dt.date(2026, 11, 27)


@pytest.fixture(autouse=True)
def _pinned_today(monkeypatch):
    monkeypatch.setenv("TUNETERM_TODAY", TODAY.isoformat())


def _write(path: Path, examples: list) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    return path


def _ticket(i: int, extra: str = "") -> dict:
    return {"messages": [
        {"role": "system", "content": "Route the ticket to one of: payments-ops, platform-eng, identity-team, logistics."},
        {"role": "user", "content": f"Ticket {i}: my card was charged twice for order {1000 + i}. {extra}"},
        {"role": "assistant", "content": "payments-ops"},
    ]}


@pytest.mark.parametrize("n,epochs", [(1, 25), (4, 25), (5, 20), (10, 10), (20, 5), (33, 3), (100, 3),
                                      (8333, 3), (8334, 2), (12500, 2), (12501, 1), (100000, 1)])
def test_auto_epochs_table(n, epochs):
    assert cost.auto_epochs(n) == epochs


def _stats(per_example: list[int], limits=()) -> cost.TokenStats:
    st = cost.TokenStats(limits=tuple(limits))
    for t in per_example:
        st.add(t)
    return st


def test_cookbook_toy_file_figure():
    # 5 examples totalling 4,306 tokens x 20 epochs = 86,120 tokens = ~$0.26 at $3/M.
    st = _stats([900, 850, 880, 826, 850], limits=(16_385,))
    row = load_prices().get("gpt-4o-mini")
    epochs, source = cost.resolve_epochs("auto", st.n)
    bill = cost.billing(st, row, epochs)
    assert (epochs, source) == (20, "auto")
    assert bill["billed_tokens"] == 86_120
    assert round(bill["estimated_cost_usd"], 2) == 0.26
    with pytest.raises(ValueError):  # a limit the stats were not folded with is never guessed
        cost.billing(_stats([5000]), load_prices().get("babbage-002"), 1)


def test_real_gpt4o_mini_job_figure():
    # 100 examples, auto -> 3 epochs; trained_tokens 379,446 (126,482 per epoch) = $1.14.
    st = _stats([1264] * 18 + [1265] * 82)
    assert st.total == 126_482
    row = load_prices().get("gpt-4o-mini-2024-07-18")
    bill = cost.billing(st, row, cost.auto_epochs(st.n))
    assert bill["billed_tokens"] == 379_446
    assert round(bill["estimated_cost_usd"], 2) == 1.14
    lo, hi = bill["estimated_cost_range_usd"]
    assert lo < bill["estimated_cost_usd"] < hi


def test_estimate_counts_every_example_and_reports_validation_unbilled(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_ticket(i) for i in range(30)])
    val = _write(tmp_path / "val.jsonl", [_ticket(i) for i in range(100, 110)])
    r = cost.estimate(train, "gpt-4o-mini", "auto", validation=val)
    expected = [count_example_tokens(_ticket(i), "gpt-4o-mini") for i in range(30)]
    assert r["n_examples"] == 30 and r["total_tokens"] == sum(expected)
    assert (r["min_tokens"], r["max_tokens"]) == (min(expected), max(expected))
    assert r["n_epochs"] == 3 and r["billed_tokens"] == 3 * sum(expected)
    assert r["validation"]["n_examples"] == 10 and r["validation"]["billed"] is False
    assert r["validation"]["total_tokens"] > 0
    assert r["estimated_cost_usd"] == pytest.approx(r["billed_tokens"] * 3.0 / 1e6)
    assert r["encoding"] == "o200k_base" and r["prices_as_of"]


def test_examples_over_the_limit_are_billed_at_the_cap(tmp_path):
    long = _ticket(0, extra="refund " * 6000)
    data = _write(tmp_path / "d.jsonl", [long] + [_ticket(i) for i in range(1, 12)])
    r = cost.estimate(data, "babbage-002", epochs=2)
    n_long = count_example_tokens(long, "babbage-002")
    assert n_long > 4096
    assert r["n_over_limit"] == 1 and r["max_example_tokens"] == 4096
    assert r["billed_tokens"] == 2 * (r["total_tokens"] - n_long + 4096)
    assert any("truncated" in w for w in r["warnings"])
    # the same file under gpt-4o-mini's 65,536 limit is billed in full
    r2 = cost.estimate(data, "gpt-4o-mini", epochs=2)
    assert r2["n_over_limit"] == 0 and r2["billed_tokens"] == 2 * r2["total_tokens"]


def test_compare_covers_every_fine_tunable_model(tmp_path):
    data = _write(tmp_path / "d.jsonl", [_ticket(i) for i in range(12)])
    r = cost.estimate(data, "gpt-4.1-mini", compare=True)
    models = {row["model"] for row in r["compare"]}
    assert {"gpt-4.1-2025-04-14", "gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125", "davinci-002", "babbage-002"} <= models
    by_model = {row["model"]: row for row in r["compare"]}
    assert by_model["babbage-002"]["encoding"] == "cl100k_base"
    assert by_model["gpt-4.1-2025-04-14"]["estimated_cost_usd"] == pytest.approx(
        5 * by_model["gpt-4.1-mini-2025-04-14"]["estimated_cost_usd"])
    assert by_model["gpt-4-0613"]["estimated_cost_usd"] is None  # never priced


def test_shutdown_warnings_and_no_new_jobs(tmp_path):
    data = _write(tmp_path / "d.jsonl", [_ticket(i) for i in range(12)])
    nano = cost.estimate(data, "gpt-4.1-nano")
    assert nano["shut_down"] and nano["new_jobs_blocked"]
    assert any("shut down on 2026-10-23" in w for w in nano["warnings"])
    mini = cost.estimate(data, "gpt-4o-mini")
    assert not mini["new_jobs_blocked"] and mini["shutdown_date"] == "2027-01-14"
    assert any("2027-01-06" in w for w in mini["warnings"])
    later = cost.estimate(data, "gpt-4o-mini", on=dt.date(2027, 1, 7))
    assert later["new_jobs_blocked"] and not later["shut_down"]
    assert any("no new fine-tuning jobs since 2027-01-06" in w for w in later["warnings"])


def test_price_override_file_and_setting(tmp_path, monkeypatch):
    data = _write(tmp_path / "d.jsonl", [_ticket(i) for i in range(12)])
    override = tmp_path / "prices.toml"
    override.write_text('as_of = "2026-11-01"\n[[model]]\nid = "gpt-4o-mini-2024-07-18"\n'
                        'aliases = ["gpt-4o-mini"]\ntraining = 10.0\nmax_example_tokens = 65536\n'
                        'as_of = "2026-11-01"\nsource = "my contract"\n', encoding="utf-8")
    r = cost.estimate(data, "gpt-4o-mini", prices=override)
    assert r["price_per_1m_usd"] == 10.0 and r["prices_source"] == "my contract"
    assert r["prices_as_of"] == "2026-11-01"
    assert load_prices(override).get("gpt-4.1").training == 25.0  # other rows stay
    monkeypatch.setenv("TUNETERM_PRICES_FILE", str(override))
    from tuneterm.core.settings import get_settings

    get_settings(fresh=True)
    assert cost.estimate(data, "gpt-4o-mini")["price_per_1m_usd"] == 10.0
    bad = tmp_path / "bad.toml"
    bad.write_text('[[model]]\nid = "x"\ntraining = "cheap"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_prices(bad)
    assert "training" in err.value.render()


def test_shipped_table_rows_all_have_dates_and_sources():
    table = load_prices()
    assert table.files == ["tuneterm/data/openai_prices.toml"]
    for row in table.models:
        assert row.as_of and row.source, row.id
    assert table.no_new_jobs_after == dt.date(2027, 1, 6)


def test_savings_break_even(tmp_path):
    data = _write(tmp_path / "d.jsonl", [_ticket(i) for i in range(40)])
    s = cost.savings(data, "gpt-4.1-mini", requests=1_000_000, few_shot=5)
    p = s["prices"]
    base = (s["mean_prompt_tokens_few_shot"] * p["base_input"] + s["mean_output_tokens"] * p["base_output"]) / 1e6
    ft = (s["mean_prompt_tokens_zero_shot"] * p["ft_input"] + s["mean_output_tokens"] * p["ft_output"]) / 1e6
    assert s["savings_per_request_usd"] == pytest.approx(base - ft, rel=1e-3)
    assert s["savings_per_request_usd"] > 0
    assert s["break_even_requests"] == math.ceil(s["training_cost_usd"] / s["savings_per_request_usd"])
    assert s["prompt_tokens_saved_per_request"] > 5 * 20
    zero = cost.savings(data, "gpt-4o-mini", requests=10, few_shot=0)
    assert zero["savings_per_request_usd"] < 0 and zero["break_even_requests"] is None


def test_invalid_json_lines_are_skipped_and_reported(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(_ticket(i)) + "\n" for i in range(11)) + "{not json\n", encoding="utf-8")
    r = cost.estimate(path, "gpt-4o-mini")
    assert r["n_examples"] == 11 and r["n_invalid_lines"] == 1
    assert any("line" in w and "12" in w for w in r["warnings"])


# --- the command ---------------------------------------------------------------------------------


def test_cli_json_has_the_issue_keys(cli, tmp_path):
    data = _write(tmp_path / "d.jsonl", [_ticket(i) for i in range(20)])
    code, out, err = cli("cost", str(data), "--model", "ft:gpt-4.1-2025-04-14:acme:t:abc", "--json")
    assert code == 0, err
    r = json.loads(out)
    for key in ("model", "encoding", "n_examples", "total_tokens", "n_over_limit", "n_epochs", "billed_tokens",
                "price_per_1m_usd", "estimated_cost_usd", "prices_as_of"):
        assert key in r
    assert r["model"] == "gpt-4.1-2025-04-14" and r["encoding"] == "o200k_base" and r["n_epochs"] == 5


def test_cli_text_compare_savings_and_errors(cli, tmp_path, monkeypatch):
    data = _write(tmp_path / "d.jsonl", [_ticket(i) for i in range(20)])
    code, out, _ = cli("cost", str(data), "--epochs", "2")
    assert code == 0 and "epochs       2 (user)" in out and "≈ $" in out and "as of" in out
    code, out, _ = cli("cost", str(data), "--compare")
    assert code == 0 and "babbage-002" in out and "shut down 2026-10-23" in out
    code, out, _ = cli("cost", str(data), "--savings", "--requests", "50000", "--few-shot", "3", "--model", "gpt-4.1")
    assert code == 0 and "break-even" in out
    code, _, err = cli("cost", str(data), "--epochs", "99")
    assert code == 2 and "1 to 50" in err
    code, _, err = cli("cost", str(tmp_path / "missing.jsonl"))
    assert code == 4
    monkeypatch.setenv("TUNETERM_TODAY", "2027-01-07")
    code, out, _ = cli("cost", str(data))
    assert code == 0 and "no new fine-tuning jobs since 2027-01-06" in out


def test_cli_accepts_a_workspace_dataset_name(cli):
    from tuneterm.core.datasets import store
    store.import_dataset(REPO / "sample_data" / "tickets", name="tickets")
    code, out, err = cli("cost", "tickets", "--validation", "tickets", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["n_examples"] == store.get("tickets").splits["train"]
    assert r["validation"]["n_examples"] == store.get("tickets").splits["val"]
