"""A small asyncio client of the WebSocket protocol (SPEC §4), for tests, benchmarks and bots.

:class:`OTClientState` is the OT client without I/O (frames in; frames to send and events out),
as python-websockets splits its protocol from its I/O; :class:`CollabClient` runs it over a
``websockets`` connection. The OT state is ShareDB's: *synchronised*, *awaiting* (one op in
flight) or *awaiting_with_buffer* (later edits composed into a buffer, sent on the ack). A remote
op ``s`` meeting pending ``p``: ``p' = transform(p, s, "left")``, ``s' = transform(s, p,
"right")``, then ``s'`` against the buffer likewise. The client also keeps the server's text at
``rev`` (``confirmed``), to check a rebase and to rebase local edits over a text diff when no
list of ops can be had.

Unacknowledged edits are never dropped on a reconnect; the browser client
(``static/collab-client.js``) does the same, step for step:

* Close 1001 and 1013 reconnect at once, other drops with backoff and jitter, always with
  ``?since=rev``. The ops listed by ``init`` are applied as remote ops; our in-flight op found
  there by (src, seq) counts as acked, otherwise it is resent with its (src, seq), so the
  server applies it once whatever happened to the first copy.
* An ``init`` without ``ops`` although the revision moved (history too far back for the server
  to list) asks the I/O layer for ``GET /documents/{id}/history?since=rev`` (``Effects.history``)
  and rebases over those ops exactly as over ``init.ops``.
* Only when that history cannot be had (refused, or a revision that went back), or the rebase
  does not reproduce the server's text, the client falls back: the server's content wins and the
  pending op and buffer are transformed over the text diff between what we knew of the server
  and its content now (event ``error`` with code ``resync``, then ``reset``). The in-flight op
  keeps its (src, seq), so if the server had it after all, it answers with an old ack (below).
* An ack the stream cannot explain. At a revision we already hold: the server says our op is
  in its text already, so it is taken out of ours and the buffer is rebased past that (event
  ``error``, code ``resync``). Beyond the next revision: ops were missed. Either way the client
  then reconnects with ``since`` to check its text, with a backoff that grows while such
  surprises repeat, never in a tight loop.
* ``bad_revision`` answering our in-flight op (its base fell out of the server's rebase
  window): the ops since ``rev`` are fetched from ``/history`` (``Effects.history``), the op is
  rebased past them and sent again with its (src, seq). ``rate_limited`` only delays: the same
  frame is resent after a pause. Other refusals (``invalid_op``, ``read_only``,
  ``document_too_large``) are final: the server will never apply that op, and the buffer was
  built on it, so both go and the text goes back to ``confirmed`` (event ``reset``).
* Close codes come from :mod:`collab.errors`: ``RECONNECT_SOON`` reconnect at once, ``STOP``
  stop the client (1008 status ``forbidden``, 4404 ``deleted``, others ``failed``).
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
from collab.errors import RECONNECT_SOON, STOP, CloseCode, CollabError, ErrorCode

Frame: TypeAlias = dict[str, Any]
OTState = Literal["synchronised", "awaiting", "awaiting_with_buffer"]
Status = Literal["connecting", "online", "offline", "closed", "forbidden", "deleted", "failed"]
EventKind = Literal["op", "ack", "reset", "presence", "join", "leave", "error", "status"]
Auth = Literal["header", "query", "ticket"]

_STOP_STATUS: dict[int, Status] = {CloseCode.POLICY: "forbidden", CloseCode.DELETED: "deleted"}
_STOP_HTTP: dict[int, Status] = {401: "forbidden", 403: "forbidden", 404: "deleted"}
_TERMINAL: tuple[Status, ...] = ("closed", "forbidden", "deleted", "failed")
HISTORY_PAGE = 1000  # the most ops GET /history returns at once


class ClientError(CollabError):
    """The client cannot do this now (closed, not writable, or stopped by the server)."""

    code = "client"


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


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """Ops the state needs from ``GET /history``: those after ``since``, up to ``until``
    (``None``: up to the newest). Answer with :meth:`OTClientState.receive_history`, or with
    :meth:`OTClientState.history_unavailable` if they cannot be had."""

    since: int
    until: int | None


@dataclass(slots=True)
class Effects:
    """What handling frames asks of the I/O layer."""

    send: list[Frame] = field(default_factory=list)
    events: list[ClientEvent] = field(default_factory=list)
    retry: Frame | None = None  # a rate-limited op frame, to resend after a pause
    reconnect: bool = False  # the revisions went wrong: drop the socket, reconnect with since
    history: HistoryRequest | None = None  # fetch these ops before handling another frame


def text_diff(old: str, new: str) -> ot.Op:
    """One op turning ``old`` into ``new``: the replaced middle between the common prefix and
    suffix. Deletes carry their text, so the server checks them."""
    if old == new:
        return []
    limit = min(len(old), len(new))
    prefix = 0
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    removed, inserted = old[prefix : len(old) - suffix], new[prefix : len(new) - suffix]
    op: ot.Op = [prefix] if prefix else []
    if removed:
        op.append({"d": removed})
    if inserted:
        op.append(inserted)
    return ot.normalize(op)


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
        self._held_init: Frame | None = None  # a reconnect's init, waiting for the history

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
                    break  # the rest arrives again after the reconnect
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

    def receive_history(self, ops: list[Frame]) -> Effects:
        """The ops a :class:`HistoryRequest` asked for (``{rev, op, src, seq}``, oldest first)."""
        fx = Effects()
        held, self._held_init = self._held_init, None
        if held is not None:
            self._catch_up(held, ops, fx)
            return fx
        # A refused op: rebase it past what the server holds now, then send it again.
        self._apply_listed(ops, fx)
        if fx.reconnect:
            return fx
        if self.pending is not None:
            fx.send.append(self.pending_frame())
        return fx

    def history_unavailable(self, reason: str, *, final: bool = True) -> Effects:
        """The history could not be had. ``final`` (refused, not a passing failure): a held init
        falls back to its content. Otherwise the I/O layer reconnects (``Effects.reconnect``)
        and the next init decides."""
        fx = Effects()
        held, self._held_init = self._held_init, None
        if held is None or not final:
            fx.events.append(ClientEvent("error", {"code": "history", "message": reason}))
            fx.reconnect = True
            return fx
        self._resync(held, f"history unavailable ({reason})", self.confirmed, fx)
        self._online(held, fx)
        return fx

    # -- frames -----------------------------------------------------------------------------

    def _on_init(self, frame: Frame, fx: Effects) -> None:
        self.client_id = frame["client"]
        self.access = frame.get("access", "write")
        self._held_init = None
        if not self.initialised:
            self.initialised = True
            self._reset(frame["content"], frame["rev"], fx)
        elif "ops" in frame or frame["rev"] == self.rev:
            self._catch_up(frame, frame.get("ops", []), fx)
            return
        elif frame["rev"] > self.rev:
            # The server did not list the ops since our revision: fetch them, then rebase.
            self._held_init = frame
            fx.history = HistoryRequest(self.rev, frame["rev"])
            return
        else:
            message = f"the server went back from revision {self.rev} to {frame['rev']}"
            self._resync(frame, message, self.confirmed, fx)
        self._online(frame, fx)

    def _catch_up(self, frame: Frame, ops: list[Frame], fx: Effects) -> None:
        """A reconnect's ops (listed by init or fetched): rebase over them, check the text."""
        self._apply_listed(ops, fx)
        if fx.reconnect or self.rev != frame["rev"] or self.confirmed != frame["content"]:
            fx.reconnect = False
            # The ops did not lead to the server's text: take it, and rebase by diff from
            # what we last knew of the server (before the ops, if they went wrong midway).
            self._resync(frame, "rebased text differs from the server's", self.confirmed, fx)
        self._online(frame, fx)

    def _apply_listed(self, ops: list[Frame], fx: Effects) -> None:
        sends = len(fx.send)
        for item in ops:
            if fx.reconnect:
                break
            self._on_op({"type": "op", **item}, fx)
        del fx.send[sends:]  # what is still pending is sent once, by the caller

    def _online(self, frame: Frame, fx: Effects) -> None:
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
        empty_ack = rev == self.rev and not self.pending.op
        if rev <= self.rev and not empty_ack:
            self._already_applied(rev, fx)
            return
        if rev != self.rev + 1 and not empty_ack:
            self._gap("ack", rev, fx)
            return
        self.confirmed = ot.apply(self.confirmed, self.pending.op)
        self.rev = rev
        self.pending = None
        fx.events.append(ClientEvent("ack", {"seq": seq, "rev": rev}))
        self._promote_buffer(fx)
        fx.send.extend(self._presence_frames())

    def _already_applied(self, rev: int, fx: Effects) -> None:
        """An ack at a revision we hold as another op: the server says our pending op is in its
        text (``confirmed``) already, so our text holds it twice. Take it out, keep the buffer,
        and reconnect to check the text against the server's."""
        assert self.pending is not None
        message = f"ack at {rev}, expected {self.rev + 1}: the server had this op already"
        fx.events.append(ClientEvent("error", {"code": "resync", "message": message}))
        with_pending = ot.apply(self.confirmed, self.pending.op)
        undo = text_diff(with_pending, self.confirmed)
        self.pending = None
        if self.buffer is not None:
            self.buffer = ot.transform(self.buffer, undo, "left")
        self.text = self.confirmed if self.buffer is None else ot.apply(self.confirmed, self.buffer)
        fx.events.append(ClientEvent("reset", {"rev": self.rev, "text": self.text}))
        self._promote_buffer(fx)
        fx.reconnect = True

    def _promote_buffer(self, fx: Effects) -> None:
        if self.buffer is not None:
            self.last_seq += 1
            self.pending, self.buffer = Pending(self.buffer, self.last_seq), None
            fx.send.append(self.pending_frame())

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
        try:
            s = ot.normalize(frame["op"])
            self.confirmed = ot.apply(self.confirmed, s)
            # Every op here is checked and in normal form (normalize above; submit, compose and
            # transform keep pending and buffer so): the unchecked transform is exact.
            applied = s
            if self.pending is not None:
                p = self.pending.op
                self.pending.op = ot.transform_normal(p, s, "left")
                applied = ot.transform_normal(s, p, "right")
            if self.buffer is not None:
                b = self.buffer
                self.buffer = ot.transform_normal(b, applied, "left")
                applied = ot.transform_normal(applied, b, "right")
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
        code = frame.get("code")
        if code == ErrorCode.RATE_LIMITED:
            fx.retry = self.pending_frame()
        elif code == ErrorCode.BAD_REVISION:
            # Its base is outside what the server will rebase: rebase it here, past what the
            # server holds now, and send it again (same seq: the server never applies it twice).
            fx.history = HistoryRequest(self.rev, None)
        else:
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

    def _resync(self, frame: Frame, why: str, base: str, fx: Effects) -> None:
        """The fallback: the server's content wins; pending and buffer are transformed over the
        diff from ``base`` (what we last knew of the server) to it, and kept."""
        content: str = frame["content"]
        message = f"{why}: taking the server's text at revision {frame['rev']}"
        if self.pending is not None:
            message += " and rebasing unacknowledged edits over the difference"
        fx.events.append(ClientEvent("error", {"code": "resync", "message": message}))
        theirs = text_diff(base, content)
        text = content
        if self.pending is not None:
            p = self.pending.op
            self.pending.op, theirs = (
                ot.transform(p, theirs, "left"),
                ot.transform(theirs, p, "right"),
            )
            text = ot.apply(text, self.pending.op)
        if self.buffer is not None:
            self.buffer = ot.transform(self.buffer, theirs, "left")
            text = ot.apply(text, self.buffer)
        self.text, self.confirmed, self.rev = text, content, frame["rev"]
        if self.pending is not None and not self.pending.op:
            self.pending = None  # undone by the server's own changes
            self._promote_buffer(Effects())  # sent by the caller with the pending frame
        fx.events.append(ClientEvent("reset", {"rev": self.rev, "text": self.text}))

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
        cursor = self.cursor
        if cursor is None:
            return
        anchor = ot.transform_position(cursor["anchor"], op)
        same = cursor["head"] == cursor["anchor"]
        head = anchor if same else ot.transform_position(cursor["head"], op)
        self.cursor = {"anchor": anchor, "head": head}

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
        self._trouble = 0  # protocol surprises since the last ack: lengthens the backoff

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
            if event.kind == "ack":
                self._trouble = 0  # the protocol works again: back to the short backoff
        if fx.reconnect:
            self._trouble += 1
        if fx.retry is not None:
            self._spawn(self._resend_later(fx.retry))
        self._notify()

    async def _settle(self, fx: Effects) -> Effects:
        """Applies ``fx``; while the state asks for history, fetches it and hands it over.

        Frames from the socket wait meanwhile (nobody reads it), as the state requires."""
        self._apply(fx)
        while fx.history is not None:
            request = fx.history
            if self._trouble:
                await asyncio.sleep(self._delay(self._trouble))
            try:
                ops = await self._history(request)
            except urllib.error.HTTPError as error:
                fx = self.core.history_unavailable(f"HTTP {error.code}", final=error.code < 500)
            except (OSError, ValueError, KeyError) as error:
                fx = self.core.history_unavailable(str(error), final=False)
            else:
                fx = self.core.receive_history(ops)
            self._apply(fx)
        return fx

    async def _history(self, request: HistoryRequest) -> list[Frame]:
        """The ops after ``request.since`` (up to ``until``) from ``GET …/history``, in pages."""
        scheme, netloc, _, _, _ = urlsplit(self._url)
        base = f"{ {'ws': 'http', 'wss': 'https'}[scheme] }://{netloc}"
        path = f"/documents/{quote(self.doc_id, safe='')}/history"
        headers = {"Authorization": f"Bearer {self._token}"}

        def page(since: int, limit: int) -> Frame:
            request = urllib.request.Request(
                f"{base}{path}?since={since}&limit={limit}", headers=headers
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                body: Frame = json.load(response)
                return body

        ops: list[Frame] = []
        cursor, until = request.since, request.until
        while until is None or cursor < until:
            limit = HISTORY_PAGE if until is None else min(HISTORY_PAGE, until - cursor)
            body = await asyncio.to_thread(page, cursor, limit)
            items = [
                o for o in body["ops"] if o["rev"] > cursor and (until is None or o["rev"] <= until)
            ]
            if items:
                ops.extend(items)
                cursor = items[-1]["rev"]
            if until is None and body.get("next") is None:
                break
            if not items:
                raise ValueError(f"the history ends at revision {cursor}")
        return ops

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return min(self.max_delay, self.min_delay * 2.0**attempt) * random.random()

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
        try:
            fx = await self._settle(self.core.receive(init))
        except BaseException:
            await ws.close()
            raise
        if fx.reconnect:
            await ws.close(4000, "history unavailable: reconnecting")
            raise ClientError("the reconnect could not be completed")
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
            if code in STOP or not self._auto_reconnect:
                self.close_code = code
                ended = _STOP_STATUS.get(code, "failed") if code in STOP else "closed"
                self._set_status(ended, code=code)
                return
            self._set_status("offline", code=code)
            # That connection worked, so start over: at once after 1001/1013, else backed off,
            # and longer while the protocol keeps going wrong (impossible acks, gaps).
            attempt = max(self._trouble, 0 if code in RECONNECT_SOON else 1)
            self._ws = None
            while self._ws is None:
                await asyncio.sleep(self._delay(attempt))
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
                fx = await self._settle(self.core.receive(json.loads(message)))
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
