"""The server's old import path: it lives in :mod:`tuneterm.workers.serve` now."""

from tuneterm.workers.serve import ApiError, ChatRequest, ChatServer, is_loopback, make_server, parse_request, serve_in_thread

__all__ = ["ApiError", "ChatRequest", "ChatServer", "is_loopback", "make_server", "parse_request", "serve_in_thread"]
