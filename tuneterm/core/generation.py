"""Generation settings and statistics, shared by the local engine, the server and the chat client.

Torch-free: :class:`GenerationParams` (what to generate) and :class:`GenerationStats` (how it
went: token counts, time to first token, decode rate) are used on both sides of ``tuneterm
serve``: ``tuneterm.workers.engine`` fills the stats while it generates, and
``tuneterm.core.chat_client`` fills the same class from a server's stream.

:func:`inference_thread_env` holds the OpenMP settings of processes that generate on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from tuneterm.core.errors import InputError


@dataclass
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def validate(self) -> "GenerationParams":
        if self.max_new_tokens < 1:
            raise InputError("max_new_tokens must be at least 1", [("max_new_tokens", str(self.max_new_tokens))])
        if self.temperature < 0:
            raise InputError("temperature must be 0 (greedy) or more", [("temperature", str(self.temperature))])
        if not 0 < self.top_p <= 1:
            raise InputError("top_p must be in (0, 1]", [("top_p", str(self.top_p))])
        return self

    @classmethod
    def from_dict(cls, params: "dict | GenerationParams | None") -> "GenerationParams":
        """From the chat client's dict form (``max_tokens`` or ``max_new_tokens``; None = default)."""
        if isinstance(params, GenerationParams):
            return params
        p = params or {}
        max_tokens = p.get("max_tokens") or p.get("max_new_tokens") or cls.max_new_tokens
        return cls(max_new_tokens=int(max_tokens), temperature=float(p.get("temperature") or 0.0),
                   top_p=float(p.get("top_p") if p.get("top_p") is not None else 1.0),
                   seed=p.get("seed"), stop=list(p.get("stop") or []))

    def to_dict(self) -> dict:
        """The chat client's dict form."""
        return {"max_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed, "stop": list(self.stop)}


@dataclass
class GenerationStats:
    """One answer's figures. ``prompt_tokens`` is None when a server did not report usage."""

    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    tokens_exact: bool = False  # client side: True when the server reported usage, else counted from chunks
    ttft_s: float | None = None
    total_s: float = 0.0
    finish_reason: str | None = None  # stop | length | cancelled

    @property
    def tokens_per_s(self) -> float:
        """Decode rate: tokens after the first over the time after the first."""
        if self.ttft_s is None or self.completion_tokens <= 1:
            return 0.0
        span = self.total_s - self.ttft_s
        return (self.completion_tokens - 1) / span if span > 0 else 0.0

    decode_tok_s = tokens_per_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokens_per_s"] = d["decode_tok_s"] = round(self.tokens_per_s, 2)
        d["ttft_ms"] = round(self.ttft_s * 1000, 1) if self.ttft_s is not None else None
        d["total_s"] = round(self.total_s, 3)
        return d


# OpenMP threads that wait for work sleep instead of spinning. PyTorch's CPU kernels run on an
# OpenMP team; by default an idle team member spins, which is cheap on an idle machine but, on a
# loaded one (more runnable threads than cores), burns the time slice its partner needs: measured
# here under load, one forward pass of the embedded model took ~10 s on a spinning team and
# ~0.6 s on a passive one. libgomp reads this once, when torch is imported.
INFERENCE_THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def inference_thread_env(env: "dict[str, str] | None" = None) -> dict[str, str]:
    """``env`` (default: os.environ) plus the settings above, keeping any the user set."""
    out = dict(os.environ if env is None else env)
    for key, value in INFERENCE_THREAD_ENV.items():
        if key not in out:  # marked, so that a llama.cpp worker can tell it from the user's own setting
            out[key] = value
            out["TUNETERM_OMP_DEFAULTED"] = "1"
    return out


# `tuneterm serve` on a machine of its own: a batch's decode step is a few hundred small parallel
# regions, and an OpenMP team that sleeps at once after each (PASSIVE) leaves a third of two cores
# idle; one that spins for good (ACTIVE) starves the event loop and anything else. Measured on the
# 2-core machine, 32 clients of benchmarks/serve_load.py: 103.6 tok/s passive, 125.6 with libgomp's
# default spin, 134.5 spinning briefly (GOMP_SPINCOUNT=10000). With another process busy on a core,
# brief spinning on two threads fell to 35.8 (passive 82.5) and on one thread reached 103.1, so the
# decode loop also follows the load: its thread count is the cores others leave free
# (TUNETERM_ADAPT_THREADS, read by tuneterm.workers.batcher).
SERVE_THREAD_ENV = {"GOMP_SPINCOUNT": "10000", "TUNETERM_ADAPT_THREADS": "1"}


def apply_serve_thread_env() -> bool:
    """`serve`'s settings (above) in this process, unless the user set an OpenMP wait policy, spin
    count or thread count (then theirs, as for chat); only effective before torch is imported."""
    import sys

    if any(os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")):
        return apply_inference_thread_env()
    for key, value in SERVE_THREAD_ENV.items():
        os.environ[key] = value
    os.environ["TUNETERM_OMP_DEFAULTED"] = "1"  # tuneterm's setting, not the user's: llama.cpp workers choose their own
    return "torch" not in sys.modules


def apply_inference_thread_env() -> bool:
    """Set the settings in this process; only effective before torch is imported (True then)."""
    import sys

    for key, value in INFERENCE_THREAD_ENV.items():
        if key not in os.environ:
            os.environ[key] = value
            os.environ["TUNETERM_OMP_DEFAULTED"] = "1"  # tuneterm's default, not the user's
    return "torch" not in sys.modules
