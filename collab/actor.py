"""One asyncio task per loaded document: it sequences ops, commits them, then fans them out.

The actor owns a :class:`~collab.document.DocumentState`. Messages wait in a bounded inbox; the
actor takes everything that is ready at once, so ops that arrive together share one transaction
(group commit) and one outgoing frame per peer. It never awaits a peer: frames go into each
peer's bounded outbox, drained by that peer's own writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from collab import ot, protocol
from collab.document import Batch, DocumentState, Submission, SubmitError
from collab.fanout import Fanout
from collab.metrics import Metrics
from collab.store import Store, StoredOp

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_DELETED = 4404
CLOSE_INTERNAL = 1011
MAX_BATCH = 512
MAX_SINCE_OPS = 10_000


class Peer(Protocol):
    """A connected client, as the actor sees it."""

    client_id: str
    user_id: str
    name: str
    cursor: dict[str, int] | None

    def send(self, frame: bytes) -> None: ...

    def send_presence(self, client_id: str, frame: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class DocumentNotFound(Exception):
    pass


class DocumentGone(Exception):
    """The actor stopped (the document was deleted or the server is shutting down)."""


@dataclass(slots=True)
class Submit:
    submission: Submission
    origin: Peer | None
    reply: asyncio.Future[int] | None
    received: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class Join:
    peer: Peer
    since: int | None
    done: asyncio.Future[None]


@dataclass(slots=True)
class Leave:
    peer: Peer


@dataclass(slots=True)
class Presence:
    peer: Peer
    cursor: dict[str, int] | None
    rev: int


@dataclass(slots=True)
class Read:
    reply: asyncio.Future[tuple[str, int]]


@dataclass(slots=True)
class Delete:
    reply: asyncio.Future[bool]


@dataclass(slots=True)
class Stop:
    pass


@dataclass(slots=True)
class Wake:
    """Re-evaluates idleness after the last lease is released."""


@dataclass(slots=True)
class Remote:
    """Something another server process published for this document."""

    message: dict[str, Any]


@dataclass(slots=True)
class Resync:
    """Reads ops other processes committed that this one may have missed."""


Message = Submit | Join | Leave | Presence | Read | Delete | Stop | Wake | Remote | Resync
_BACKGROUND = (Wake, Remote, Resync)
POLL_SECONDS = 0.5
PRUNE_SECONDS = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def _wire(stored: StoredOp) -> dict[str, Any]:
    return {
        "rev": stored.rev,
        "op": stored.op,
        "src": stored.src,
        "seq": stored.seq,
        "user": stored.user_id,
        "at": stored.created_at.isoformat(),
    }


def _op_item(stored: StoredOp) -> bytes:
    """The ``op`` frame of a committed op, as peers receive it."""
    return protocol.encode(
        protocol.op_frame(stored.rev, stored.op, stored.src, stored.seq, stored.user_id)
    )


def _unwire(item: dict[str, Any]) -> StoredOp:
    return StoredOp(
        item["rev"],
        item["op"],
        item["src"],
        item["seq"],
        item["user"],
        datetime.fromisoformat(item["at"]),
    )


@dataclass(frozen=True, slots=True)
class ActorConfig:
    inbox_size: int = 4096
    snapshot_every: int = 100
    idle_seconds: float = 60.0
    history_window: int = 1000
    max_rebase: int = 100_000
    # A document's deliveries are paced so that it sends at most about this many frames a
    # second: a room of n peers is flushed at most every n / frames_per_second seconds. Small
    # rooms never wait (20 peers: 1 ms); a crowd gets fewer, fuller `ops` frames.
    frames_per_second: float = 20_000.0


@dataclass(slots=True)
class Unsent:
    """A committed op (or a repeated ack) waiting for the next delivery tick."""

    item: bytes | None  # the `op` frame peers get; None: only the origin hears (an old ack)
    origin: Peer | None
    ack: bytes | None


class DocumentActor:
    def __init__(
        self,
        doc_id: str,
        store: Store,
        config: ActorConfig,
        metrics: Metrics,
        on_exit: Callable[[DocumentActor], None],
        fanout: Fanout | None = None,
    ) -> None:
        self.doc_id = doc_id
        self._fanout = fanout
        self._remote_peers: dict[str, dict[str, Any]] = {}
        self._last_activity = time.monotonic()
        self._store = store
        self._config = config
        self._metrics = metrics
        self._on_exit = on_exit
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(config.inbox_size)
        self._peers: dict[str, Peer] = {}
        self._cursor_revs: dict[str, int] = {}  # local client -> revision its cursor is valid at
        self._state: DocumentState | None = None
        self._snapshot_rev = 0
        self._leases = 0
        self._running = True
        self._resync_due = False
        self._background: set[asyncio.Task[None]] = set()
        self._unsent: list[Unsent] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._last_flush = 0.0
        self.loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"actor:{doc_id}")

    # -- the interface used by connections, routes and the registry ---------------------------

    @property
    def alive(self) -> bool:
        return self._running

    def lease(self) -> None:
        self._leases += 1

    def release(self) -> None:
        self._leases -= 1
        if self._leases == 0 and self._running:
            # A full inbox means busy, so not idle: the loop re-checks after that batch anyway.
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(Wake())

    async def submit(self, submission: Submission, origin: Peer | None) -> asyncio.Future[int]:
        """Queues an op; the returned future resolves to its revision once it is durable."""
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._put(Submit(submission, origin, reply))
        return reply

    async def submit_from_peer(self, submission: Submission, origin: Peer) -> None:
        """Queues a peer's op; the peer hears back through its outbox (ack or error)."""
        await self._put(Submit(submission, origin, None))

    async def join(self, peer: Peer, since: int | None) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._put(Join(peer, since, done))
        await done

    def leave(self, peer: Peer) -> None:
        """Queues a departure without waiting: it is called from cleanup code."""
        if not self._running:
            return
        try:
            self._inbox.put_nowait(Leave(peer))
        except asyncio.QueueFull:
            task = asyncio.create_task(self._inbox.put(Leave(peer)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def presence(self, peer: Peer, cursor: dict[str, int] | None, rev: int) -> None:
        await self._put(Presence(peer, cursor, rev))

    async def read(self) -> tuple[str, int]:
        reply: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        await self._put(Read(reply))
        return await reply

    async def delete(self) -> bool:
        reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._put(Delete(reply))
        return await reply

    async def stop(self) -> None:
        if self._running:
            await self._put(Stop())
        await asyncio.shield(self._task)

    async def _put(self, message: Message) -> None:
        if not self._running:
            raise DocumentGone(self.doc_id)
        await self._inbox.put(message)

    def post(self, message: Remote | Resync) -> None:
        """Queues fan-out work without waiting; if the inbox is full, a resync covers it."""
        if not self._running:
            return
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            self._resync_due = True

    # -- the task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            # Subscribe first: whatever is published while loading waits in the inbox.
            if self._fanout is not None:
                await self._fanout.subscribe(self.doc_id)
            await self._load()
            # Ask the other processes who is connected there; they answer with presence.
            self._publish({"kind": "who"})
        except BaseException as error:
            self._running = False
            self._on_exit(self)
            await self._unsubscribe()
            self.loaded.set_exception(error)
            return
        self.loaded.set_result(None)
        unload = True
        try:
            while True:
                message = await self._next_message()
                if message is None:
                    break
                messages = [message]
                while len(messages) < MAX_BATCH and not self._inbox.empty():
                    messages.append(self._inbox.get_nowait())
                unload = await self._handle(messages)
                if not self._running:
                    break
        except Exception:
            log.exception("actor for %s failed", self.doc_id)
            for peer in list(self._peers.values()):
                peer.close(CLOSE_INTERNAL, "internal error")
        finally:
            self._running = False
            self._on_exit(self)
            await self._unsubscribe()
            if unload:
                await self._final_snapshot()
            self._fail_leftovers()

    async def _unsubscribe(self) -> None:
        if self._fanout is not None:
            try:
                await self._fanout.unsubscribe(self.doc_id)
            except Exception:
                log.exception("unsubscribe failed for %s", self.doc_id)

    def _in_use(self) -> bool:
        return bool(self._peers or self._leases)

    def _wait_limit(self) -> float | None:
        """How long to wait for a message before doing timed work (unload, poll, prune)."""
        limits = []
        if not self._in_use():
            limits.append(self._config.idle_seconds - (time.monotonic() - self._last_activity))
        if self._fanout is not None:
            if not self._fanout.healthy or self._resync_due:
                limits.append(POLL_SECONDS)
            elif self._remote_peers:
                limits.append(PRUNE_SECONDS)
        return max(0.0, min(limits)) if limits else None

    async def _next_message(self) -> Message | None:
        """The next message, or None when the document has been idle long enough to unload."""
        while True:
            if self._resync_due:
                return Resync()
            limit = self._wait_limit()
            try:
                if limit is None:
                    return await self._inbox.get()
                async with asyncio.timeout(limit):
                    return await self._inbox.get()
            except TimeoutError:
                pass
            if self._fanout is not None:
                if not self._fanout.healthy:
                    return Resync()
                self._prune_remote_peers()
            idle_for = time.monotonic() - self._last_activity
            if not self._in_use() and idle_for >= self._config.idle_seconds:
                return None

    async def _load(self) -> None:
        loaded = await self._store.load_document(self.doc_id)
        if loaded is None:
            raise DocumentNotFound(self.doc_id)
        text = loaded.snapshot_content
        for stored in loaded.ops:
            text = ot.apply(text, stored.op)
        self._state = DocumentState(
            self.doc_id,
            text,
            loaded.info.rev,
            loaded.ops[-self._config.history_window :],
            window=self._config.history_window,
            max_rebase=self._config.max_rebase,
        )
        self._snapshot_rev = loaded.snapshot_rev

    @property
    def state(self) -> DocumentState:
        assert self._state is not None, "used before load"
        return self._state

    async def _handle(self, messages: list[Message]) -> bool:
        """Handles a run of ready messages; False means: do not snapshot (it was deleted)."""
        pending: list[Submit] = []
        if not all(isinstance(m, _BACKGROUND) for m in messages):
            self._last_activity = time.monotonic()
        for message in messages:
            if isinstance(message, Submit):
                pending.append(message)
                continue
            if pending:
                await self._sequence(pending)
                pending = []
            match message:
                case Join(peer, since, done):
                    await self._join(peer, since)
                    if not done.done():
                        done.set_result(None)
                case Leave(peer):
                    self._leave(peer)
                case Presence(peer, cursor, rev):
                    self._presence(peer, cursor, rev)
                case Read(reply):
                    if not reply.done():
                        reply.set_result((self.state.text, self.state.rev))
                case Delete(reply):
                    self._flush()
                    deleted = await self._store.delete_document(self.doc_id)
                    for peer in list(self._peers.values()):
                        peer.close(CLOSE_DELETED, "document deleted")
                    self._peers.clear()
                    self._running = False
                    if not reply.done():
                        reply.set_result(deleted)
                    return False
                case Stop():
                    self._flush()
                    for peer in list(self._peers.values()):
                        peer.close(CLOSE_GOING_AWAY, "server shutting down")
                    self._peers.clear()
                    self._running = False
                case Remote(remote):
                    await self._remote(remote)
                case Resync():
                    await self._resync()
                case Wake():
                    pass
        if pending:
            await self._sequence(pending)
        return True

    # -- ops --------------------------------------------------------------------------------

    async def _sequence(self, submits: list[Submit]) -> None:
        state = self.state
        submissions = [s.submission for s in submits]
        unknown = [(s.src, s.seq) for s in submissions if state.needs_lookup(s.src, s.seq)]
        if unknown:
            found = await self._store.find_revs(self.doc_id, unknown)
            for (src, seq), rev in found.items():
                state.note_stored_rev(src, seq, rev)
        older = await self._older_ops(submissions)
        while True:
            batch = state.stage(submissions, utcnow(), older)
            try:
                committed = await self._store.commit(
                    self.doc_id, batch.base_rev, batch.ops, self._snapshot_for(batch)
                )
            except Exception:
                log.exception("commit failed for %s", self.doc_id)
                self._fail(submits, "the document could not be stored")
                return
            if committed:
                break
            missed = await self._store.load_ops(self.doc_id, after=state.rev)
            if not missed:
                self._fail(submits, "the document is gone")
                return
            state.apply_committed(missed)
            self._broadcast_foreign(missed)
        if self._snapshot_for(batch) is not None:
            self._snapshot_rev = batch.rev
        state.accept(batch)
        self._deliver(batch, submits)
        if self._fanout is not None and batch.ops:
            self._fanout.publish(self.doc_id, {"kind": "ops", "ops": [_wire(s) for s in batch.ops]})

    async def _older_ops(self, submissions: Sequence[Submission]) -> list[StoredOp]:
        state = self.state
        oldest = min(s.base_rev for s in submissions)
        if oldest >= state.first_held_rev or oldest < 0 or state.rev - oldest > state.max_rebase:
            return []
        return await self._store.load_ops(self.doc_id, after=oldest, until=state.first_held_rev)

    def _snapshot_for(self, batch: Batch) -> tuple[int, str] | None:
        every = self._config.snapshot_every
        if batch.ops and batch.rev // every > self._snapshot_rev // every:
            return (batch.rev, batch.text)
        return None

    def _deliver(self, batch: Batch, submits: list[Submit]) -> None:
        now = time.perf_counter()
        unsent = self._unsent
        origins: dict[int, Peer | None] = {}
        for submit, outcome in zip(submits, batch.outcomes, strict=True):
            origin, reply, seq = submit.origin, submit.reply, submit.submission.seq
            if outcome.error is not None:
                self._refuse(submit, outcome.error)
                continue
            if outcome.committed is not None:
                origins[outcome.rev] = origin
                self._metrics.op_latency.observe(now - submit.received)
            elif origin is not None:
                # A resend of an op already committed: ack it again with its original revision,
                # in order with the ops still waiting to go out.
                unsent.append(Unsent(None, origin, protocol.ack_frame(seq, outcome.rev)))
            if reply is not None and not reply.done():
                reply.set_result(outcome.rev)
        self._metrics.ops_applied += len(batch.ops)
        for s in batch.ops:
            origin = origins[s.rev]
            ack = None if origin is None else protocol.ack_frame(s.seq, s.rev)
            unsent.append(Unsent(_op_item(s), origin, ack))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._unsent or self._flush_timer is not None:
            return
        loop = asyncio.get_running_loop()
        due = self._last_flush + len(self._peers) / self._config.frames_per_second
        if loop.time() >= due:
            self._flush()
        else:
            self._flush_timer = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        """Sends what was committed since the last tick: one frame per peer, encoded once.

        Peers that authored none of it share one frame; an author gets its own, with acks in
        place of its ops. Anything that must follow these ops in order calls this first.
        """
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        unsent, self._unsent = self._unsent, []
        if not unsent:
            return
        self._last_flush = asyncio.get_running_loop().time()
        batch = protocol.SharedBatch([u.item for u in unsent])
        acks_of: dict[int, list[tuple[int, bytes]]] = {}
        for index, u in enumerate(unsent):
            if u.origin is not None and u.ack is not None:
                acks_of.setdefault(id(u.origin), []).append((index, u.ack))
        shared = batch.shared()
        for peer in self._peers.values():
            acks = acks_of.get(id(peer))
            if acks is not None:
                peer.send(batch.with_acks(acks))
            elif shared is not None:
                peer.send(shared)

    def _broadcast_foreign(self, ops: Sequence[StoredOp]) -> None:
        """Fans out ops another writer committed, so every peer keeps a gapless sequence."""
        self._unsent.extend(Unsent(_op_item(s), None, None) for s in ops)
        self._flush()

    def _refuse(self, submit: Submit, error: SubmitError) -> None:
        if submit.origin is not None and submit.reply is None:
            submit.origin.send(
                protocol.error_frame(error.code, error.message, submit.submission.seq)
            )
        if submit.reply is not None and not submit.reply.done():
            submit.reply.set_exception(error)

    def _fail(self, submits: list[Submit], reason: str) -> None:
        for submit in submits:
            if submit.reply is not None and not submit.reply.done():
                submit.reply.set_exception(DocumentGone(reason))
            elif submit.origin is not None:
                submit.origin.close(CLOSE_INTERNAL, reason)

    # -- peers ------------------------------------------------------------------------------

    async def _join(self, peer: Peer, since: int | None) -> None:
        # The newcomer starts at state.rev: everyone else must have been sent up to there too.
        self._flush()
        state = self.state
        frame: dict[str, Any] = {
            "type": "init",
            "doc": self.doc_id,
            "rev": state.rev,
            "content": state.text,
            "client": peer.client_id,
            "user": {"id": peer.user_id, "name": peer.name},
            "access": getattr(peer, "access", "write"),
            "peers": [
                {
                    "client": p.client_id,
                    "user": p.user_id,
                    "name": p.name,
                    "cursor": self._cursor_now(p.cursor, self._cursor_revs.get(p.client_id)),
                }
                for p in self._peers.values()
            ]
            + [
                {
                    **{key: remote[key] for key in ("client", "user", "name")},
                    "cursor": self._cursor_now(remote["cursor"], remote.get("rev")),
                }
                for remote in self._remote_peers.values()
            ],
        }
        if since is not None:
            missed = await self._ops_since(since)
            if missed is not None:
                frame["ops"] = [
                    {"rev": s.rev, "op": s.op, "src": s.src, "seq": s.seq} for s in missed
                ]
        peer.send(protocol.encode(frame))
        announce = protocol.encode(
            {"type": "join", "client": peer.client_id, "user": peer.user_id, "name": peer.name}
        )
        for other in self._peers.values():
            other.send(announce)
        self._peers[peer.client_id] = peer
        self._publish(
            {
                "kind": "join",
                "client": peer.client_id,
                "user": peer.user_id,
                "name": peer.name,
                "cursor": None,
            }
        )

    async def _ops_since(self, since: int) -> list[StoredOp] | None:
        state = self.state
        if since < 0 or since > state.rev or state.rev - since > MAX_SINCE_OPS:
            return None
        held = state.recent_ops(since)
        if held is not None:
            return held
        older = await self._store.load_ops(self.doc_id, after=since, until=state.first_held_rev)
        return older + (state.recent_ops(state.first_held_rev) or [])

    def _leave(self, peer: Peer) -> None:
        if self._peers.pop(peer.client_id, None) is None:
            return
        self._cursor_revs.pop(peer.client_id, None)
        self._announce_leave(peer.client_id, peer.user_id, peer.name)
        self._publish(
            {"kind": "leave", "client": peer.client_id, "user": peer.user_id, "name": peer.name}
        )

    def _announce_leave(self, client_id: str, user_id: str, name: str) -> None:
        frame = protocol.encode(
            {"type": "leave", "client": client_id, "user": user_id, "name": name}
        )
        for other in self._peers.values():
            other.send(frame)

    def _presence(self, peer: Peer, cursor: dict[str, int] | None, rev: int) -> None:
        if peer.client_id not in self._peers:
            return
        self._flush()  # the cursor is sent at state.rev, so the peers must have those ops
        state = self.state
        if cursor is not None:
            anchor = state.transform_cursor(cursor["anchor"], rev) if rev <= state.rev else None
            head = state.transform_cursor(cursor["head"], rev) if rev <= state.rev else None
            cursor = None if anchor is None or head is None else {"anchor": anchor, "head": head}
        peer.cursor = cursor
        self._cursor_revs[peer.client_id] = state.rev
        frame = protocol.encode(
            {
                "type": "presence",
                "client": peer.client_id,
                "user": peer.user_id,
                "name": peer.name,
                "cursor": cursor,
                "rev": state.rev,
            }
        )
        for other in self._peers.values():
            if other is not peer:
                other.send_presence(peer.client_id, frame)
        self._publish_presence(peer, cursor)

    def _cursor_now(self, cursor: dict[str, int] | None, rev: int | None) -> dict[str, int] | None:
        """A stored cursor, valid at ``rev``, moved over the ops since (None if not held)."""
        state = self.state
        if cursor is None or rev is None or rev >= state.rev:
            return cursor
        anchor = state.transform_cursor(cursor["anchor"], rev)
        head = state.transform_cursor(cursor["head"], rev)
        return None if anchor is None or head is None else {"anchor": anchor, "head": head}

    # -- other server processes -------------------------------------------------------------

    def _publish(self, message: dict[str, Any]) -> None:
        if self._fanout is not None:
            self._fanout.publish(self.doc_id, message)

    def _publish_presence(self, peer: Peer, cursor: dict[str, int] | None) -> None:
        """Tells the other processes where ``peer``'s cursor is, at the current revision."""
        self._publish(
            {
                "kind": "presence",
                "client": peer.client_id,
                "user": peer.user_id,
                "name": peer.name,
                "cursor": cursor,
                "rev": self.state.rev,
            }
        )

    async def _remote(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "ops":
            ops = [_unwire(item) for item in message["ops"]]
            state = self.state
            if not ops or ops[-1].rev <= state.rev:
                return
            if ops[0].rev > state.rev + 1:
                await self._resync()  # a gap: the database has what was not heard
                return
            fresh = [stored for stored in ops if stored.rev > state.rev]
            state.apply_committed(fresh)
            self._broadcast_foreign(fresh)
        elif kind in ("join", "presence"):
            client = message["client"]
            known = client in self._remote_peers
            self._remote_peers[client] = {
                "client": client,
                "user": message["user"],
                "name": message["name"],
                "cursor": message.get("cursor"),
                "node": message["node"],
                "rev": message.get("rev"),
            }
            if kind == "join" or not known:
                frame = protocol.encode(
                    {
                        "type": "join",
                        "client": client,
                        "user": message["user"],
                        "name": message["name"],
                    }
                )
                for peer in self._peers.values():
                    peer.send(frame)
            if kind == "presence":
                frame = protocol.encode(
                    {
                        "type": "presence",
                        "client": client,
                        "user": message["user"],
                        "name": message["name"],
                        "cursor": message.get("cursor"),
                        "rev": message["rev"],
                    }
                )
                for peer in self._peers.values():
                    peer.send_presence(client, frame)
        elif kind == "who":
            for peer in self._peers.values():
                cursor = self._cursor_now(peer.cursor, self._cursor_revs.get(peer.client_id))
                self._publish_presence(peer, cursor)
        elif kind == "leave" and self._remote_peers.pop(message["client"], None) is not None:
            self._announce_leave(message["client"], message["user"], message["name"])

    async def _resync(self) -> None:
        """Catches up with ops committed by other processes, from the database."""
        self._resync_due = False
        state = self.state
        try:
            missed = await self._store.load_ops(self.doc_id, after=state.rev)
        except Exception:
            log.exception("resync failed for %s", self.doc_id)
            self._resync_due = True
            return
        if missed:
            state.apply_committed(missed)
            self._broadcast_foreign(missed)

    def _prune_remote_peers(self) -> None:
        """Forgets peers of processes that stopped beating (killed, not shut down)."""
        assert self._fanout is not None
        for client, remote in list(self._remote_peers.items()):
            if not self._fanout.node_alive(remote["node"]):
                del self._remote_peers[client]
                self._announce_leave(client, remote["user"], remote["name"])

    # -- unloading --------------------------------------------------------------------------

    async def _final_snapshot(self) -> None:
        state = self._state
        if state is None or state.rev == self._snapshot_rev:
            return
        try:
            await self._store.save_snapshot(self.doc_id, state.rev, state.text, utcnow())
            self._snapshot_rev = state.rev
        except Exception:
            log.exception("final snapshot failed for %s", self.doc_id)

    def _fail_leftovers(self) -> None:
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            match message:
                case Submit() as submit:
                    self._fail([submit], "the document was unloaded")
                case Join(peer, _, done):
                    peer.close(CLOSE_GOING_AWAY, "document unloaded")
                    if not done.done():
                        done.set_exception(DocumentGone(self.doc_id))
                case Read(reply) | Delete(reply):
                    if not reply.done():
                        reply.set_exception(DocumentGone(self.doc_id))
                case _:
                    pass
