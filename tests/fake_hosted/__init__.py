"""Fake Together, Fireworks and Mistral fine-tuning servers for tests (one module per provider)."""

from .fireworks import FakeFireworks
from .mistral import FakeMistral
from .together import FakeTogether

__all__ = ["FakeFireworks", "FakeMistral", "FakeTogether"]
