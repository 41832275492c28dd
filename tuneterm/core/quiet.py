"""Third-party chatter stays out of the terminal and out of the first screen of job logs.

torch, transformers, bitsandbytes, peft, accelerate and the Hub client log warnings and advice
meant for their own developers (one even tells users to set ``trust_remote_code=True``). tuneterm
says what matters in its own words; the libraries' messages are kept only when asked for:
``tuneterm --verbose ...`` or ``TUNETERM_DEBUG=1`` (inherited by job processes, so their
``log.txt`` then holds everything). Torch-free; call :func:`install` before the libraries load.
"""

from __future__ import annotations

import logging
import os
import warnings

NOISY_LOGGERS = ("bitsandbytes", "kernels", "transformers", "accelerate", "peft", "trl", "datasets",
                 "huggingface_hub", "torch", "torchao", "httpx", "urllib3", "filelock", "llama_cpp")
NOISY_MODULES = r"(torch|transformers|bitsandbytes|peft|accelerate|trl|datasets|huggingface_hub|tokenizers|" \
                r"torchao|kernels|gguf|llama_cpp)(\.|$)"
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # C++ warnings of torch (e.g. DDP's reducer advice)
}


def verbose() -> bool:
    return os.environ.get("TUNETERM_DEBUG", "").lower() not in ("", "0", "false", "no")


def install(verbose_output: bool | None = None) -> bool:
    """Quiet the libraries (unless verbose). Returns True when quieted. Idempotent."""
    if verbose_output is None:
        verbose_output = verbose()
    if verbose_output:
        os.environ["TUNETERM_DEBUG"] = "1"  # job processes started from here inherit it
        return False
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=NOISY_MODULES)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    return True
