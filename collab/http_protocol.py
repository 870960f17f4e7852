"""uvicorn's HTTP protocol with a deadline on the handshake and a size limit on upgrade heads.

Every connection, WebSocket or not, starts in uvicorn's HTTP protocol (httptools, or h11
without it), which hands a WebSocket upgrade to the configured WebSocket backend. Two holes sit
at that seam, so they are closed here, once, whatever ``COLLAB_WS_BACKEND`` is:

- An upgrade whose request line or one header is longer than the WebSocket parser's line limit
  (8 KiB in websockets) was never answered by the sans-I/O backend: its parser failed, no event
  came out, and the socket stayed open. The head is measured here before the hand-over:
  a request line over ``MAX_REQUEST_LINE_BYTES`` is answered 414, a header line over
  ``MAX_HEADER_LINE_BYTES`` or more than ``MAX_HEADERS`` headers 431, and the socket is closed.
  Both limits sit below every backend's own, so no backend ever meets a head it cannot parse.
- A client that connects and then sends nothing, half a request, or an upgrade the app never
  answers, held a descriptor forever. A connection whose request head (or, for a WebSocket,
  whose handshake) has not completed ``COLLAB_HANDSHAKE_TIMEOUT_SECONDS`` after it opened is
  dropped. Requests after the first on a keep-alive connection are uvicorn's keep-alive timeout's
  business, not this one's.

The backends say whether their handshake is complete in different words (``handshake_complete``
in the sans-I/O and wsproto backends, ``handshake_completed_event`` in the legacy websockets one);
a protocol that says neither is left to its own timeouts.
"""

from __future__ import annotations

import asyncio
from typing import Any

# The scope extension under which a WebSocket protocol may offer the application a synchronous
# ``send_text_now(data: bytes) -> bool`` (``collab.ws_protocol`` does). Defined here, away from
# any uvicorn import, so the application can look for it whichever protocol serves it.
SEND_TEXT_NOW = "collab.send_text_now"

# The uvicorn versions (major, minor) the lean WebSocket protocol, a subclass of uvicorn's
# non-public sans-I/O protocol, is tested on; on any other, uvicorn's own protocol serves.
LEAN_PROTOCOL_TESTED = ((0, 54), (0, 54))
LEAN_PROTOCOL = "collab.ws_protocol:LeanWebSocketsSansIOProtocol"

MAX_REQUEST_LINE_BYTES = 8000
MAX_HEADER_LINE_BYTES = 8000
MAX_HEADERS = 100

_REASONS = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


def refuse(transport: asyncio.Transport, status: int, detail: str) -> None:
    """Answers a plain-text HTTP error and closes the connection."""
    body = detail.encode()
    transport.write(
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s"
        % (status, _REASONS[status], len(body), body)
    )
    transport.close()


def oversized(target: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, str] | None:
    """The status and reason to refuse an upgrade head with, or None when it is acceptable."""
    if len(b"GET  HTTP/1.1") + len(target) > MAX_REQUEST_LINE_BYTES:
        return 414, f"request line longer than {MAX_REQUEST_LINE_BYTES} bytes"
    if len(headers) > MAX_HEADERS:
        return 431, f"more than {MAX_HEADERS} header fields"
    if any(len(name) + 2 + len(value) > MAX_HEADER_LINE_BYTES for name, value in headers):
        return 431, f"a header field longer than {MAX_HEADER_LINE_BYTES} bytes"
    return None


def websocket_handshake_done(protocol: object) -> bool:
    done = getattr(protocol, "handshake_complete", None)
    if isinstance(done, bool):
        return done
    event = getattr(protocol, "handshake_completed_event", None)
    if isinstance(event, asyncio.Event):
        return event.is_set()
    return True


def lean_protocol_fits(uvicorn_version: str) -> bool:
    try:
        major, minor = (int(part) for part in uvicorn_version.split(".")[:2])
    except ValueError:
        return False
    low, high = LEAN_PROTOCOL_TESTED
    return low <= (major, minor) <= high


def ws_protocol(backend: str, uvicorn_version: str | None = None) -> str:
    """uvicorn's ``ws`` option for a ``COLLAB_WS_BACKEND``: ``websockets-sansio`` is served by
    collab's leaner subclass (``collab.ws_protocol``) on the uvicorn versions it is tested on,
    and by uvicorn's own protocol on any other."""
    if backend != "websockets-sansio":
        return backend
    if uvicorn_version is None:
        import uvicorn

        uvicorn_version = uvicorn.__version__
    return LEAN_PROTOCOL if lean_protocol_fits(uvicorn_version) else backend


def _uvicorn_http_protocol() -> type[asyncio.Protocol]:
    """What uvicorn's ``http="auto"`` would pick."""
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return HttpToolsProtocol


def guarded_http_protocol(
    handshake_timeout: float, base: type[asyncio.Protocol] | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (``base``, by default the one uvicorn would pick),
    guarded as the module docstring says."""
    guarded: Any = base or _uvicorn_http_protocol()

    class HandshakeGuard(guarded):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._deadline: asyncio.TimerHandle | None = self.loop.call_later(
                handshake_timeout, self._handshake_expired
            )

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        def handle_websocket_upgrade(self, *event: Any) -> None:
            # httptools keeps the target and headers on the protocol; h11 passes its event.
            if event:
                target, headers = event[0].target, list(event[0].headers)
            else:
                target, headers = self.url, self.scope["headers"]
            refusal = oversized(target, headers)
            if refusal is not None:
                refuse(self.transport, *refusal)
                return
            super().handle_websocket_upgrade(*event)
            # The WebSocket protocol owns the transport now. The rest of the deadline is held
            # by a timer that references the transport alone: this object, with its parser,
            # is garbage from here on, not kept alive by its own timer.
            if self._deadline is not None:
                remaining = self._deadline.when() - self.loop.time()
                self._deadline.cancel()
                self._deadline = None
                self.loop.call_later(remaining, _drop_unfinished_websocket, self.transport)

        def _handshake_expired(self) -> None:
            self._deadline = None
            transport: asyncio.Transport = self.transport
            if transport.is_closing():
                return
            if transport.get_protocol() is self and self.cycle is None:
                transport.close()  # no request head has completed yet

    return HandshakeGuard


def _drop_unfinished_websocket(transport: asyncio.Transport) -> None:
    if not transport.is_closing() and not websocket_handshake_done(transport.get_protocol()):
        transport.close()
