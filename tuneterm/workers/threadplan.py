"""How many threads a decode loop should use, and whether its OpenMP team should spin.

Measured on the 2-core machine (environment.md, issue 23): on an idle machine spinning OpenMP
threads are fastest (llama.cpp 110-130 tok/s spinning, 31 passive); when another process keeps a
core busy, a spinning team as wide as the machine starves it (fp32 decode 4.8 tok/s spinning vs
12.5 passive). So: use the cores this process may run on that nobody else is using, and spin when
that does not oversubscribe them; when no core is free, use them all and wait passively. A
user's own ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` win (tuneterm's own passive default, marked
by ``TUNETERM_OMP_DEFAULTED``, does not count as the user's).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass
class ThreadPlan:
    threads: int
    wait_policy: str  # ACTIVE | PASSIVE
    cores: int
    busy_elsewhere: float  # cores' worth of CPU other processes used while we looked
    reason: str

    def env(self, base: dict | None = None) -> dict[str, str]:
        """``base`` (default os.environ) with this plan's OpenMP settings for a child process."""
        out = dict(os.environ if base is None else base)
        if user_wait_policy(out) is None:
            out["OMP_WAIT_POLICY"] = self.wait_policy
        if out.pop("TUNETERM_OMP_DEFAULTED", None):  # serve's own spin and thread settings stay its own
            out.pop("GOMP_SPINCOUNT", None)
            out.pop("TUNETERM_ADAPT_THREADS", None)
        if "OMP_NUM_THREADS" not in out:
            out["OMP_NUM_THREADS"] = str(self.threads)
        return out


def user_wait_policy(env: dict | None = None) -> str | None:
    env = os.environ if env is None else env
    if env.get("TUNETERM_OMP_DEFAULTED"):
        return None
    return env.get("OMP_WAIT_POLICY") or None


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _cpu_busy_seconds() -> float:
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def busy_elsewhere(window_s: float = 0.25) -> float:
    """Cores' worth of CPU time used by other processes over ``window_s`` (0 where unknown)."""
    try:
        t0, b0, s0 = time.perf_counter(), _cpu_busy_seconds(), sum(os.times()[:2])
        time.sleep(window_s)
        t1, b1, s1 = time.perf_counter(), _cpu_busy_seconds(), sum(os.times()[:2])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, ((b1 - b0) - (s1 - s0)) / max(t1 - t0, 1e-6))


class LoadWatch:
    """Cores' worth of CPU other processes used since the previous look, without sleeping: a
    long-running decode loop asks between two steps."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            return time.perf_counter(), _cpu_busy_seconds(), sum(os.times()[:2])
        except (OSError, ValueError, IndexError):
            return None

    def busy_elsewhere(self) -> float | None:
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return None
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0]))


def threads_for(busy: float, cores: int | None = None) -> int:
    """The cores nobody else is using (at least one)."""
    cores = cores or usable_cores()
    return max(1, min(cores, cores - int(busy + 0.5)))


def plan(window_s: float = 0.25) -> ThreadPlan:
    cores = usable_cores()
    user_threads = os.environ.get("OMP_NUM_THREADS", "")
    busy = busy_elsewhere(window_s) if cores > 1 or user_wait_policy() is None else 0.0
    free = cores - int(busy + 0.5)
    if user_threads.isdigit() and int(user_threads) > 0:
        threads, reason = int(user_threads), "OMP_NUM_THREADS"
    elif free >= 1:
        threads, reason = free, f"{free} of {cores} cores free"
    else:
        threads, reason = cores, f"all {cores} cores busy elsewhere"
    policy = user_wait_policy() or ("ACTIVE" if threads <= free else "PASSIVE")
    return ThreadPlan(threads, policy.upper(), cores, round(busy, 2), reason)


# --- torch's decode loop -------------------------------------------------------------------------
#
# One decode step of a small model is a handful of small matrix products: on the 2-core machine a
# second torch thread made the int8 lean loop slower (2.07x fp32 with 2 threads, 3.6x with 1),
# while a larger model gains from every core. Which count is fastest depends on the model, the
# machine and what else runs on it, so the loop measures it: a few decode steps at each candidate
# count, the fastest kept. Prefill (many tokens at once) keeps torch's own count.


def candidate_counts(cores: int | None = None) -> list[int]:
    """Thread counts worth timing: every count up to 4, then 1, a quarter, a half and all cores."""
    cores = cores or usable_cores()
    if cores <= 4:
        return list(range(1, cores + 1))
    return sorted({1, max(1, cores // 4), max(1, cores // 2), cores})


@dataclass
class DecodeThreads:
    threads: int
    timings_ms: dict[int, float]  # median step time per candidate count
    reason: str


def pick_decode_threads(step, rounds: int = 3, steps: int = 4, cores: int | None = None) -> DecodeThreads:
    """The thread count at which ``step()`` (one decode step) is fastest.

    A user's ``OMP_NUM_THREADS`` wins (nothing is timed). Otherwise each candidate count runs
    ``steps`` steps per round, the rounds interleaved so that a burst of load elsewhere hits every
    candidate alike; the median of each candidate's per-round best decides. torch's own count is
    restored afterwards."""
    import statistics

    import torch

    user = os.environ.get("OMP_NUM_THREADS", "")
    if user.isdigit() and int(user) > 0:
        return DecodeThreads(int(user), {}, "OMP_NUM_THREADS")
    candidates = candidate_counts(cores)
    if len(candidates) == 1:
        return DecodeThreads(candidates[0], {}, "one usable core")
    before = torch.get_num_threads()
    samples: dict[int, list[float]] = {c: [] for c in candidates}
    try:
        step()  # warm-up
        for _ in range(rounds):
            for count in candidates:
                torch.set_num_threads(count)
                best = float("inf")
                for _ in range(steps):
                    started = time.perf_counter()
                    step()
                    best = min(best, time.perf_counter() - started)
                samples[count].append(best)
    finally:
        torch.set_num_threads(before)
    timings = {c: round(1000 * statistics.median(v), 3) for c, v in samples.items()}
    fastest = min(candidates, key=lambda c: (timings[c], c))
    return DecodeThreads(fastest, timings, f"fastest of {candidates} threads, measured")


class torch_threads:
    """``with torch_threads(n):`` runs torch ops with ``n`` intra-op threads, then restores the count."""

    def __init__(self, count: int | None) -> None:
        self.count = count
        self.before: int | None = None

    def __enter__(self) -> "torch_threads":
        import torch

        if self.count:
            self.before = torch.get_num_threads()
            if self.before != self.count:
                torch.set_num_threads(self.count)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.before is not None and torch.get_num_threads() != self.before:
            torch.set_num_threads(self.before)
