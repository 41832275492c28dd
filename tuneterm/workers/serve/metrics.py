"""``GET /metrics``: the server's counters in Prometheus text form (``prometheus_client``).

Each server has its own registry, so several servers in one process (tests, ``chat --compare``)
keep separate figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tuneterm_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.running = Gauge("tuneterm_requests_running", "requests being decoded", registry=r)
        self.waiting = Gauge("tuneterm_requests_waiting", "requests queued for a decode slot", registry=r)
        self.tokens = Counter("tuneterm_tokens_out", "completion tokens generated", registry=r)
        self.cancelled = Counter("tuneterm_requests_cancelled", "requests whose client left before the end",
                                 registry=r)
        self.slow_bodies = Counter("tuneterm_slow_bodies", "requests cut off by --read-timeout", registry=r)
        self.ttft = Histogram("tuneterm_time_to_first_token_seconds", "time from admission to the first token",
                              buckets=_SECONDS, registry=r)
        self.latency = Histogram("tuneterm_request_latency_seconds", "time from arrival to the last byte",
                                 buckets=_SECONDS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
