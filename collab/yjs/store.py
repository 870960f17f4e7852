"""Yjs rows in the database (collab.yjs.models) on an injected session factory.

The update rows that go with OT ops are not written here: :func:`update_rows` builds them for
the actor's commit, which inserts them in the same transaction as the ops. What is written here
stands alone: the seed (once per document), updates that change no text (other roots,
formatting), and compaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pycrdt
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from collab.yjs.models import YjsDocument, YjsSnapshot, YjsUpdate

UPDATES_TABLE = YjsUpdate.__tablename__
_IN_ORDER = (YjsUpdate.rev, YjsUpdate.created_at, YjsUpdate.id)


class RevisionCompacted(Exception):
    """The Yjs state at that revision was folded into a later snapshot."""


class SnapshotAhead(Exception):
    """The newest snapshot is past the revision asked for: the caller is behind the database
    (another process compacted after committing ops it has not heard of yet)."""


def update_rows(
    doc_id: str, updates: Sequence[tuple[int, bytes]], now: datetime
) -> list[dict[str, Any]]:
    """``yjs_updates`` rows for ``(rev, update)`` pairs, for a commit's extra rows."""
    return [
        {"id": secrets.token_hex(16), "doc_id": doc_id, "rev": rev, "data": data, "created_at": now}
        for rev, data in updates
    ]


def merge_state(updates: Sequence[bytes]) -> bytes:
    """One update holding all of ``updates``, as a Y.Doc encodes its state (deleted content
    garbage-collected). Every stored update was integrated by the Doc that emitted it, so all
    of them together have no missing dependencies."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    with doc.transaction():
        for update in updates:
            doc.apply_update(update)
    return doc.get_update()


class YjsStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def load(self, doc_id: str, until: int | None = None) -> list[bytes] | None:
        """The newest snapshot, then every remaining update (up to revision ``until``: the
        state that goes with that revision of the text); None if the document has no Yjs
        state yet. Raises SnapshotAhead if the newest snapshot is past ``until``."""
        async with self._sessions() as session:
            seeded = await session.scalar(
                select(YjsDocument.doc_id).where(YjsDocument.doc_id == doc_id)
            )
            if seeded is None:
                return None
            snapshot = (
                await session.execute(
                    select(YjsSnapshot.data, YjsSnapshot.rev)
                    .where(YjsSnapshot.doc_id == doc_id)
                    .order_by(YjsSnapshot.id.desc())
                    .limit(1)
                )
            ).first()
            if snapshot is not None and until is not None and snapshot.rev > until:
                raise SnapshotAhead(f"snapshot at {snapshot.rev}, asked for {until}")
            query = select(YjsUpdate.data).where(YjsUpdate.doc_id == doc_id)
            if until is not None:
                query = query.where(YjsUpdate.rev <= until)
            rows = await session.scalars(query.order_by(*_IN_ORDER))
            return ([snapshot.data] if snapshot is not None else []) + list(rows)

    async def updates_from(self, doc_id: str, rev: int, until: int) -> list[bytes]:
        """Updates committed at revisions ``rev`` to ``until`` (catching up with other
        processes; one already applied is harmless)."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(YjsUpdate.data)
                .where(YjsUpdate.doc_id == doc_id, YjsUpdate.rev >= rev, YjsUpdate.rev <= until)
                .order_by(*_IN_ORDER)
            )
            return list(rows)

    async def seed(self, doc_id: str, rev: int, update: bytes | None, now: datetime) -> bool:
        """Records the document's Yjs state as started, with its seed update; False if another
        process (or an earlier load) started it first: then nothing is written."""
        async with self._sessions() as session:
            try:
                async with session.begin():
                    await session.execute(insert(YjsDocument).values(doc_id=doc_id, created_at=now))
                    if update is not None:
                        await session.execute(
                            insert(YjsUpdate).values(update_rows(doc_id, [(rev, update)], now))
                        )
            except IntegrityError:
                return False
        return True

    async def append(self, doc_id: str, rev: int, updates: Sequence[bytes], now: datetime) -> None:
        """Stores updates that go with no OT op, at the document's current revision."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                insert(YjsUpdate).values(update_rows(doc_id, [(rev, u) for u in updates], now))
            )

    async def count_updates(self, doc_id: str) -> int:
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(YjsUpdate).where(YjsUpdate.doc_id == doc_id)
            )
            return int(count or 0)

    async def compact(self, doc_id: str, now: datetime) -> int:
        """Folds the newest snapshot and every update row into a new snapshot, deleting exactly
        the rows it read, in one transaction; returns how many rows it folded."""
        async with self._sessions() as session, session.begin():
            snapshot = (
                await session.execute(
                    select(YjsSnapshot.data, YjsSnapshot.rev)
                    .where(YjsSnapshot.doc_id == doc_id)
                    .order_by(YjsSnapshot.id.desc())
                    .limit(1)
                )
            ).first()
            rows = (
                await session.execute(
                    select(YjsUpdate.id, YjsUpdate.rev, YjsUpdate.data)
                    .where(YjsUpdate.doc_id == doc_id)
                    .order_by(*_IN_ORDER)
                )
            ).all()
            if not rows:
                return 0
            updates = ([snapshot.data] if snapshot is not None else []) + [r.data for r in rows]
            state = merge_state(updates)
            rev = max(r.rev for r in rows)
            await session.execute(
                insert(YjsSnapshot).values(doc_id=doc_id, rev=rev, data=state, created_at=now)
            )
            await session.execute(delete(YjsUpdate).where(YjsUpdate.id.in_([r.id for r in rows])))
            return len(rows)

    async def state_at(self, doc_id: str, rev: int | None) -> bytes | None:
        """The Yjs state as one update: now, or as it was at revision ``rev``; None without
        Yjs state. Raises RevisionCompacted for a revision folded into a later snapshot."""
        async with self._sessions() as session:
            seeded = await session.scalar(
                select(YjsDocument.doc_id).where(YjsDocument.doc_id == doc_id)
            )
            if seeded is None:
                return None
            snapshots = select(YjsSnapshot.data, YjsSnapshot.rev).where(
                YjsSnapshot.doc_id == doc_id
            )
            newest = (
                await session.execute(snapshots.order_by(YjsSnapshot.id.desc()).limit(1))
            ).first()
            rows = select(YjsUpdate.data).where(YjsUpdate.doc_id == doc_id)
            if rev is not None and newest is not None and rev < newest.rev:
                exact = (
                    await session.execute(
                        snapshots.where(YjsSnapshot.rev == rev).order_by(YjsSnapshot.id.desc())
                    )
                ).first()
                if exact is None:
                    raise RevisionCompacted(rev)
                return bytes(exact.data)
            if rev is not None:
                rows = rows.where(YjsUpdate.rev <= rev)
            updates = list(await session.scalars(rows.order_by(*_IN_ORDER)))
        base = [newest.data] if newest is not None else []
        return merge_state(base + updates)
