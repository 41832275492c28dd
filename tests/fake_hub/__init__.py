"""A local stand-in of the Hugging Face Hub's HTTP API, for ``tuneterm push`` (``HF_ENDPOINT``)."""

from .server import FakeHub

__all__ = ["FakeHub"]
