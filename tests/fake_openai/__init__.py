"""A fake OpenAI fine-tuning server for tests (see server.py)."""

from .server import VALID_KEY, FakeOpenAI, Faults

__all__ = ["FakeOpenAI", "Faults", "VALID_KEY"]
