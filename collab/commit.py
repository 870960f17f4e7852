"""The commit path: appending a batch of sequenced ops, the one write on every op's way to its ack.

A commit is three Core statements: advance ``documents.rev`` from the revision the batch was
sequenced on (the optimistic check that makes several writers safe), insert the ops, and insert
a snapshot now and then. Both production committers put every batch that waits while a
transaction is being written, from any document, into the next transaction:

- :class:`SqliteWriter` runs them on one thread of its own with a synchronous connection.
  aiosqlite hands each statement to its thread and back (about eight hand-offs per
  transaction, ~1 ms of CPU); here a whole group costs one hand-off and one fsync.
- :class:`GroupCommitter` (PostgreSQL) runs them on the async engine, a fixed number of round
  trips per group.
- :class:`EngineCommitter` is one transaction per batch: the fallback of both, and the path for
  any other database.

docs/benchmarks.md has the measurements.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import orjson
from sqlalchemy import Connection, bindparam, column, event, insert, select, update, values
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from collab import ot
from collab.db import apply_sqlite_pragmas, is_sqlite
from collab.models import Base, Document, Operation, Snapshot

log = logging.getLogger(__name__)

_documents = Base.metadata.tables[Document.__tablename__]
_operations = Base.metadata.tables[Operation.__tablename__]
_snapshots = Base.metadata.tables[Snapshot.__tablename__]

# Core statements built once: the same SQL as the ORM-enabled update()/insert(), without the
# ORM's bulk bookkeeping, which costs more CPU than SQLite's own work (docs/benchmarks.md).
_ADVANCE = (
    update(_documents)
    .where(
        _documents.c.id == bindparam("b_id", type_=_documents.c.id.type),
        _documents.c.rev == bindparam("b_base", type_=_documents.c.rev.type),
    )
    .values(
        rev=bindparam("b_rev", type_=_documents.c.rev.type),
        updated_at=bindparam("b_at", type_=_documents.c.updated_at.type),
    )
)
_INSERT_OPS = insert(_operations)
_INSERT_SNAPSHOT = insert(_snapshots)


class CommittedOp(Protocol):
    """What a commit needs of an op (``collab.store.StoredOp`` has it)."""

    @property
    def rev(self) -> int: ...
    @property
    def op(self) -> ot.Op: ...
    @property
    def src(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def user_id(self) -> str: ...
    @property
    def created_at(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class CommitRequest:
    doc_id: str
    base_rev: int
    ops: Sequence[CommittedOp]
    snapshot: tuple[int, str] | None

    def advance_params(self) -> dict[str, Any]:
        last = self.ops[-1]
        return {
            "b_id": self.doc_id,
            "b_base": self.base_rev,
            "b_rev": last.rev,
            "b_at": last.created_at,
        }

    def op_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "doc_id": self.doc_id,
                "rev": o.rev,
                "op": encode_op(o.op),
                "src": o.src,
                "seq": o.seq,
                "user_id": o.user_id,
                "created_at": o.created_at,
            }
            for o in self.ops
        ]

    def snapshot_row(self) -> dict[str, Any] | None:
        if self.snapshot is None:
            return None
        rev, content = self.snapshot
        return {
            "doc_id": self.doc_id,
            "rev": rev,
            "content": content,
            "created_at": self.ops[-1].created_at,
        }


def encode_op(op: ot.Op) -> str:
    return orjson.dumps(op).decode()


class Committer(Protocol):
    async def commit(self, request: CommitRequest) -> bool:
        """True once the batch is durable; False if the document moved or is gone (nothing
        is written then)."""
        ...

    async def close(self) -> None: ...


class _LostRace(Exception):
    """Aborts a commit's transaction when the document moved under it."""


def rowcount(result: Any) -> int:
    count: int = result.rowcount
    return count


Waiting: TypeAlias = list[tuple[CommitRequest, asyncio.Future[bool]]]  # callers and their answers


def _winners_rows(
    group: Sequence[CommitRequest], won: Sequence[bool]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The op rows and snapshot rows of the batches of ``group`` whose document advanced."""
    winners = [request for request, ok in zip(group, won, strict=True) if ok]
    ops = [row for request in winners for row in request.op_rows()]
    snapshots = [
        snapshot for request in winners if (snapshot := request.snapshot_row()) is not None
    ]
    return ops, snapshots


def _settle(group: Waiting, won: Sequence[bool] | None, error: BaseException | None) -> None:
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
    """One transaction per batch on the async engine's pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def commit(self, request: CommitRequest) -> bool:
        try:
            async with self._engine.begin() as conn:
                moved = await conn.execute(_ADVANCE, request.advance_params())
                if rowcount(moved) != 1:
                    raise _LostRace
                await conn.execute(_INSERT_OPS, request.op_rows())
                snapshot = request.snapshot_row()
                if snapshot is not None:
                    await conn.execute(_INSERT_SNAPSHOT, snapshot)
        except (_LostRace, IntegrityError):
            return False
        return True

    async def close(self) -> None:
        pass


def _advance_all(group: Sequence[CommitRequest]) -> Any:
    """One ``UPDATE … FROM (VALUES …)`` that advances every document of ``group`` that is still
    at its batch's base revision, returning the ids it advanced (PostgreSQL)."""
    last = [request.ops[-1] for request in group]
    batches = values(
        column("b_id", _documents.c.id.type),
        column("b_base", _documents.c.rev.type),
        column("b_rev", _documents.c.rev.type),
        column("b_at", _documents.c.updated_at.type),
        name="batches",
    ).data(
        [
            (request.doc_id, request.base_rev, op.rev, op.created_at)
            for request, op in zip(group, last, strict=True)
        ]
    )
    return (
        update(_documents)
        .where(_documents.c.id == batches.c.b_id, _documents.c.rev == batches.c.b_base)
        .values(rev=batches.c.b_rev, updated_at=batches.c.b_at)
        .returning(_documents.c.id)
    )


class GroupCommitter:
    """PostgreSQL: the batches that wait while a transaction commits share the next one.

    One transaction at a time from this process, each a fixed number of round trips however
    many documents it carries: one ``UPDATE … FROM (VALUES …)`` advances every document still
    at its base revision and returns which (a document another process moved is a lost race
    for that batch alone), then one insert of every winner's ops and snapshots. A constraint
    violation rolls the group back and each batch is committed alone.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._single = EngineCommitter(engine)
        self._waiting: Waiting = []
        self._writer: asyncio.Task[None] | None = None

    async def commit(self, request: CommitRequest) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all(), name="group-commit")
        return await done

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    won = await self._write_group([request for request, _ in group])
                except Exception as error:
                    _settle(group, None, error)
                else:
                    _settle(group, won, None)
        finally:
            self._writer = None

    async def _write_group(self, group: list[CommitRequest]) -> list[bool]:
        if len(group) == 1 or len({request.doc_id for request in group}) != len(group):
            return [await self._single.commit(request) for request in group]
        try:
            async with self._engine.begin() as conn:
                # Lock the rows in id order first: another process's group locking the same
                # documents in another order would deadlock with this one.
                ids = sorted(request.doc_id for request in group)
                await conn.execute(
                    select(_documents.c.id)
                    .where(_documents.c.id.in_(ids))
                    .order_by(_documents.c.id)
                    .with_for_update()
                )
                moved = {row[0] for row in await conn.execute(_advance_all(group))}
                won = [request.doc_id in moved for request in group]
                rows, snapshots = _winners_rows(group, won)
                if rows:
                    await conn.execute(_INSERT_OPS, rows)
                if snapshots:
                    await conn.execute(_INSERT_SNAPSHOT, snapshots)
            return won
        except IntegrityError:
            # One batch broke a constraint: find which by committing each on its own.
            return [await self._single.commit(request) for request in group]

    async def close(self) -> None:
        while self._writer is not None:
            await asyncio.wait([self._writer])


class _DriverStatement:
    """A Core statement compiled once for the driver's cursor, with its parameters' processors.

    The writer thread runs a few statements per document per transaction; through
    ``Connection.execute`` each costs tens of microseconds of Python (cache lookups, execution
    context, result object) while holding the GIL the event loop needs. Here SQLAlchemy still
    writes the SQL and converts the values (the same datetime format the rest of the app reads
    back), once per statement and once per value.
    """

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        names = tuple(compiled.positiontup or ())
        self._names = names
        # dialect_impl: the dialect's own type (SQLite's DATETIME and its storage format).
        self._processors = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in names
        )

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            values[name] if process is None else process(values[name])
            for name, process in zip(self._names, self._processors, strict=True)
        )


class SqliteWriter:
    """Commits on a dedicated thread; the batches waiting when it is free share a transaction.

    The loop side only queues a request and wakes the thread when it is idle; the thread's
    answer comes back in one callback for the whole group. A group is atomic only per batch in
    effect: a batch whose document moved is skipped (its ``UPDATE`` matched nothing) while the
    others commit; a constraint violation rolls the group back and each batch is retried alone.
    """

    def __init__(self, url: URL | str, synchronous: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite+pysqlite")
        self._engine: Engine = create_sync_engine(sync_url, connect_args={"timeout": 30})

        @event.listens_for(self._engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            apply_sqlite_pragmas(dbapi_connection, synchronous)

        dialect = self._engine.dialect
        self._advance = _DriverStatement(_ADVANCE, dialect)
        self._insert_ops = _DriverStatement(_INSERT_OPS, dialect)
        self._insert_snapshot = _DriverStatement(_INSERT_SNAPSHOT, dialect)
        # A plain thread and a SimpleQueue: concurrent.futures' futures, locks and callback
        # chains cost more than the hand-off itself (profiled with 50 clients).
        self._groups: queue.SimpleQueue[list[CommitRequest] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Connection | None = None  # used on the writer thread only
        self._waiting: Waiting = []
        self._in_flight: Waiting | None = None
        self._idle: asyncio.Future[None] | None = None  # close() waits on it

    @staticmethod
    def usable(url: str) -> bool:
        """A file database: an in-memory one is private to each connection."""
        if not is_sqlite(url):
            return False
        parsed = make_url(url)
        return parsed.database not in (None, "", ":memory:") and "memory" not in str(parsed.query)

    async def commit(self, request: CommitRequest) -> bool:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((request, done))
        if self._thread is None:
            self._loop = loop
            self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
            self._thread.start()
        if self._in_flight is None:
            self._write_next()
        return await done

    def _write_next(self) -> None:
        group, self._waiting = self._waiting, []
        self._in_flight = group
        self._groups.put([request for request, _ in group])

    def _answer(self, won: list[bool] | None, error: BaseException | None) -> None:
        """On the loop: the thread's outcome for the group in flight."""
        group, self._in_flight = self._in_flight or [], None
        _settle(group, won, error)
        if self._waiting:
            self._write_next()
        elif self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    # -- on the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            while (group := self._groups.get()) is not None:
                try:
                    won = self._write_group(group)
                except Exception as error:
                    loop.call_soon_threadsafe(self._answer, None, error)
                else:
                    loop.call_soon_threadsafe(self._answer, won, None)
        except RuntimeError:
            pass  # the loop was closed without close(): nobody is waiting any more
        finally:
            self._close_connection()

    def _write_group(self, group: list[CommitRequest]) -> list[bool]:
        if self._connection is None:
            self._connection = self._engine.connect()
        conn = self._connection
        advance, insert_ops, insert_snapshot = (
            self._advance,
            self._insert_ops,
            self._insert_snapshot,
        )
        try:
            # SQLAlchemy owns the transaction; the statements go to the driver's cursor.
            with conn.begin():
                cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                won = []
                for request in group:
                    cursor.execute(advance.sql, advance.parameters(request.advance_params()))
                    won.append(cursor.rowcount == 1)
                rows, snapshots = _winners_rows(group, won)
                if rows:
                    cursor.executemany(insert_ops.sql, map(insert_ops.parameters, rows))
                if snapshots:
                    cursor.executemany(
                        insert_snapshot.sql, map(insert_snapshot.parameters, snapshots)
                    )
                cursor.close()
            return won
        except (IntegrityError, sqlite3.IntegrityError):
            if len(group) == 1:
                return [False]
            # One batch broke a constraint: find which by committing each on its own.
            return [self._write_group([request])[0] for request in group]

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()

    async def close(self) -> None:
        if self._thread is None:
            self._engine.dispose()
            return
        # Let the groups in flight answer their callers before the thread goes.
        while self._in_flight is not None or self._waiting:
            self._idle = asyncio.get_running_loop().create_future()
            if self._in_flight is None:
                self._write_next()
            await self._idle
        self._groups.put(None)
        await asyncio.to_thread(self._thread.join)


def create_committer(engine: AsyncEngine, synchronous: str) -> Committer:
    url = engine.url.render_as_string(hide_password=False)
    if SqliteWriter.usable(url):
        return SqliteWriter(engine.url, synchronous)
    if engine.dialect.name == "postgresql":
        return GroupCommitter(engine)
    return EngineCommitter(engine)
