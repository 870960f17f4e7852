"""One asyncio task per loaded document: it sequences ops, commits them, then fans them out.

The actor owns a :class:`~collab.document.DocumentState`. Messages wait in a bounded inbox; the
actor takes everything that is ready at once, so ops that arrive together share one transaction
(group commit) and one outgoing frame per peer. It never awaits a peer: frames go into each
peer's bounded outbox, drained by that peer's own writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from collab import ot, protocol
from collab.document import Batch, DocumentState, Submission, SubmitError
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


Message = Submit | Join | Leave | Presence | Read | Delete | Stop | Wake


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ActorConfig:
    inbox_size: int = 4096
    snapshot_every: int = 100
    idle_seconds: float = 60.0
    history_window: int = 1000
    max_rebase: int = 100_000


class DocumentActor:
    def __init__(
        self,
        doc_id: str,
        store: Store,
        config: ActorConfig,
        metrics: Metrics,
        on_exit: Callable[[DocumentActor], None],
    ) -> None:
        self.doc_id = doc_id
        self._store = store
        self._config = config
        self._metrics = metrics
        self._on_exit = on_exit
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(config.inbox_size)
        self._peers: dict[str, Peer] = {}
        self._state: DocumentState | None = None
        self._snapshot_rev = 0
        self._leases = 0
        self._running = True
        self._background: set[asyncio.Task[None]] = set()
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
            try:
                self._inbox.put_nowait(Wake())
            except asyncio.QueueFull:
                pass  # busy, so not idle: the loop re-checks after this batch anyway

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

    # -- the task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._load()
        except BaseException as error:
            self._running = False
            self._on_exit(self)
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
            if unload:
                await self._final_snapshot()
            self._fail_leftovers()

    async def _next_message(self) -> Message | None:
        """The next message, or None when the document has been idle long enough to unload."""
        while True:
            if self._peers or self._leases or not self._inbox.empty():
                message = await self._inbox.get()
            else:
                try:
                    async with asyncio.timeout(self._config.idle_seconds):
                        message = await self._inbox.get()
                except TimeoutError:
                    if self._peers or self._leases:
                        continue
                    return None
            if not isinstance(message, Wake):
                return message

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
        """Handles a run of ready messages; returns False if the document must not be snapshotted."""
        pending: list[Submit] = []
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
                    deleted = await self._store.delete_document(self.doc_id)
                    for peer in list(self._peers.values()):
                        peer.close(CLOSE_DELETED, "document deleted")
                    self._peers.clear()
                    self._running = False
                    if not reply.done():
                        reply.set_result(deleted)
                    return False
                case Stop():
                    for peer in list(self._peers.values()):
                        peer.close(CLOSE_GOING_AWAY, "server shutting down")
                    self._peers.clear()
                    self._running = False
                case Wake():
                    pass
        if pending:
            await self._sequence(pending)
        return True

    # -- ops --------------------------------------------------------------------------------

    async def _sequence(self, submits: list[Submit]) -> None:
        state = self.state
        submissions = [s.submission for s in submits]
        for submission in submissions:
            if state.needs_lookup(submission.src, submission.seq):
                rev = await self._store.find_rev(self.doc_id, submission.src, submission.seq)
                if rev is not None:
                    state.note_stored_rev(submission.src, submission.seq, rev)
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
        origin_of: dict[int, Peer | None] = {}
        for submit, outcome in zip(submits, batch.outcomes, strict=True):
            origin, reply, seq = submit.origin, submit.reply, submit.submission.seq
            if outcome.error is not None:
                self._refuse(submit, outcome.error)
                continue
            if outcome.committed is not None:
                origin_of[outcome.rev] = origin
                self._metrics.op_latency.observe(now - submit.received)
            elif origin is not None:
                # A resend of an op already committed: ack it again with its original revision.
                origin.send(protocol.ack_frame(seq, outcome.rev))
            if reply is not None and not reply.done():
                reply.set_result(outcome.rev)
        self._metrics.ops_applied += len(batch.ops)
        if not batch.ops:
            return
        encoded = [
            protocol.encode(protocol.op_frame(s.rev, s.op, s.src, s.seq, s.user_id))
            for s in batch.ops
        ]
        for peer in self._peers.values():
            items = [
                protocol.ack_frame(stored.seq, stored.rev) if origin_of[stored.rev] is peer else frame
                for stored, frame in zip(batch.ops, encoded, strict=True)
            ]
            peer.send(protocol.batch_frame(items))

    def _broadcast_foreign(self, ops: Sequence[StoredOp]) -> None:
        """Fans out ops another writer committed, so every peer keeps a gapless sequence."""
        encoded = [
            protocol.encode(protocol.op_frame(s.rev, s.op, s.src, s.seq, s.user_id)) for s in ops
        ]
        frame = protocol.batch_frame(encoded)
        for peer in self._peers.values():
            peer.send(frame)

    def _refuse(self, submit: Submit, error: SubmitError) -> None:
        if submit.origin is not None and submit.reply is None:
            submit.origin.send(protocol.error_frame(error.code, error.message, submit.submission.seq))
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
                {"client": p.client_id, "user": p.user_id, "name": p.name, "cursor": p.cursor}
                for p in self._peers.values()
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
        self._metrics.connections += 1

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
        self._metrics.connections -= 1
        frame = protocol.encode(
            {"type": "leave", "client": peer.client_id, "user": peer.user_id, "name": peer.name}
        )
        for other in self._peers.values():
            other.send(frame)

    def _presence(self, peer: Peer, cursor: dict[str, int] | None, rev: int) -> None:
        if peer.client_id not in self._peers:
            return
        state = self.state
        if cursor is not None:
            anchor = state.transform_cursor(cursor["anchor"], rev) if rev <= state.rev else None
            head = state.transform_cursor(cursor["head"], rev) if rev <= state.rev else None
            cursor = None if anchor is None or head is None else {"anchor": anchor, "head": head}
        peer.cursor = cursor
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
