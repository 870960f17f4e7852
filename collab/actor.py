"""One asyncio task per loaded document: its inbox, its lifetime and the dispatch of messages.

Messages wait in a bounded inbox; the actor takes everything that is ready at once, so ops
that arrive together share one transaction (group commit) and one outgoing frame per peer. It
never awaits a peer: frames go into each peer's bounded outbox, drained by that peer's writer.
The work itself lives in one module per job:

- ``sequencer``: an op's revision (stage, commit, retry, accept);
- ``delivery``: which frame each peer gets after a commit, and when;
- ``presence``: who is connected, here and in other processes, and their cursors;
- ``snapshots``: the text saved now and then, off the ops' path;
- ``pubsub``: the other server processes (a local implementation when there are none).

Constructing an actor starts nothing: :meth:`DocumentActor.start` (the registry calls it)
runs :meth:`DocumentActor.run` in a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from collab import ot, protocol
from collab.delivery import Delivery
from collab.document import Batch, DocumentState, Submission, SubmitError
from collab.errors import CloseCode, CollabError
from collab.metrics import Metrics
from collab.presence import Peer, Roster
from collab.protocol import CursorDict
from collab.pubsub.base import PubSub
from collab.pubsub.messages import Committed, Message, PeerLeft, PeerSeen, Who, YjsUpdates
from collab.sequencer import Failure, RowsFor, Sequenced, Sequencer
from collab.snapshots import Snapshotter
from collab.storage.base import ExtraRows, Store
from collab.types import StoredOp
from collab.yjs.codec import DecodeError
from collab.yjs.connection import YjsConnection
from collab.yjs.host import YjsHost, YjsServices
from collab.yjs.messages import AwarenessEntry

__all__ = [
    "ActorConfig",
    "CommitListener",
    "DocumentActor",
    "DocumentGone",
    "DocumentNotFound",
    "Peer",
]

log = logging.getLogger(__name__)

MAX_BATCH = 512
MAX_SINCE_OPS = 10_000
POLL_SECONDS = 0.5
PRUNE_SECONDS = 5.0


class DocumentNotFound(CollabError):
    code = "document_not_found"


class DocumentGone(CollabError):
    """The actor stopped (the document was deleted or the server is shutting down)."""

    code = "document_gone"


# Called after every batch the document's state takes in: committed here, by another process
# (heard through pub/sub or read on a resync) or caught up with after a lost race.
CommitListener = Callable[[str, Sequence[StoredOp]], None]


@dataclass(frozen=True, slots=True)
class ActorConfig:
    inbox_size: int = 4096
    snapshot_every: int = 100
    idle_seconds: float = 60.0
    history_window: int = 1000
    max_rebase: int = 5_000
    # Fairness: revisions rebased past (an op's distance from the current revision, summed)
    # before the actor commits what it has and lets the event loop run others (about 30 ms of
    # CPU at the measured 0.3 µs per revision).
    rebase_budget: int = 100_000
    # A document's deliveries are paced to about this many frames a second (collab.delivery).
    frames_per_second: float = 20_000.0
    # Lost commit races in a row before a batch is given up (ShareDB's maxSubmitRetries).
    max_commit_retries: int = 20
    max_document_bytes: int | None = None


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
    cursor: CursorDict | None
    rev: int


@dataclass(slots=True)
class YjsMessage:
    """A message of a Yjs connection (collab.yjs): its first sync step 1 (``join``), an update,
    a later sync step 1, awareness, a query for awareness, or its departure."""

    kind: Literal["join", "update", "step1", "awareness", "query", "leave"]
    peer: YjsConnection
    payload: Any = None


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

    node: str
    message: Message


@dataclass(slots=True)
class Resync:
    """Reads ops other processes committed that this one may have missed."""


Inbox = (
    Submit | Join | Leave | Presence | YjsMessage | Read | Delete | Stop | Wake | Remote | Resync
)
_BACKGROUND = (Wake, Remote, Resync)


class DocumentActor:
    def __init__(
        self,
        doc_id: str,
        store: Store,
        config: ActorConfig,
        metrics: Metrics,
        pubsub: PubSub,
        on_exit: Callable[[DocumentActor], None],
        on_commit: Sequence[CommitListener] = (),
        yjs: YjsServices | None = None,
    ) -> None:
        self.doc_id = doc_id
        self._store = store
        self._config = config
        self._metrics = metrics
        self._pubsub = pubsub
        self._on_exit = on_exit
        self._on_commit = on_commit
        self._inbox: asyncio.Queue[Inbox] = asyncio.Queue(config.inbox_size)
        self._roster = Roster()
        self._delivery = Delivery(self._roster, config.frames_per_second)
        self._state: DocumentState | None = None
        self._sequencer: Sequencer | None = None
        # Yjs (collab.yjs): a host once the document has Yjs state, and a sequencer that
        # returns on a lost race, since a Yjs client's op is remade from its update, not rebased.
        self._yjs_services = yjs
        self._yjs: YjsHost | None = None
        self._yjs_sequencer: Sequencer | None = None
        self._snapshots: Snapshotter | None = None
        self._last_activity = time.monotonic()
        self._leases = 0
        self._running = True
        self._resync_due = False
        self._background: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> asyncio.Task[None]:
        """Runs the actor in a task of its own (once); returns that task."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"actor:{self.doc_id}")
        return self._task

    # -- the interface used by connections, routes and the registry ---------------------------

    @property
    def alive(self) -> bool:
        return self._running

    @property
    def held_bytes(self) -> int:
        """About how much text the actor holds (code points; 0 before loading)."""
        return 0 if self._state is None else len(self._state.text)

    def forget(self) -> None:
        """Drops the document's state once the actor has stopped (its memory can go)."""
        assert not self._running
        self._state = self._sequencer = self._snapshots = None

    @property
    def state(self) -> DocumentState:
        assert self._state is not None, "used before load"
        return self._state

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
        self._put_later(Leave(peer))

    def _put_later(self, message: Inbox) -> None:
        if not self._running:
            return
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            task = asyncio.create_task(self._inbox.put(message))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def presence(self, peer: Peer, cursor: CursorDict | None, rev: int) -> None:
        await self._put(Presence(peer, cursor, rev))

    # -- Yjs connections (collab.yjs.connection.YjsEndpoint) ------------------------------------

    async def yjs_join(self, peer: YjsConnection, state_vector: bytes) -> None:
        await self._put(YjsMessage("join", peer, state_vector))

    async def yjs_update(self, peer: YjsConnection, update: bytes) -> None:
        await self._put(YjsMessage("update", peer, update))

    async def yjs_step1(self, peer: YjsConnection, state_vector: bytes) -> None:
        await self._put(YjsMessage("step1", peer, state_vector))

    async def yjs_awareness(self, peer: YjsConnection, entries: Sequence[AwarenessEntry]) -> None:
        await self._put(YjsMessage("awareness", peer, entries))

    async def yjs_query_awareness(self, peer: YjsConnection) -> None:
        await self._put(YjsMessage("query", peer))

    def yjs_leave(self, peer: YjsConnection) -> None:
        self._put_later(YjsMessage("leave", peer))

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
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _put(self, message: Inbox) -> None:
        if not self._running:
            raise DocumentGone(self.doc_id)
        await self._inbox.put(message)

    def post(self, message: Remote | Resync) -> None:
        """Queues pub/sub work without waiting; if the inbox is full, a resync covers it."""
        if not self._running:
            return
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            self._resync_due = True

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Loads the document, then handles messages until it is stopped, deleted or idle."""
        try:
            # Subscribe first: whatever is published while loading waits in the inbox.
            await self._pubsub.subscribe(self.doc_id)
            await self._load()
            # Ask the other processes who is connected there; they answer with presence.
            self._pubsub.publish(self.doc_id, Who())
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
                # A busy document's inbox is never empty, so its get() never suspends: let the
                # other documents' actors and the health endpoints have a turn.
                await asyncio.sleep(0)
        except Exception:
            log.exception("actor for %s failed", self.doc_id)
            self._close_all(CloseCode.INTERNAL, "internal error")
        finally:
            self._running = False
            self._on_exit(self)
            await self._unsubscribe()
            if unload and self._snapshots is not None:
                await self._snapshots.final(self.state.rev, self.state.text)
            if self._yjs is not None:
                await self._yjs.settle()
            self._fail_leftovers()

    async def _unsubscribe(self) -> None:
        try:
            await self._pubsub.unsubscribe(self.doc_id)
        except Exception:
            log.exception("unsubscribe failed for %s", self.doc_id)

    def _in_use(self) -> bool:
        return bool(len(self._roster) or self._leases)

    def _wait_limit(self) -> float | None:
        """How long to wait for a message before doing timed work (unload, poll, prune)."""
        limits = []
        if not self._in_use():
            limits.append(self._config.idle_seconds - (time.monotonic() - self._last_activity))
        if not self._pubsub.healthy or self._resync_due:
            limits.append(POLL_SECONDS)
        elif self._roster.has_remote:
            limits.append(PRUNE_SECONDS)
        return max(0.0, min(limits)) if limits else None

    async def _next_message(self) -> Inbox | None:
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
            if not self._pubsub.healthy:
                return Resync()
            for gone in self._roster.prune(self._pubsub.node_alive):
                self._send_all(protocol.leave_frame(gone.client, gone.user, gone.name))
            idle_for = time.monotonic() - self._last_activity
            if not self._in_use() and idle_for >= self._config.idle_seconds:
                return None

    async def _load(self) -> None:
        loaded = await self._store.load_document(self.doc_id)
        if loaded is None:
            raise DocumentNotFound(f"no document {self.doc_id!r}")
        text = loaded.snapshot_content
        for stored in loaded.ops:
            text = ot.apply(text, stored.op)
        config = self._config
        self._state = DocumentState(
            self.doc_id,
            text,
            loaded.info.rev,
            loaded.ops[-config.history_window :],
            window=config.history_window,
            max_rebase=config.max_rebase,
            max_bytes=config.max_document_bytes,
        )
        self._sequencer = Sequencer(
            self.doc_id, self._state, self._store, max_retries=config.max_commit_retries
        )
        self._snapshots = Snapshotter(
            self.doc_id, self._store, config.snapshot_every, loaded.snapshot_rev
        )
        if self._yjs_services is not None:
            self._yjs_sequencer = Sequencer(self.doc_id, self._state, self._store, max_retries=0)
            # A document with Yjs state bridges every op from now on; one without pays one
            # lookup here and nothing more until a Yjs client joins.
            self._yjs = await YjsHost.open(self.doc_id, self._state, self._yjs_services, seed=False)

    async def _handle(self, messages: list[Inbox]) -> bool:
        """Handles a run of ready messages; False means: do not snapshot (it was deleted)."""
        pending: list[Submit] = []
        work = 0  # revisions the pending submissions are rebased past
        updates: list[tuple[YjsConnection, bytes]] = []  # Yjs updates, sequenced together
        if not all(isinstance(m, _BACKGROUND) for m in messages):
            self._last_activity = time.monotonic()
        # Ops another process committed are taken in before this run's submissions are
        # sequenced, whatever their order in the inbox: they hold the next revisions already,
        # so a batch staged without them would only lose its commit race, read them from the
        # database and be staged again.
        heard: list[tuple[str, Committed]] = []
        others: list[Inbox] = []
        for message in messages:
            if isinstance(message, Remote) and isinstance(message.message, Committed):
                heard.append((message.node, message.message))
            else:
                others.append(message)
        for node, ops in heard:
            await self._remote(node, ops)
        for message in others:
            if isinstance(message, Submit):
                if updates:
                    await self._sequence_yjs(updates)
                    updates = []
                distance = max(0, self.state.rev - message.submission.base_rev)
                if pending and work + distance > self._config.rebase_budget:
                    await self._sequence(pending)
                    await asyncio.sleep(0)  # a backlog of stale ops must not starve the others
                    pending, work = [], 0
                pending.append(message)
                work += distance
                continue
            if isinstance(message, YjsMessage) and message.kind == "update":
                if pending:
                    await self._sequence(pending)
                    pending, work = [], 0
                updates.append((message.peer, message.payload))
                continue
            if pending:
                await self._sequence(pending)
                pending, work = [], 0
            if updates:
                await self._sequence_yjs(updates)
                updates = []
            match message:
                case Join(peer, since, done):
                    await self._join(peer, since)
                    if not done.done():
                        done.set_result(None)
                case Leave(peer):
                    self._leave(peer)
                case Presence(peer, cursor, rev):
                    self._presence(peer, cursor, rev)
                case YjsMessage():
                    await self._yjs_message(message)
                case Read(reply):
                    if not reply.done():
                        reply.set_result((self.state.text, self.state.rev))
                case Delete(reply):
                    await self._delete(reply)
                    return False
                case Stop():
                    self._delivery.flush()
                    self._close_all(CloseCode.GOING_AWAY, "server shutting down")
                    if self._yjs is not None:
                        self._yjs.room.close_all(CloseCode.GOING_AWAY, "server shutting down")
                    self._running = False
                case Remote(node, remote):
                    await self._remote(node, remote)
                case Resync():
                    await self._resync()
                case Wake():
                    pass
        if pending:
            await self._sequence(pending)
        if updates:
            await self._sequence_yjs(updates)
        return True

    # -- ops --------------------------------------------------------------------------------

    async def _sequence(
        self,
        submits: list[Submit],
        sequencer: Sequencer | None = None,
        extra_rows: ExtraRows | None = None,
    ) -> Sequenced:
        """Sequences, commits and delivers ``submits``. With Yjs hosted and no ``extra_rows``,
        the Yjs update of each staged batch is committed with it and relayed once durable."""
        assert self._sequencer is not None and self._snapshots is not None
        rows: ExtraRows | RowsFor | None = extra_rows
        host = self._yjs
        bridged = host is not None and extra_rows is None
        if bridged:
            assert host is not None

            async def rows_for(batch: Batch) -> ExtraRows:
                assert host is not None
                return await host.rows_for(batch, self.state)

            rows = rows_for
        sequencer = sequencer or self._sequencer
        result = await sequencer.sequence([s.submission for s in submits], rows)
        if result.caught_up:
            self._took_in(result.caught_up)
            self._delivery.foreign(result.caught_up)
        if result.failure is not None:
            self._fail(submits, result.failure)
            return result
        batch = result.batch
        assert batch is not None
        now = time.perf_counter()
        for submit, outcome in zip(submits, batch.outcomes, strict=True):
            if outcome.error is not None:
                self._refuse(submit, outcome.error)
                continue
            if outcome.committed is not None:
                self._metrics.op_latency.observe(now - submit.received)
            if submit.reply is not None and not submit.reply.done():
                submit.reply.set_result(outcome.rev)
        self._metrics.ops_applied += len(batch.ops)
        self._delivery.batch(batch, [s.origin for s in submits])
        if batch.ops:
            self._snapshots.committed(batch.rev, batch.text)
            self._pubsub.publish(self.doc_id, Committed(tuple(batch.ops)))
            self._took_in(batch.ops)
        if bridged and host is not None:
            host.committed(batch.rev)
        return result

    def _took_in(self, ops: Sequence[StoredOp]) -> None:
        for listener in self._on_commit:
            try:
                listener(self.doc_id, ops)
            except Exception:
                log.exception("commit listener failed for %s", self.doc_id)

    def _refuse(self, submit: Submit, error: SubmitError) -> None:
        if submit.origin is not None and submit.reply is None:
            self._delivery.refuse(submit.origin, submit.submission.seq, error)
        if submit.reply is not None and not submit.reply.done():
            submit.reply.set_exception(error)

    def _fail(self, submits: list[Submit], failure: Failure) -> None:
        for submit in submits:
            if submit.reply is not None and not submit.reply.done():
                submit.reply.set_exception(DocumentGone(failure.reason))
            elif submit.origin is not None:
                submit.origin.close(failure.close_code, failure.reason)

    async def _delete(self, reply: asyncio.Future[bool]) -> None:
        assert self._snapshots is not None
        self._delivery.flush()
        # A snapshot landing after the delete would belong to a document recreated there.
        await self._snapshots.stop()
        deleted = await self._store.delete_document(self.doc_id)
        self._close_all(CloseCode.DELETED, "document deleted")
        if self._yjs is not None:
            self._yjs.room.close_all(CloseCode.DELETED, "document deleted")
        self._running = False
        if not reply.done():
            reply.set_result(deleted)

    # -- peers ------------------------------------------------------------------------------

    def _send_all(self, frame: bytes) -> None:
        for peer in self._roster:
            peer.send(frame)

    def _close_all(self, code: CloseCode, reason: str) -> None:
        for peer in self._roster.clear():
            peer.close(code, reason)

    async def _join(self, peer: Peer, since: int | None) -> None:
        # The newcomer starts at state.rev: everyone else must have been sent up to there too.
        self._delivery.flush()
        state = self.state
        missed = None if since is None else await self._ops_since(since)
        peer.send(
            protocol.init_frame(
                self.doc_id,
                state.rev,
                state.text,
                peer.client_id,
                (peer.user_id, peer.name),
                getattr(peer, "access", "write"),
                self._roster.entries(state) + self._yjs_entries(),
                missed,
            )
        )
        self._send_all(protocol.join_frame(peer.client_id, peer.user_id, peer.name))
        self._roster.add(peer)
        if self._yjs is not None:
            self._yjs.room.show_ot_client(peer.client_id, peer.name)
        self._pubsub.publish(
            self.doc_id, PeerSeen("join", peer.client_id, peer.user_id, peer.name, None, None)
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
        if not self._roster.remove(peer):
            return
        self._send_all(protocol.leave_frame(peer.client_id, peer.user_id, peer.name))
        self._pubsub.publish(self.doc_id, PeerLeft(peer.client_id, peer.user_id, peer.name))
        if self._yjs is not None:
            self._yjs.room.hide_ot_client(peer.client_id)

    def _presence(self, peer: Peer, cursor: CursorDict | None, rev: int) -> None:
        if peer not in self._roster:
            return
        self._delivery.flush()  # the cursor is sent at state.rev, so the peers must have those ops
        state = self.state
        cursor = self._roster.set_cursor(peer, cursor, rev, state)
        frame = protocol.presence_frame(peer.client_id, peer.user_id, peer.name, cursor, state.rev)
        for other in self._roster:
            if other is not peer:
                other.send_presence(peer.client_id, frame)
        self._publish_presence(peer, cursor)

    def _publish_presence(self, peer: Peer, cursor: CursorDict | None) -> None:
        """Tells the other processes where ``peer``'s cursor is, at the current revision."""
        seen = PeerSeen("presence", peer.client_id, peer.user_id, peer.name, cursor, self.state.rev)
        self._pubsub.publish(self.doc_id, seen)

    # -- other server processes -------------------------------------------------------------

    async def _remote(self, node: str, message: Message) -> None:
        match message:
            case Committed(ops):
                state = self.state
                if not ops or ops[-1].rev <= state.rev:
                    return
                if ops[0].rev > state.rev + 1:
                    await self._resync()  # a gap: the database has what was not heard
                    return
                fresh = [stored for stored in ops if stored.rev > state.rev]
                state.apply_committed(fresh)
                self._took_in(fresh)
                self._delivery.foreign(fresh)
                await self._yjs_catch_up()
            case PeerSeen(kind, client, user, name, cursor, rev):
                new = self._roster.remote_seen(message, node)
                if kind == "join" or new:
                    self._send_all(protocol.join_frame(client, user, name))
                if kind == "presence" and rev is not None:
                    frame = protocol.presence_frame(client, user, name, cursor, rev)
                    for peer in self._roster:
                        peer.send_presence(client, frame)
            case Who():
                for peer in self._roster:
                    self._publish_presence(peer, self._roster.cursor_of(peer, self.state))
            case PeerLeft(client, user, name):
                if self._roster.remote_left(client) is not None:
                    self._send_all(protocol.leave_frame(client, user, name))
            case YjsUpdates(updates):
                await self._yjs_remote(updates)

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
            self._took_in(missed)
            self._delivery.foreign(missed)
            await self._yjs_catch_up()

    # -- Yjs ----------------------------------------------------------------------------------

    async def _yjs_message(self, message: YjsMessage) -> None:
        peer = message.peer
        if message.kind == "join":
            await self._yjs_join(peer, message.payload)
            return
        host = self._yjs
        if host is None:
            return
        try:
            match message.kind:
                case "leave":
                    if peer in host.room.peers:
                        self._send_all(protocol.leave_frame(peer.src, peer.user_id, peer.name))
                    host.room.leave(peer)
                case "step1":
                    await host.fresh(self.state)
                    host.room.answer_step1(peer, message.payload)
                case "awareness":
                    host.room.update_awareness(peer, message.payload)
                case "query":
                    host.room.query_awareness(peer)
        except DecodeError as error:
            peer.close(CloseCode.BAD_MESSAGE, error.message[:120])
        except Exception:
            log.exception("a Yjs %s failed for %s", message.kind, self.doc_id)
            peer.close(CloseCode.INTERNAL, "internal error")

    async def _yjs_join(self, peer: YjsConnection, state_vector: bytes) -> None:
        if peer.closing:
            return
        host = self._yjs
        if host is None:
            assert self._yjs_services is not None, "Yjs is not configured"
            try:
                host = await YjsHost.open(self.doc_id, self.state, self._yjs_services, seed=True)
            except Exception:
                log.exception("loading the Yjs state of %s failed", self.doc_id)
                peer.close(CloseCode.INTERNAL, "the Yjs state could not be loaded")
                return
            assert host is not None
            self._yjs = host
            # Other processes with this document loaded bridge its ops from now on too.
            self._pubsub.publish(self.doc_id, YjsUpdates(()))
            for other in self._roster:
                host.room.show_ot_client(other.client_id, other.name)
        try:
            await host.fresh(self.state)
            host.room.join(peer, state_vector)
        except DecodeError as error:
            peer.close(CloseCode.BAD_MESSAGE, error.message[:120])
            return
        except Exception:
            log.exception("a Yjs join failed for %s", self.doc_id)
            peer.close(CloseCode.INTERNAL, "internal error")
            return
        # OT clients list the Yjs editor as a peer (its cursor stays in Yjs awareness).
        self._send_all(protocol.join_frame(peer.src, peer.user_id, peer.name))

    def _yjs_entries(self) -> list[dict[str, Any]]:
        """The Yjs editors, as peers of an OT client's ``init``."""
        if self._yjs is None:
            return []
        return [protocol.peer_entry(p.src, p.user_id, p.name, None) for p in self._yjs.room.peers]

    async def _yjs_remote(self, updates: tuple[bytes, ...]) -> None:
        try:
            if self._yjs is None:
                if self._yjs_services is not None:
                    # The document got Yjs state elsewhere: load it (these updates included).
                    self._yjs = await YjsHost.open(
                        self.doc_id, self.state, self._yjs_services, seed=False
                    )
                return
            await self._yjs.remote(updates, self.state)
        except Exception:
            log.exception("Yjs updates from another process failed for %s", self.doc_id)

    async def _yjs_catch_up(self) -> None:
        if self._yjs is not None:
            try:
                await self._yjs.fresh(self.state)
            except Exception:
                log.exception("Yjs catch-up failed for %s", self.doc_id)

    async def _sequence_yjs(self, items: list[tuple[YjsConnection, bytes]]) -> None:
        """Yjs clients' updates: applied to the Doc; those that change the text become ops at
        the head revision, committed with their updates; the rest are stored on their own.
        All of it is relayed only once durable. A race lost to another process rebuilds the
        Doc from the database and makes the ops again from the same updates."""
        host = self._yjs
        if host is None or self._yjs_sequencer is None:
            return
        for _ in range(self._config.max_commit_retries + 1):
            try:
                prepared = await host.prepare(items, self.state)
                await host.store_plain(prepared, self.state.rev)
                if prepared.plain:
                    self._pubsub.publish(self.doc_id, YjsUpdates(tuple(prepared.plain)))
            except Exception:
                log.exception("storing Yjs updates failed for %s", self.doc_id)
                self._close_yjs_peers(items, CloseCode.INTERNAL, "the document could not be stored")
                return
            if not prepared.submissions:
                host.prepared_committed(prepared, self.state.rev)
                return
            submits = [Submit(s, None, None) for s in prepared.submissions]
            result = await self._sequence(
                submits, self._yjs_sequencer, prepared.extra_rows(self.doc_id)
            )
            if result.batch is not None:
                host.prepared_committed(prepared, result.batch.rev)
                return
            if not result.caught_up:  # not a lost race: the database failed
                assert result.failure is not None
                self._close_yjs_peers(items, result.failure.close_code, result.failure.reason)
                return
        self._close_yjs_peers(items, CloseCode.TRY_AGAIN, "too many lost commit races")

    @staticmethod
    def _close_yjs_peers(
        items: list[tuple[YjsConnection, bytes]], code: CloseCode, reason: str
    ) -> None:
        # 1011 and 1013 are not 44xx: the providers reconnect and upload what they hold again.
        for peer, _ in items:
            peer.close(code, reason)

    # -- unloading --------------------------------------------------------------------------

    def _fail_leftovers(self) -> None:
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            match message:
                case Submit() as submit:
                    failure = Failure("the document was unloaded", CloseCode.INTERNAL)
                    self._fail([submit], failure)
                case Join(peer, _, done):
                    peer.close(CloseCode.GOING_AWAY, "document unloaded")
                    if not done.done():
                        done.set_exception(DocumentGone(self.doc_id))
                case YjsMessage(kind="join", peer=peer):
                    peer.close(CloseCode.GOING_AWAY, "document unloaded")
                case Read(reply) | Delete(reply):
                    if not reply.done():
                        reply.set_exception(DocumentGone(self.doc_id))
                case _:
                    pass
