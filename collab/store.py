"""Storage of documents, their operations and snapshots, behind a small interface.

``Store`` is what the actor and the REST routes need; ``SqlStore`` implements it on an injected
``async_sessionmaker`` so the same code runs on SQLite and PostgreSQL. A lost race on commit is a
return value (``False``), not an exception: the caller loads what it missed and retries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import orjson
from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.exc import IntegrityError

from collab import ot
from collab.commit import CommitRequest, Committer, EngineCommitter, rowcount
from collab.db import SessionFactory
from collab.models import Document, Operation, Snapshot


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    title: str
    rev: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredOp:
    rev: int
    op: ot.Op
    src: str
    seq: int
    user_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    rev: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    info: DocumentInfo
    snapshot_rev: int
    snapshot_content: str
    ops: list[StoredOp]


class Store(Protocol):
    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def get_document(self, doc_id: str) -> DocumentInfo | None: ...

    async def create_document(
        self, doc_id: str, title: str, content: str, now: datetime
    ) -> DocumentInfo | None: ...

    async def load_document(self, doc_id: str) -> LoadedDocument | None: ...

    async def load_ops(
        self, doc_id: str, after: int, until: int | None = None, limit: int | None = None
    ) -> list[StoredOp]: ...

    async def commit(
        self,
        doc_id: str,
        base_rev: int,
        ops: Sequence[StoredOp],
        snapshot: tuple[int, str] | None,
    ) -> bool: ...

    async def find_revs(
        self, doc_id: str, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]: ...

    async def save_snapshot(self, doc_id: str, rev: int, content: str, now: datetime) -> None: ...

    async def list_documents(
        self, after_id: str | None, limit: int, only_ids: Iterable[str] | None
    ) -> list[DocumentInfo]: ...

    async def delete_document(self, doc_id: str) -> bool: ...

    async def list_snapshots(self, doc_id: str) -> list[SnapshotInfo]: ...

    async def content_at(self, doc_id: str, rev: int) -> str: ...

    async def rev_at(self, doc_id: str, moment: datetime) -> int | None: ...


def _info(row: Document) -> DocumentInfo:
    return DocumentInfo(row.id, row.title, row.rev, row.created_at, row.updated_at)


def _stored(row: Operation) -> StoredOp:
    return StoredOp(row.rev, orjson.loads(row.op), row.src, row.seq, row.user_id, row.created_at)


# Pairs per lookup query: well under SQLite's limit of bound parameters.
_LOOKUP_CHUNK = 400


class SqlStore:
    """``Store`` on SQLAlchemy; every method is one short transaction from the factory."""

    def __init__(self, sessions: SessionFactory, committer: Committer | None = None) -> None:
        self._sessions = sessions
        self._committer = committer or EngineCommitter(sessions.kw["bind"])

    async def ping(self) -> None:
        async with self._sessions() as session:
            await session.execute(text("SELECT 1"))

    async def get_document(self, doc_id: str) -> DocumentInfo | None:
        async with self._sessions() as session:
            row = await session.get(Document, doc_id)
            return None if row is None else _info(row)

    async def create_document(
        self, doc_id: str, title: str, content: str, now: datetime
    ) -> DocumentInfo | None:
        """Creates the document with a snapshot at revision 0; ``None`` if the id is taken."""
        async with self._sessions() as session:
            try:
                async with session.begin():
                    session.add(
                        Document(id=doc_id, title=title, rev=0, created_at=now, updated_at=now)
                    )
                    await session.flush()
                    session.add(Snapshot(doc_id=doc_id, rev=0, content=content, created_at=now))
            except IntegrityError:
                return None
        return DocumentInfo(doc_id, title, 0, now, now)

    async def load_document(self, doc_id: str) -> LoadedDocument | None:
        async with self._sessions() as session, session.begin():
            row = await session.get(Document, doc_id)
            if row is None:
                return None
            snap = (
                await session.execute(
                    select(Snapshot.rev, Snapshot.content)
                    .where(Snapshot.doc_id == doc_id, Snapshot.rev <= row.rev)
                    .order_by(Snapshot.rev.desc())
                    .limit(1)
                )
            ).first()
            snap_rev, snap_content = (0, "") if snap is None else (snap[0], snap[1])
            ops = await session.scalars(
                select(Operation)
                .where(Operation.doc_id == doc_id, Operation.rev > snap_rev)
                .where(Operation.rev <= row.rev)
                .order_by(Operation.rev)
            )
            return LoadedDocument(_info(row), snap_rev, snap_content, [_stored(o) for o in ops])

    async def load_ops(
        self, doc_id: str, after: int, until: int | None = None, limit: int | None = None
    ) -> list[StoredOp]:
        query = select(Operation).where(Operation.doc_id == doc_id, Operation.rev > after)
        if until is not None:
            query = query.where(Operation.rev <= until)
        query = query.order_by(Operation.rev)
        if limit is not None:
            query = query.limit(limit)
        async with self._sessions() as session:
            return [_stored(o) for o in await session.scalars(query)]

    async def commit(
        self,
        doc_id: str,
        base_rev: int,
        ops: Sequence[StoredOp],
        snapshot: tuple[int, str] | None,
    ) -> bool:
        """Appends ``ops`` (revisions base_rev+1 …) in one transaction.

        Returns False when another writer moved the document past ``base_rev`` first (or the
        document is gone); nothing is written then.
        """
        if not ops:
            return True
        return await self._committer.commit(CommitRequest(doc_id, base_rev, ops, snapshot))

    async def close(self) -> None:
        await self._committer.close()

    async def find_revs(
        self, doc_id: str, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """The revisions at which these (src, seq) pairs were stored, for those that were.

        One query for a whole batch: when hundreds of clients join a document, each one's
        first op needs this check, and one query each would hold the actor up for all of them.
        """
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, int], int] = {}
        async with self._sessions() as session:
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start : start + _LOOKUP_CHUNK]
                rows = await session.execute(
                    select(Operation.src, Operation.seq, Operation.rev).where(
                        Operation.doc_id == doc_id,
                        tuple_(Operation.src, Operation.seq).in_(chunk),
                    )
                )
                for src, seq, rev in rows:
                    found[(src, seq)] = rev
        return found

    async def save_snapshot(self, doc_id: str, rev: int, content: str, now: datetime) -> None:
        """Stores a snapshot unless one already exists at that revision."""
        async with self._sessions() as session:
            try:
                async with session.begin():
                    exists = await session.get(Snapshot, (doc_id, rev))
                    if exists is None:
                        session.add(
                            Snapshot(doc_id=doc_id, rev=rev, content=content, created_at=now)
                        )
            except IntegrityError:
                pass

    async def list_documents(
        self, after_id: str | None, limit: int, only_ids: Iterable[str] | None
    ) -> list[DocumentInfo]:
        query = select(Document).order_by(Document.id).limit(limit)
        if after_id is not None:
            query = query.where(Document.id > after_id)
        if only_ids is not None:
            query = query.where(Document.id.in_(list(only_ids)))
        async with self._sessions() as session:
            return [_info(row) for row in await session.scalars(query)]

    async def delete_document(self, doc_id: str) -> bool:
        async with self._sessions() as session, session.begin():
            # Children first: SQLite only cascades with foreign_keys on, and we don't rely on it.
            await session.execute(delete(Operation).where(Operation.doc_id == doc_id))
            await session.execute(delete(Snapshot).where(Snapshot.doc_id == doc_id))
            gone = await session.execute(delete(Document).where(Document.id == doc_id))
            return rowcount(gone) == 1

    async def list_snapshots(self, doc_id: str) -> list[SnapshotInfo]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(Snapshot.rev, Snapshot.created_at)
                .where(Snapshot.doc_id == doc_id)
                .order_by(Snapshot.rev)
            )
            return [SnapshotInfo(rev, created) for rev, created in rows]

    async def content_at(self, doc_id: str, rev: int) -> str:
        """The text at ``rev``: the nearest snapshot at or before it, plus the ops after it."""
        async with self._sessions() as session, session.begin():
            snap = (
                await session.execute(
                    select(Snapshot.rev, Snapshot.content)
                    .where(Snapshot.doc_id == doc_id, Snapshot.rev <= rev)
                    .order_by(Snapshot.rev.desc())
                    .limit(1)
                )
            ).first()
            base_rev, content = (0, "") if snap is None else (snap[0], snap[1])
            ops = await session.scalars(
                select(Operation.op)
                .where(Operation.doc_id == doc_id)
                .where(Operation.rev > base_rev, Operation.rev <= rev)
                .order_by(Operation.rev)
            )
            for encoded in ops:
                content = ot.apply(content, orjson.loads(encoded))
            return content

    async def rev_at(self, doc_id: str, moment: datetime) -> int | None:
        """The newest revision committed at or before ``moment``; None before the document."""
        async with self._sessions() as session:
            row = await session.get(Document, doc_id)
            if row is None or moment < row.created_at:
                return None
            rev: int | None = await session.scalar(
                select(Operation.rev)
                .where(Operation.doc_id == doc_id, Operation.created_at <= moment)
                .order_by(Operation.rev.desc())
                .limit(1)
            )
            return rev or 0
