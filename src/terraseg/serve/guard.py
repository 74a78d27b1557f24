"""Protections of the web service that sit in front of every route.

* :class:`BodyLimit` (ASGI middleware): a request body larger than the limit is refused from its
  ``Content-Length`` before any byte is read, and while streaming when the header is missing or lies,
  so an oversized upload never fills the disk (Starlette spools multipart bodies before a route runs).
* :class:`SecurityHeaders` (ASGI middleware): ``X-Content-Type-Options: nosniff``, a
  Content-Security-Policy fitting the page (own scripts only, no framing), ``X-Frame-Options: DENY``
  and ``Referrer-Policy: no-referrer`` on every answer (OWASP Secure Headers Project).
* :class:`KeyGuard`: the API key, from the ``X-API-Key`` header or the page's session cookie (an
  HMAC of a random nonce under the key, so every worker process can check it without shared state),
  with repeated wrong keys from one client answered 429 for a while.
* :func:`owner_token` / :func:`owner_of`: web-page results belong to the browser that made them
  (a random HttpOnly cookie); another client gets 404 for them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import defaultdict, deque

from terraseg.serve.errors import ApiError

SESSION_COOKIE = "terraseg_session"
OWNER_COOKIE = "terraseg_owner"


class _TooLarge(BaseException):
    """Raised inside the app's body reading; a BaseException, so body parsers' ``except Exception`` pass it up."""


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 ``{"error": ...}``.

    Args:
        app: the ASGI app.
        limit: the largest body in bytes.
    """

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": f"request body is larger than the limit of {self.limit / 1e6:g} MB."}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if length is not None and int(length) > self.limit:
                return await self._refuse(send)
        except ValueError:
            pass
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Add the security headers to every HTTP answer (Leaflet needs inline styles, nothing else inline).

    Args:
        app: the ASGI app.
    """

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", CSP.encode()),
    ]

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in self.HEADERS if h[0] not in names]
            await send(message)

        await self.app(scope, receive, with_headers)


class KeyGuard:
    """Checks the API key of a request and slows down clients that guess.

    Args:
        key: the API key (None: no key required).
        max_failures: wrong keys one client may send within ``window`` seconds before it is refused
            (429 with Retry-After) for the rest of that window.
    """

    def __init__(self, key: str | None, max_failures: int = 10, window: float = 60.0) -> None:
        self.key, self.max_failures, self.window = key, max_failures, window
        self._failures: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def session_token(self) -> str:
        """A cookie value proving the key was given: ``nonce.hmac_sha256(key, nonce)``."""
        assert self.key is not None
        nonce = secrets.token_hex(16)
        return f"{nonce}.{hmac.new(self.key.encode(), nonce.encode(), hashlib.sha256).hexdigest()}"

    def _valid_token(self, token: str | None) -> bool:
        if not token or "." not in token or self.key is None:
            return False
        nonce, mac = token.split(".", 1)
        return hmac.compare_digest(mac, hmac.new(self.key.encode(), nonce.encode(), hashlib.sha256).hexdigest())

    def _throttle(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            q = self._failures[client]
            while q and now - q[0] > self.window:
                q.popleft()
            if len(q) >= self.max_failures:
                wait = int(self.window - (now - q[0])) + 1
                raise ApiError(429, f"too many wrong API keys; retry in {wait} s.", {"Retry-After": str(wait)})

    def check(self, headers, cookies, client: str) -> None:
        """Raise unless the request carries the key (header) or a valid session cookie.

        Args:
            headers: request headers.
            cookies: request cookies.
            client: the client's address.

        Raises:
            ApiError: 401 missing or wrong key; 429 after too many wrong keys from ``client``.
        """
        if self.key is None:
            return
        self._throttle(client)
        given = headers.get("x-api-key")
        if given is not None and hmac.compare_digest(given.encode(), self.key.encode()):
            return
        if given is None and self._valid_token(cookies.get(SESSION_COOKIE)):
            return
        if given is not None:
            with self._lock:
                self._failures[client].append(time.monotonic())
        raise ApiError(401, "missing or wrong X-API-Key header.")

    def login(self, given: str, client: str) -> str:
        """The session cookie value for a correct ``given`` key.

        Raises:
            ApiError: 401 wrong key; 429 after too many.
        """
        self._throttle(client)
        if self.key is None or not hmac.compare_digest(given.encode(), self.key.encode()):
            with self._lock:
                self._failures[client].append(time.monotonic())
            raise ApiError(401, "wrong API key.")
        return self.session_token()


def owner_token() -> str:
    """A new random owner cookie value."""
    return secrets.token_hex(16)


def owner_of(token: str | None) -> str | None:
    """What a result stores of its owner's cookie: its SHA-256 (the cookie itself is never written).

    Args:
        token: the owner cookie's value, or None.

    Returns:
        The hex digest, or None without a cookie.
    """
    return hashlib.sha256(token.encode()).hexdigest() if token else None


__all__ = ["BodyLimit", "KeyGuard", "OWNER_COOKIE", "SESSION_COOKIE", "SecurityHeaders", "owner_of", "owner_token"]
