"""OpenAI: the official ``openai`` SDK; prices, limits and wind-down dates in ``openai_prices.toml``.

Closed for new jobs from 2027-01-06 (developers.openai.com/api/docs/deprecations, notice of 2026-05-07);
fine-tuned models serve until their base shuts down (2027-01-14 for gpt-4o / gpt-4.1 bases).
"""

from __future__ import annotations

from tuneterm.core.providers.base import Provider


class _OpenAI(Provider):
    def client(self, url: str | None = None):
        from tuneterm.core import openai_jobs

        return openai_jobs.make_client(openai_jobs.base_url(url))

    def base_url(self, explicit: str | None = None) -> str:
        from tuneterm.core import openai_jobs

        return openai_jobs.base_url(explicit)


PROVIDER = _OpenAI(
    name="openai", title="OpenAI", key_env="OPENAI_API_KEY", default_url="https://api.openai.com/v1",
    default_model="gpt-4o-mini-2024-07-18", min_examples=10, max_examples=None, ref_prefix="openai",
    billing="training-file tokens x epochs, each example capped at the model's limit; validation tokens free "
            "(OpenAI fine-tuning guide; cookbook Chat_finetuning_data_prep)",
    token_accounting="tiktoken (o200k_base / cl100k_base); 3 tokens per message, 1 per name, 3 to prime the reply, "
                     "tool definitions per the cookbook's num_tokens_for_tools (How_to_count_tokens_with_tiktoken)",
    data_format="OpenAI chat JSONL (messages), DPO pairs (input / preferred_output / non_preferred_output)",
    sdk="openai SDK (OPENAI_API_KEY, OPENAI_BASE_URL)",
)
