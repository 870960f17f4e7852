"""``Store`` on SQLAlchemy (SQLite and PostgreSQL), and the statements every SQL committer runs.

Every ``SqlStore`` method is one short transaction from the injected ``async_sessionmaker``;
commits go through the injected ``Committer`` (``collab.storage.sqlite.SqliteWriter`` or
``collab.storage.postgres.GroupCommitter`` in production, ``EngineCommitter`` otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import orjson
from sqlalchemy import (
    Insert,
    String,
    Table,
    bindparam,
    column,
    delete,
    insert,
    select,
    text,
    tuple_,
    update,
    values,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from collab import ot
from collab.db import SessionFactory
from collab.models import Base, Document, Operation, Snapshot
from collab.storage.base import (
    CommitRequest,
    Committer,
    ExtraRows,
    LostRace,
    OpsReader,
    SnapshotWriter,
)
from collab.types import DocumentInfo, LoadedDocument, SnapshotInfo, StoredOp

documents_table = Base.metadata.tables[Document.__tablename__]
operations_table = Base.metadata.tables[Operation.__tablename__]

# Core statements built once: the same SQL as the ORM-enabled update()/insert(), without the
# ORM's bulk bookkeeping, which costs more CPU than SQLite's own work (docs/benchmarks.md).
ADVANCE = (
    update(documents_table)
    .where(
        documents_table.c.id == bindparam("b_id", type_=documents_table.c.id.type),
        documents_table.c.rev == bindparam("b_base", type_=documents_table.c.rev.type),
    )
    .values(
        rev=bindparam("b_rev", type_=documents_table.c.rev.type),
        updated_at=bindparam("b_at", type_=documents_table.c.updated_at.type),
    )
)
INSERT_OPS = insert(operations_table)


def insert_into(table_name: str) -> Insert:
    """The insert for a request's ``extra_rows`` of one table (a table of ``collab.models``)."""
    table: Table = Base.metadata.tables[table_name]
    return insert(table)


def rowcount(result: Any) -> int:
    count: int = result.rowcount
    return count


Waiting: TypeAlias = list[tuple[CommitRequest, asyncio.Future[bool]]]  # callers and answers


def winners_of(group: Sequence[CommitRequest], won: Sequence[bool]) -> list[CommitRequest]:
    """The batches of ``group`` that advanced their document."""
    return [request for request, ok in zip(group, won, strict=True) if ok]


def op_rows(winners: Sequence[CommitRequest]) -> list[dict[str, Any]]:
    """The op rows of ``winners``, in order."""
    return [row for request in winners for row in request.op_rows()]


def extra_rows(winners: Sequence[CommitRequest]) -> dict[str, list[Any]]:
    """The extra rows (a Yjs update's bytes, say) of ``winners``, by table."""
    extra: dict[str, list[Any]] = {}
    for request in winners:
        for table, rows in request.extra_rows.items():
            extra.setdefault(table, []).extend(rows)
    return extra


def settle(group: Waiting, won: Sequence[bool] | None, error: BaseException | None) -> None:
    """Answers each caller of a group: its batch's outcome, or the group's error."""
    for index, (_, done) in enumerate(group):
        if done.done():
            continue
        if error is not None:
            done.set_exception(error)
        else:
            assert won is not None
            done.set_result(won[index])


class EngineCommitter:
    """One transaction per batch on the async engine's pool: the fallback of both group
    committers, and the path for any other database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def commit(self, request: CommitRequest) -> bool:
        if not request.ops:
            return True
        try:
            async with self._engine.begin() as conn:
                moved = await conn.execute(ADVANCE, request.advance_params())
                if rowcount(moved) != 1:
                    raise LostRace(request.doc_id)
                await conn.execute(INSERT_OPS, request.op_rows())
                for table, rows in request.extra_rows.items():
                    if rows:
                        await conn.execute(insert_into(table), list(rows))
        except (LostRace, IntegrityError):
            return False
        return True

    async def close(self) -> None:
        pass


def _info(row: Document) -> DocumentInfo:
    return DocumentInfo(row.id, row.title, row.rev, row.created_at, row.updated_at)


def _stored(row: Operation) -> StoredOp:
    return StoredOp(row.rev, orjson.loads(row.op), row.src, row.seq, row.user_id, row.created_at)


# Pairs per lookup query: well under SQLite's limit of bound parameters.
_LOOKUP_CHUNK = 400


class SqlStore:
    """``Store`` on SQLAlchemy; reads and snapshots through the session factory, commits
    through the committer."""

    def __init__(self, sessions: SessionFactory, committer: Committer) -> None:
        self._sessions = sessions
        self._committer = committer
        self._reader = committer if isinstance(committer, OpsReader) else None
        self._snapshot_writer = committer if isinstance(committer, SnapshotWriter) else None
        # src_owners calls waiting for the next shared query, and the task running them.
        self._owner_lookups: list[tuple[str, list[str], asyncio.Future[dict[str, str]]]] = []
        self._owner_lookup: asyncio.Task[None] | None = None

    async def ping(self) -> None:
        async with self._sessions() as session:
            await session.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._committer.close()

    async def get_document(self, doc_id: str) -> DocumentInfo | None:
        async with self._sessions() as session:
            row = await session.get(Document, doc_id)
            return None if row is None else _info(row)

    async def create_document(
        self, doc_id: str, title: str, content: str, now: datetime
    ) -> DocumentInfo | None:
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
        if self._reader is not None:
            return await self._reader.load_ops(doc_id, after, until, limit)
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
        extra_rows: ExtraRows | None = None,
    ) -> bool:
        if not ops:
            return True
        request = CommitRequest(doc_id, base_rev, ops, extra_rows or {})
        return await self._committer.commit(request)

    async def find_revs(
        self, doc_id: str, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """One query for a whole batch: when hundreds of clients join a document, each one's
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

    async def release_memory(self) -> None:
        # Idle pooled connections are closed; those in use go back to a fresh pool as usual.
        await self._sessions.kw["bind"].dispose()

    async def src_owners(self, doc_id: str, srcs: Iterable[str]) -> dict[str, str]:
        """Lookups of every document wait for the one in flight and then share one query: when
        a thousand editors start typing, each one's first op needs this, and a query each
        (several thread hops on SQLite) queued them up behind the session pool for a second.
        """
        wanted = list(dict.fromkeys(srcs))
        if not wanted:
            return {}
        done: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._owner_lookups.append((doc_id, wanted, done))
        if self._owner_lookup is None:
            self._owner_lookup = asyncio.create_task(self._look_up_owners())
        return await done

    async def _look_up_owners(self) -> None:
        try:
            while self._owner_lookups:
                waiting, self._owner_lookups = self._owner_lookups, []
                pairs = list(dict.fromkeys((doc, src) for doc, srcs, _ in waiting for src in srcs))
                try:
                    owners = await self._owners_of(pairs)
                except Exception as error:
                    for _, _, done in waiting:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for doc, srcs, done in waiting:
                    if not done.done():
                        found = ((src, owners.get((doc, src))) for src in srcs)
                        done.set_result({src: user for src, user in found if user is not None})
        finally:
            self._owner_lookup = None

    async def _owners_of(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Who sent each (doc_id, src)'s first op: one index seek per pair."""
        owners: dict[tuple[str, str], str] = {}
        async with self._sessions() as session:
            for start in range(0, len(pairs), _LOOKUP_CHUNK):
                # A CTE, as SQLite cannot name a VALUES list's columns in FROM.
                wanted = (
                    values(column("doc_id", String), column("src", String), name="wanted")
                    .data(pairs[start : start + _LOOKUP_CHUNK])
                    .cte("wanted")
                )
                first = (
                    select(Operation.user_id)
                    .where(Operation.doc_id == wanted.c.doc_id, Operation.src == wanted.c.src)
                    .order_by(Operation.seq)
                    .limit(1)
                    .scalar_subquery()
                )
                rows = await session.execute(select(wanted.c.doc_id, wanted.c.src, first))
                for doc, src, user_id in rows:
                    if user_id is not None:
                        owners[(doc, src)] = user_id
        return owners

    async def save_snapshot(self, doc_id: str, rev: int, content: str, now: datetime) -> None:
        if self._snapshot_writer is not None:
            await self._snapshot_writer.save_snapshot(doc_id, rev, content, now)
            return
        async with self._sessions() as session:
            try:
                async with session.begin():
                    exists = await session.get(Snapshot, (doc_id, rev))
                    if exists is None:
                        session.add(
                            Snapshot(doc_id=doc_id, rev=rev, content=content, created_at=now)
                        )
            except IntegrityError:
                pass  # the document was deleted meanwhile, or another process wrote it

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
            for table in Base.metadata.sorted_tables[::-1]:
                if table.name != Document.__tablename__ and "doc_id" in table.c:
                    await session.execute(delete(table).where(table.c.doc_id == doc_id))
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
