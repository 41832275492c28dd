"""Azure OpenAI: the OpenAI SDK's ``AzureOpenAI`` client, the same ``files`` / ``fine_tuning.jobs`` calls and JSONL.

Credentials and endpoint: ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_KEY``, ``OPENAI_API_VERSION`` (the
SDK's own variables); ``--base-url`` or ``TUNETERM_AZURE_BASE_URL`` replaces the endpoint (tests, proxies).
Dates (Microsoft's retirement page, revision 2026-07-07): fine-tune training continues for existing
customers until no earlier than 2027-04-01 (gpt-4o, gpt-4o-mini) and 2027-04-14 (gpt-4.1 family);
deployments serve until October 2027; new customers lose training when the base model retires.
A fine-tuned model is used through a deployment: reference it as ``azure:DEPLOYMENT``.
"""

from __future__ import annotations

import os

from tuneterm.core.errors import ConfigError
from tuneterm.core.providers.base import Provider

DEFAULT_API_VERSION = "2025-04-01-preview"


class _Azure(Provider):
    def base_url(self, explicit: str | None = None) -> str:
        url = explicit or os.environ.get(self.url_env) or os.environ.get("AZURE_OPENAI_ENDPOINT", "")
        if not url:
            raise ConfigError("AZURE_OPENAI_ENDPOINT is not set", [("provider", "azure")],
                              "export AZURE_OPENAI_ENDPOINT=https://RESOURCE.openai.azure.com (or pass --base-url)")
        return url

    def client(self, url: str | None = None):
        from openai import AzureOpenAI  # the official SDK's Azure client

        return AzureOpenAI(api_key=self.api_key(), azure_endpoint=self.base_url(url),
                           api_version=os.environ.get("OPENAI_API_VERSION") or DEFAULT_API_VERSION,
                           max_retries=2, timeout=60.0)


PROVIDER = _Azure(
    name="azure", title="Azure OpenAI", key_env="AZURE_OPENAI_API_KEY", default_url="",
    default_model="gpt-4.1-mini-2025-04-14", min_examples=10, max_examples=None, ref_prefix="azure",
    billing="SFT/DPO: training tokens x epochs (Standard regional > Global, 10-30 % cheaper > Developer, 50 % off "
            "Global); plus hourly hosting of each deployed fine-tune, deployments idle 15 days are deleted; "
            "RFT per training hour (Azure OpenAI pricing docs)",
    token_accounting="as OpenAI (same models, same tiktoken encodings and per-message overhead); open models "
                     "(Llama-3.3-70B-Instruct) with their own tokenizer where it is installed, else an estimate",
    data_format="OpenAI chat / DPO JSONL, unchanged",
    sdk="openai SDK AzureOpenAI (AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, OPENAI_API_VERSION)",
)
