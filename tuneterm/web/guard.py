"""Who may open the browser workbench: a per-launch token, then a cookie; Origin and Host checks.

Whoever drives the page launches jobs, reads datasets and chats with the user's models, so every
request must carry the launch token (``?token=...`` once, then an HttpOnly, SameSite=Strict cookie).
The websocket also checks its Origin (a page from another site cannot drive the workbench through
the user's cookie), and on a loopback binding the Host header must name this machine, so a DNS name
rebound to 127.0.0.1 does not reach it. The model is Jupyter Server's token and origin checks.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tuneterm.core.hosts import is_loopback

TOKEN_ENV = "TUNETERM_WEB_TOKEN"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def host_name(host_header: str) -> str:
    """The name part of a Host header (``[::1]:8000`` -> ``::1``, ``example.org:80`` -> ``example.org``)."""
    try:
        name = urlsplit(f"//{host_header}").hostname
    except ValueError:
        return ""
    return (name or "").lower()


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, default ports dropped, as browsers send Origin."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return ""
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@dataclass
class Guard:
    """The checks for one launch. ``token`` None means no token (allowed on loopback only)."""

    bind_host: str
    port: int
    token: str | None
    public_url: str | None = None
    extra_hosts: set[str] = field(default_factory=set)

    @property
    def cookie_name(self) -> str:
        # Cookies ignore ports: two launches on one machine must not overwrite each other's cookie.
        return f"tuneterm-web-{self.port}"

    def token_ok(self, candidate: str | None) -> bool:
        if self.token is None:
            return True
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode("utf-8"), self.token.encode("utf-8"))

    def host_ok(self, host_header: str | None) -> bool:
        """On a loopback binding, only this machine's names (or --public-url's host) are served."""
        if not is_loopback(self.bind_host):
            return True  # reachable from elsewhere by design: the token guards
        name = host_name(host_header or "")
        if not name:
            return False
        if is_loopback(name) or name in self.extra_hosts:
            return True
        return bool(self.public_url) and name == host_name(urlsplit(self.public_url).netloc)

    def origin_ok(self, origin: str | None, scheme: str, host_header: str) -> bool:
        """A websocket's Origin must be the page's own origin or --public-url's.

        No Origin at all is a client that is not a browser (browsers always send one on a
        websocket); it still needs the token."""
        if origin is None:
            return True
        allowed = {origin_of(f"{scheme}://{host_header}")}
        if self.public_url:
            allowed.add(origin_of(self.public_url))
        return origin_of(origin) in allowed and origin.lower() != "null"
