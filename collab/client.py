"""A small asyncio client of the WebSocket protocol (SPEC §4), for tests, benchmarks and bots.

:class:`OTClientState` is the OT client without I/O (frames in; frames to send and events out),
as python-websockets splits its protocol from its I/O; :class:`CollabClient` runs it over a
``websockets`` connection. The OT state is ShareDB's: *synchronised*, *awaiting* (one op in
flight) or *awaiting_with_buffer* (later edits composed into a buffer, sent on the ack). A remote
op ``s`` meeting pending ``p``: ``p' = transform(p, s, "left")``, ``s' = transform(s, p,
"right")``, then ``s'`` against the buffer likewise. The client also keeps the server's text at
``rev`` (``confirmed``), to check a rebase and to fall back to exactly what the server holds.

Choices where SPEC leaves room:

* An ``error`` answering the in-flight op (``invalid_op``, ``bad_revision``, ``read_only``…): the
  server will never apply it and the buffer was built on it, so both are dropped and the text
  goes back to ``confirmed`` (event ``reset``); that text is exact, so no reconnect is needed.
  ``rate_limited`` only delays: the same (src, seq) is resent after a pause.
* Close 1001 and 1013 reconnect at once, other drops with backoff and jitter, with ``?since=``;
  ``init.ops`` are applied as remote ops, our in-flight op found there by (src, seq) counts as
  acked, otherwise it is resent with its (src, seq). 1008 (status ``forbidden``), 4404
  (``deleted``) and 1009 (``failed``: a resend would be as large) stop the client.
* An ``init`` without ``ops`` although the revision moved (history too old), or a rebase that
  does not reproduce the server's text: the server's content wins and unacknowledged edits are
  dropped (events ``error`` with code ``resync``, then ``reset``).
* Our cursor goes out as presence only while synchronised: the server reads it at ``rev``.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from collab import ot

Frame: TypeAlias = dict[str, Any]
OTState = Literal["synchronised", "awaiting", "awaiting_with_buffer"]
Status = Literal["connecting", "online", "offline", "closed", "forbidden", "deleted", "failed"]
EventKind = Literal["op", "ack", "reset", "presence", "join", "leave", "error", "status"]
Auth = Literal["header", "query", "ticket"]

_STOP_CODES: dict[int, Status] = {1008: "forbidden", 1009: "failed", 4404: "deleted"}
_STOP_HTTP: dict[int, Status] = {401: "forbidden", 403: "forbidden", 404: "deleted"}
_SOON_CODES = frozenset({1001, 1013})
_TERMINAL: tuple[Status, ...] = ("closed", "forbidden", "deleted", "failed")


class ClientError(RuntimeError):
    """The client cannot do this now (closed, not writable, or stopped by the server)."""


@dataclass(slots=True)
class ClientEvent:
    kind: EventKind
    data: Frame


@dataclass(slots=True)
class Peer:
    client: str
    user: str
    name: str
    cursor: dict[str, int] | None = None
    rev: int = 0  # the server revision the cursor is valid at


@dataclass(slots=True)
class Pending:
    op: ot.Op
    seq: int


@dataclass(slots=True)
class Effects:
    """What handling frames asks of the I/O layer."""

    send: list[Frame] = field(default_factory=list)
    events: list[ClientEvent] = field(default_factory=list)
    retry: Frame | None = None  # a rate-limited op frame, to resend after a pause
    reconnect: bool = False  # the revisions went wrong: drop the socket, reconnect with since


class OTClientState:
    """The OT client of one document: text, revision, pending op, buffer and peers. No I/O."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.text = ""
        self.confirmed = ""
        self.rev = 0
        self.pending: Pending | None = None
        self.buffer: ot.Op | None = None
        self.last_seq = 0
        self.initialised = False
        self.client_id: str | None = None
        self.access = "write"
        self.peers: dict[str, Peer] = {}
        self.cursor: dict[str, int] | None = None
        self._cursor_unsent = False

    @property
    def state(self) -> OTState:
        if self.pending is None:
            return "synchronised"
        return "awaiting" if self.buffer is None else "awaiting_with_buffer"

    def submit(self, op: ot.Op) -> list[Frame]:
        """Applies a local op made on ``text``; returns the frames to send (maybe none)."""
        if not self.initialised:
            raise ClientError("no init received yet")
        if self.access != "write":
            raise ClientError("this connection may only read")
        op = ot.normalize(op)
        self.text = ot.apply(self.text, op)  # raises InvalidOp before anything changes
        if not op:
            return []
        self._move_cursor(op)
        if self.pending is not None:
            self.buffer = op if self.buffer is None else ot.compose(self.buffer, op)
            return []
        self.last_seq += 1
        self.pending = Pending(op, self.last_seq)
        return [self.pending_frame()]

    def pending_frame(self) -> Frame:
        assert self.pending is not None
        return {
            "type": "op",
            "rev": self.rev,
            "op": self.pending.op,
            "src": self.src,
            "seq": self.pending.seq,
        }

    def set_cursor(self, cursor: dict[str, int] | None) -> list[Frame]:
        self.cursor = cursor
        self._cursor_unsent = True
        return self._presence_frames()

    def receive(self, frame: Frame, fx: Effects | None = None) -> Effects:
        """Handles one server frame (an ``ops`` batch item by item)."""
        fx = fx if fx is not None else Effects()
        kind = frame.get("type")
        if kind == "ops":
            for item in frame["items"]:
                if fx.reconnect:
                    break
                self.receive(item, fx)
        elif kind == "init":
            self._on_init(frame, fx)
        elif kind == "ack":
            self._on_ack(frame["seq"], frame["rev"], fx)
        elif kind == "op":
            self._on_op(frame, fx)
        elif kind == "error":
            self._on_error(frame, fx)
        elif kind in ("presence", "join", "leave"):
            self._on_peer(frame, fx)
        return fx

    # -- frames -----------------------------------------------------------------------------

    def _on_init(self, frame: Frame, fx: Effects) -> None:
        self.client_id = frame["client"]
        self.access = frame.get("access", "write")
        if not self.initialised:
            self.initialised = True
            self._reset(frame["content"], frame["rev"], fx)
        else:
            sends = len(fx.send)
            for item in frame.get("ops", []):
                self._on_op(item, fx)
            del fx.send[sends:]  # what is still pending is sent once, below
            if fx.reconnect or ("ops" not in frame and frame["rev"] != self.rev):
                fx.reconnect = False
                fx.events.append(
                    ClientEvent(
                        "error",
                        {
                            "code": "resync",
                            "message": "cannot rebase on the server's revision "
                            f"{frame['rev']}: unacknowledged local edits are dropped",
                        },
                    )
                )
                self._reset(frame["content"], frame["rev"], fx)
            elif self.confirmed != frame["content"]:
                fx.events.append(
                    ClientEvent(
                        "error",
                        {"code": "resync", "message": "rebased text differs from the server's"},
                    )
                )
                self._reset(frame["content"], frame["rev"], fx)
            if self.pending is not None:
                fx.send.append(self.pending_frame())
        self._replace_peers(frame.get("peers", []), fx)
        self._cursor_unsent = self.cursor is not None
        fx.send.extend(self._presence_frames())

    def _gap(self, what: str, rev: int, fx: Effects) -> None:
        """A revision out of sequence: report it and start over from a fresh connection."""
        message = f"{what} at {rev}, expected {self.rev + 1}"
        fx.events.append(ClientEvent("error", {"code": "gap", "message": message}))
        fx.reconnect = True

    def _on_ack(self, seq: int, rev: int, fx: Effects) -> None:
        if self.pending is None or seq != self.pending.seq:
            return  # a second ack of a resend we already took as acked
        # An op sent empty is acked at the current revision (docs/protocol.md); ours may have
        # become empty after it was sent, so either answer fits an empty one.
        if rev != self.rev + 1 and (self.pending.op or rev != self.rev):
            self._gap("ack", rev, fx)
            return
        self.confirmed = ot.apply(self.confirmed, self.pending.op)
        self.rev = rev
        self.pending = None
        fx.events.append(ClientEvent("ack", {"seq": seq, "rev": rev}))
        if self.buffer is not None:
            self.last_seq += 1
            self.pending, self.buffer = Pending(self.buffer, self.last_seq), None
            fx.send.append(self.pending_frame())
        fx.send.extend(self._presence_frames())

    def _on_op(self, frame: Frame, fx: Effects) -> None:
        rev: int = frame["rev"]
        pending = self.pending
        if frame["src"] == self.src and pending is not None and frame["seq"] == pending.seq:
            self._on_ack(frame["seq"], rev, fx)  # our own op, committed by an earlier socket
            return
        if rev <= self.rev:
            return
        if rev != self.rev + 1:
            self._gap("op", rev, fx)
            return
        s = ot.normalize(frame["op"])
        try:
            self.confirmed = ot.apply(self.confirmed, s)
            applied = s
            if self.pending is not None:
                p = self.pending.op
                self.pending.op, applied = ot.transform(p, s, "left"), ot.transform(s, p, "right")
            if self.buffer is not None:
                b = self.buffer
                self.buffer, applied = (
                    ot.transform(b, applied, "left"),
                    ot.transform(applied, b, "right"),
                )
            self.text = ot.apply(self.text, applied)
        except ot.InvalidOp as error:
            fx.events.append(ClientEvent("error", {"code": "apply_failed", "message": str(error)}))
            fx.reconnect = True
            return
        self.rev = rev
        self._move_cursor(applied)
        fx.events.append(ClientEvent("op", {**frame, "applied": applied}))

    def _on_error(self, frame: Frame, fx: Effects) -> None:
        fx.events.append(ClientEvent("error", dict(frame)))
        if self.pending is None or frame.get("seq") != self.pending.seq:
            return
        if frame.get("code") == "rate_limited":
            fx.retry = self.pending_frame()
            return
        # Refused for good, and the buffer was built on it: back to the server's text.
        self._reset(self.confirmed, self.rev, fx)

    def _on_peer(self, frame: Frame, fx: Effects) -> None:
        client = frame["client"]
        if client == self.client_id:
            return
        if frame["type"] == "leave":
            self.peers.pop(client, None)
        else:
            peer = self.peers.setdefault(client, Peer(client, frame["user"], frame["name"]))
            if frame["type"] == "presence":
                peer.cursor, peer.rev = frame["cursor"], frame["rev"]
        fx.events.append(ClientEvent(frame["type"], dict(frame)))

    # -- helpers ----------------------------------------------------------------------------

    def _reset(self, content: str, rev: int, fx: Effects) -> None:
        self.text = self.confirmed = content
        self.rev = rev
        self.pending = self.buffer = None
        fx.events.append(ClientEvent("reset", {"rev": rev, "text": content}))

    def _replace_peers(self, listed: list[Frame], fx: Effects) -> None:
        current = {p["client"]: p for p in listed if p["client"] != self.client_id}
        for client in list(self.peers):
            if client not in current:
                gone = self.peers.pop(client)
                fx.events.append(
                    ClientEvent("leave", {"client": client, "user": gone.user, "name": gone.name})
                )
        for client, p in current.items():
            if client not in self.peers:
                fx.events.append(ClientEvent("join", dict(p)))
            self.peers[client] = Peer(client, p["user"], p["name"], p.get("cursor"), self.rev)

    def _move_cursor(self, op: ot.Op) -> None:
        if self.cursor is not None:
            self.cursor = {k: ot.transform_position(v, op) for k, v in self.cursor.items()}

    def _presence_frames(self) -> list[Frame]:
        if not self._cursor_unsent or self.pending is not None or not self.initialised:
            return []
        self._cursor_unsent = False
        return [{"type": "presence", "cursor": self.cursor, "rev": self.rev}]


class CollabClient:
    """:class:`OTClientState` over a WebSocket, with reconnects. Create with :meth:`connect`."""

    min_delay = 0.1
    max_delay = 5.0
    retry_delay = 0.5

    def __init__(
        self, url: str, doc_id: str, token: str, src: str, auth: Auth, auto_reconnect: bool
    ) -> None:
        self.doc_id = doc_id
        self._url, self._token, self._auth = url, token, auth
        self._auto_reconnect = auto_reconnect
        self.core = OTClientState(src)  # the state machine, open to inspection
        self._status: Status = "connecting"
        self.close_code: int | None = None
        self._ws: ClientConnection | None = None
        self._outbox: asyncio.Queue[Frame] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._queues: list[asyncio.Queue[ClientEvent]] = []
        self._changed = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        base_url_or_ws_url: str,
        doc_id: str,
        token: str,
        *,
        src: str | None = None,
        auto_reconnect: bool = True,
        auth: Auth = "header",
    ) -> CollabClient:
        """Opens the document and waits for its ``init``.

        ``base_url_or_ws_url``: ``http(s)://host:port``, ``ws(s)://host:port`` or the document's
        full WebSocket URL. ``auth``: the token as a Bearer header, as ``?token=``, or traded for
        a single-use ``?ticket=`` from ``POST /tickets`` before every (re)connect.
        """
        scheme, netloc, path, _, _ = urlsplit(base_url_or_ws_url)
        ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        if path.strip("/") == "" or scheme in ("http", "https"):
            path = path.rstrip("/") + f"/ws/documents/{quote(doc_id, safe='')}"
        url = urlunsplit((ws_scheme, netloc, path, "", ""))
        client = cls(url, doc_id, token, src or secrets.token_hex(8), auth, auto_reconnect)
        client._ws = await client._open()
        client._spawn(client._run())
        return client

    # -- state ------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        return self.core.text

    @property
    def rev(self) -> int:
        return self.core.rev

    @property
    def state(self) -> OTState:
        return self.core.state

    @property
    def status(self) -> Status:
        return self._status

    @property
    def peers(self) -> dict[str, Peer]:
        return dict(self.core.peers)

    @property
    def client_id(self) -> str | None:
        return self.core.client_id

    @property
    def src(self) -> str:
        return self.core.src

    @property
    def connection(self) -> ClientConnection | None:
        """The current WebSocket (None while reconnecting), for diagnostics and tests."""
        return self._ws

    # -- editing ----------------------------------------------------------------------------

    def submit(self, op: ot.Op) -> None:
        """Applies ``op`` (made on :attr:`text`) locally; sends it when nothing is in flight."""
        if self._status in _TERMINAL:
            raise ClientError(f"the client is {self._status}")
        self._queue_frames(self.core.submit(op))

    def insert(self, pos: int, text: str) -> None:
        self.submit([pos, text] if pos else [text])

    def delete(self, pos: int, n: int) -> None:
        """Deletes ``n`` characters at ``pos``, as a text delete the server can check."""
        if n <= 0 or pos < 0 or pos + n > len(self.text):
            raise ot.InvalidOp(f"cannot delete {n} at {pos} of {len(self.text)} characters")
        gone: ot.Component = {"d": self.text[pos : pos + n]}
        self.submit([pos, gone] if pos else [gone])

    def set_cursor(self, anchor: int | None, head: int | None = None) -> None:
        """Our cursor (``None`` clears it); sent as presence whenever nothing is pending."""
        cursor = (
            None if anchor is None else {"anchor": anchor, "head": anchor if head is None else head}
        )
        self._queue_frames(self.core.set_cursor(cursor))

    def subscribe(self) -> asyncio.Queue[ClientEvent]:
        """A queue receiving every event from now on: op, ack, reset, presence, join, leave,
        error and status (``data["status"]``)."""
        queue: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self._queues.append(queue)
        return queue

    # The API takes timeouts like asyncio.wait_for, for short call sites in tests and bots.
    async def wait_synced(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Waits until every local edit is acknowledged (no pending op, no buffer)."""
        await self._wait(lambda: self.core.pending is None, timeout)

    async def wait_rev(self, rev: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await self._wait(lambda: self.core.rev >= rev, timeout)

    async def close(self) -> None:
        self._set_status("closed")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()

    # -- I/O --------------------------------------------------------------------------------

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not predicate():
                if self._status in _TERMINAL:
                    raise ClientError(f"the client is {self._status}")
                changed = self._changed
                await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _emit(self, event: ClientEvent) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

    def _set_status(self, status: Status, **extra: Any) -> None:
        if self._status != status and self._status not in _TERMINAL:
            self._status = status
            self._emit(ClientEvent("status", {"status": status, **extra}))
        self._notify()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _queue_frames(self, frames: list[Frame]) -> None:
        for frame in frames:
            self._outbox.put_nowait(frame)

    def _apply(self, fx: Effects) -> None:
        self._queue_frames(fx.send)
        for event in fx.events:
            self._emit(event)
        if fx.retry is not None:
            self._spawn(self._resend_later(fx.retry))
        self._notify()

    async def _resend_later(self, frame: Frame) -> None:
        await asyncio.sleep(self.retry_delay * (1 + random.random()))  # rate-limit pause
        pending = self.core.pending
        if pending is not None and pending.seq == frame["seq"]:
            self._outbox.put_nowait(self.core.pending_frame())

    async def _open(self) -> ClientConnection:
        """Connects (with ``since`` after the first time) and handles the ``init`` frame."""
        self._set_status("connecting")
        query: list[str] = []
        headers: dict[str, str] = {}
        if self._auth == "header":
            headers["Authorization"] = f"Bearer {self._token}"
        elif self._auth == "query":
            query.append(f"token={quote(self._token)}")
        else:
            query.append(f"ticket={quote(await self._ticket())}")
        if self.core.initialised:
            query.append(f"since={self.core.rev}")
        url = self._url + ("?" + "&".join(query) if query else "")
        ws = await ws_connect(url, additional_headers=headers, max_size=None)
        try:
            init = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if init.get("type") != "init":
                raise ClientError(f"expected init, got {init.get('type')!r}")
        except BaseException:
            await ws.close()
            raise
        # Frames queued for the old socket are stale: the init handling resends what is pending.
        self._outbox = asyncio.Queue()
        self._apply(self.core.receive(init))
        self._set_status("online")
        return ws

    async def _ticket(self) -> str:
        scheme, netloc, _, _, _ = urlsplit(self._url)
        http = {"ws": "http", "wss": "https"}[scheme]
        request = urllib.request.Request(
            f"{http}://{netloc}/tickets",
            json.dumps({"doc": self.doc_id}).encode(),
            {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )

        def post() -> str:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(json.load(response)["ticket"])

        return await asyncio.to_thread(post)

    async def _run(self) -> None:
        while self._ws is not None:
            code = await self._serve(self._ws)
            stop = _STOP_CODES.get(code)
            if stop is not None or not self._auto_reconnect:
                self.close_code = code
                self._set_status(stop or "closed", code=code)
                return
            self._set_status("offline", code=code)
            # That connection worked, so start over: at once after 1001/1013, else backed off.
            attempt = 0 if code in _SOON_CODES else 1
            self._ws = None
            while self._ws is None:
                cap = min(self.max_delay, self.min_delay * 2**attempt)
                await asyncio.sleep(cap * random.random())  # backoff with full jitter
                attempt += 1
                try:
                    self._ws = await self._open()
                except (InvalidStatus, urllib.error.HTTPError) as error:
                    status = (
                        error.code
                        if isinstance(error, urllib.error.HTTPError)
                        else error.response.status_code
                    )
                    stop = _STOP_HTTP.get(status)
                    if stop is not None:  # refused (token expired, document gone): give up
                        self._set_status(stop, code=status)
                        return
                except (OSError, ConnectionClosed, TimeoutError, ClientError):
                    pass  # the server is down or restarting: try again later

    async def _serve(self, ws: ClientConnection) -> int:
        """Reads frames until the socket closes; returns the close code."""
        writer = asyncio.create_task(self._write(ws, self._outbox))
        try:
            async for message in ws:
                fx = self.core.receive(json.loads(message))
                self._apply(fx)
                if fx.reconnect:
                    await ws.close(4000, "revision gap: reconnecting")
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        return 1006 if ws.close_code is None else ws.close_code

    async def _write(self, ws: ClientConnection, outbox: asyncio.Queue[Frame]) -> None:
        try:
            while True:
                await ws.send(json.dumps(await outbox.get()))
        except ConnectionClosed:
            pass  # the reader sees the close too and reconnects
