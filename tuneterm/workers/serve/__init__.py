"""An OpenAI-compatible HTTP server for local models (``tuneterm serve``).

    GET  /health                    200 once the models are loaded, 503 while loading
    GET  /metrics                   Prometheus text form
    GET  /v1/models                 the model ids (the references as given)
    GET  /v1/models/{id}
    POST /v1/chat/completions       streaming (server-sent events) or not

Starlette on uvicorn (:mod:`.app`), the endpoints (:mod:`.routes`), request checks and OpenAI's
error shape (:mod:`.schemas`), back-pressure (:mod:`.admission`), one request's life
(:mod:`.generation`), answer shapes (:mod:`.chat`), counters (:mod:`.metrics`). Generation goes
through :mod:`tuneterm.workers.variants`: requests to the variants of one base model (the base,
its LoRA adapters, few-shot references over them) are decoded together in one batch
(:mod:`tuneterm.workers.batcher`) in the decode loop's own thread. A classifier artifact
(:mod:`tuneterm.workers.served_classifier`) answers a chat with its label, outside the decode loop.
"""

from tuneterm.workers.serve.app import ChatServer, make_server, serve_in_thread
from tuneterm.core.hosts import is_loopback
from tuneterm.workers.serve.schemas import ApiError, ChatRequest, parse_request

__all__ = ["ApiError", "ChatRequest", "ChatServer", "is_loopback", "make_server", "parse_request", "serve_in_thread"]
