"""The Yjs side of one document's actor: its Y.Doc and room, and the bridge on the commit path.

The actor builds a :class:`YjsHost` on the first Yjs join (seeding the Y.Doc from the text
once) or, for a document that already has Yjs state, when it loads: from then on every OT
batch is bridged. Everything here runs inside the actor's task, one step at a time.

Two paths, both committed before anything is relayed:

- **OT -> Yjs** (:meth:`YjsHost.rows_for`, :meth:`YjsHost.committed`): the sequencer asks for
  the extra rows of each staged batch; the host makes the batch's ops on the Y.Text as the
  server's client and returns the updates the Doc emitted as ``yjs_updates`` rows, committed in
  the same transaction. Once the batch is durable they are relayed to every Yjs peer.
- **Yjs -> OT** (:meth:`YjsHost.prepare`): client updates are applied to the Doc; each that
  changed the text becomes a submission at the head revision (no transform: it was made on the
  current text) with its update as the row of that revision. Updates that change no text are
  stored on their own (:meth:`YjsHost.store_plain`).

A Doc that took edits whose commit failed (a race lost to another process, a database error) is
*stale*: before its next use it is rebuilt from the database, so an edit that was never
committed cannot linger in it. Yjs updates are idempotent: re-applying the clients' updates to
the rebuilt Doc is safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from collab.document import Batch, DocumentState, Submission
from collab.errors import CloseCode
from collab.storage.base import ExtraRows
from collab.types import utcnow
from collab.yjs.bridge import YjsDocument, replacement
from collab.yjs.codec import DecodeError
from collab.yjs.connection import YjsConnection
from collab.yjs.room import YjsRoom
from collab.yjs.store import UPDATES_TABLE, YjsStore, update_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class YjsConfig:
    text_root: str = "content"
    max_document_bytes: int = 64 * 1024 * 1024
    max_awareness_bytes: int = 32 * 1024
    max_awareness_clients: int = 8
    compact_every: int = 500


@dataclass(frozen=True, slots=True)
class YjsServices:
    """What an actor needs to host Yjs: where its rows live and the limits."""

    store: YjsStore
    config: YjsConfig


@dataclass(slots=True)
class Prepared:
    """Client updates applied to the Doc, sorted by what they need to become durable."""

    submissions: list[Submission] = field(default_factory=list)
    rows: list[tuple[int, bytes]] = field(default_factory=list)  # (rev, update) with an op
    plain: list[bytes] = field(default_factory=list)  # updates that change no text
    relays: list[tuple[bytes, YjsConnection]] = field(default_factory=list)

    def extra_rows(self, doc_id: str) -> ExtraRows:
        return {UPDATES_TABLE: update_rows(doc_id, self.rows, utcnow())} if self.rows else {}


class YjsHost:
    def __init__(
        self, doc_id: str, doc: YjsDocument, store: YjsStore, config: YjsConfig, rev: int
    ) -> None:
        self.doc_id = doc_id
        self.room = YjsRoom(
            doc,
            max_awareness_bytes=config.max_awareness_bytes,
            max_awareness_clients=config.max_awareness_clients,
        )
        self._store = store
        self._config = config
        self._rev = rev  # the OT revision the Doc reflects
        self._size = len(doc.snapshot())
        self._rows_since_compaction = 0
        # Set while the Doc holds edits whose commit has not succeeded: the state vector it
        # had before them, so a rebuild can relay what the database holds beyond it.
        self._stale_since: bytes | None = None
        self._made: list[tuple[int, bytes]] = []
        self._compacting: asyncio.Task[None] | None = None

    @property
    def doc(self) -> YjsDocument:
        return self.room.doc

    @classmethod
    async def open(
        cls, doc_id: str, state: DocumentState, services: YjsServices, *, seed: bool
    ) -> YjsHost | None:
        """The host of a document with Yjs state. With ``seed``, a document without any gets
        it, seeded once from its text (the first Yjs join); without, None then."""
        store, config = services.store, services.config
        loaded = await store.load(doc_id, until=state.rev)
        if loaded is None:
            if not seed:
                return None
            doc = YjsDocument(config.text_root)
            if await store.seed(doc_id, state.rev, doc.seed(state.text), utcnow()):
                return cls(doc_id, doc, store, config, state.rev)
            loaded = await store.load(doc_id, until=state.rev)  # another process seeded it
            assert loaded is not None
        host = cls(doc_id, YjsDocument(config.text_root, loaded), store, config, state.rev)
        host._rows_since_compaction = max(0, len(loaded) - 1)
        await host.reconcile(state)
        return host

    async def reconcile(self, state: DocumentState) -> None:
        """Makes the Y.Text equal the OT text where they differ (OT ops committed by a process
        that did not know the document had Yjs state yet): the server's client writes the
        difference, stored and relayed."""
        self._rev = state.rev
        if self.doc.text == state.text:
            return
        log.warning(
            "the Yjs text of %s differs at revision %d: reconciling", self.doc_id, state.rev
        )
        update = self.doc.apply_op(replacement(self.doc.text, state.text))
        if update is not None:
            await self._store.append(self.doc_id, state.rev, [update], utcnow())
            self._grew(len(update), 1)
            self.room.relay(update, None)

    async def fresh(self, state: DocumentState) -> None:
        """Before any use: a Doc holding uncommitted edits is rebuilt from the database, and
        one behind the OT state catches up with the rows other processes committed."""
        if self._stale_since is not None:
            before, self._stale_since = self._stale_since, None
            loaded = await self._store.load(self.doc_id, until=state.rev) or []
            doc = YjsDocument(self._config.text_root, loaded)
            self.room.doc = doc
            self._size = sum(map(len, loaded))
            news = doc.update_since(before)
            self.room.relay(news, None)
            await self.reconcile(state)
        elif self._rev < state.rev:
            for update in await self._store.updates_from(self.doc_id, self._rev, state.rev):
                applied = self.doc.apply_update(update)
                if applied.update is not None:
                    self.room.relay(applied.update, None)
            await self.reconcile(state)

    def _mark_stale(self) -> None:
        if self._stale_since is None:
            self._stale_since = self.doc.state_vector()

    async def remote(self, updates: Sequence[bytes], state: DocumentState) -> None:
        """Updates another process committed with no op: applied and relayed."""
        await self.fresh(state)
        for update in updates:
            try:
                applied = self.doc.apply_update(update)
            except DecodeError:
                log.exception("a Yjs update from another process does not decode")
                continue
            if applied.update is not None:
                self.room.relay(applied.update, None)
        await self.reconcile(state)

    # -- OT -> Yjs ----------------------------------------------------------------------------

    async def rows_for(self, batch: Batch, state: DocumentState) -> ExtraRows:
        """The ``yjs_updates`` rows of a staged batch (asked again on every commit attempt)."""
        await self.fresh(state)
        self._mark_stale()  # until committed() says the commit went through
        made = []
        for stored in batch.ops:
            update = self.doc.apply_op(stored.op)
            if update is not None:
                made.append((stored.rev, update))
        self._made = made
        return {UPDATES_TABLE: update_rows(self.doc_id, made, utcnow())} if made else {}

    def committed(self, rev: int) -> None:
        """The batch whose rows were asked for last is durable: relay its updates."""
        self._stale_since = None
        self._rev = rev
        made, self._made = self._made, []
        for _, update in made:
            self.room.relay(update, None)
        self._grew(sum(len(u) for _, u in made), len(made))

    # -- Yjs -> OT ----------------------------------------------------------------------------

    async def prepare(
        self, items: Sequence[tuple[YjsConnection, bytes]], state: DocumentState
    ) -> Prepared:
        """Applies client updates (in order) to the Doc; the caller commits what it returns
        and then calls :meth:`prepared_committed` (or, if the commit failed, nothing: the Doc
        is rebuilt before its next use)."""
        await self.fresh(state)
        self._mark_stale()
        prepared = Prepared()
        rev = state.rev
        limit = self._config.max_document_bytes
        for peer, update in items:
            if peer.closing:
                continue
            if self._size + len(update) > limit:
                peer.close(CloseCode.MESSAGE_TOO_LARGE, f"the document would pass {limit} bytes")
                continue
            try:
                applied = self.doc.apply_update(update)
            except DecodeError as error:
                peer.close(CloseCode.BAD_MESSAGE, error.message[:120])
                continue
            if applied.update is None:
                continue
            if applied.op is not None:
                prepared.submissions.append(
                    Submission(applied.op, rev, peer.src, peer.next_seq(), peer.user_id)
                )
                rev += 1
                prepared.rows.append((rev, applied.update))
            else:
                prepared.plain.append(applied.update)
            prepared.relays.append((applied.update, peer))
        if not prepared.relays:
            self._stale_since = None  # nothing changed the Doc
        return prepared

    async def store_plain(self, prepared: Prepared, rev: int) -> None:
        """Stores the updates that change no text (they go with no op)."""
        if prepared.plain:
            await self._store.append(self.doc_id, rev, prepared.plain, utcnow())

    def prepared_committed(self, prepared: Prepared, rev: int) -> None:
        self._stale_since = None
        self._rev = rev
        for update, origin in prepared.relays:
            self.room.relay(update, origin)
        self._grew(sum(len(u) for u, _ in prepared.relays), len(prepared.relays))

    # -- size and compaction --------------------------------------------------------------

    def _grew(self, size: int, rows: int) -> None:
        self._size += size
        self._rows_since_compaction += rows
        if self._rows_since_compaction >= self._config.compact_every and self._compacting is None:
            self._rows_since_compaction = 0
            self._compacting = asyncio.create_task(
                self._compact(), name=f"yjs-compact:{self.doc_id}"
            )

    async def _compact(self) -> None:
        try:
            await self._store.compact(self.doc_id, utcnow())
            self._size = len(self.doc.snapshot())
        except Exception:
            log.exception("Yjs compaction failed for %s", self.doc_id)
        finally:
            self._compacting = None

    async def settle(self) -> None:
        """Waits for a compaction in flight (before the actor unloads)."""
        if self._compacting is not None:
            await asyncio.wait([self._compacting])
