"""SQLite's committer: one writer thread; the batches waiting when it is free share a transaction.

aiosqlite hands each statement to its thread and back (about eight hand-offs per transaction,
~1 ms of CPU); here a whole group of batches, from any document, costs one hand-off and one
fsync.

A group is written in a fixed number of statements, whatever its size: the rows travel as one
JSON array that SQLite unpacks with ``json_each``. The sqlite3 module lets go of the GIL around
every step of a statement, and each time the writer wants it back while the event loop is busy
it waits up to the interpreter's switch interval (5 ms): a group of 240 batches written row by
row took 9 ms on its own and over a second beside a busy loop. docs/benchmarks.md has the
measurements.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import orjson
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import IntegrityError

from collab.storage.base import CommitRequest, encode_op
from collab.storage.sql import (
    ADVANCE,
    INSERT_OPS,
    Waiting,
    extra_rows,
    insert_into,
    op_rows,
    settle,
    winners_of,
)

# A snapshot rides in the next group's transaction: written unless one exists at that revision
# (OR IGNORE) or the document is gone (the EXISTS check: a foreign key failure would roll the
# whole group back).
INSERT_SNAPSHOT = insert_into("snapshots").prefix_with("OR IGNORE")
SNAPSHOT_DOCUMENT_EXISTS = "SELECT 1 FROM documents WHERE id = ?"

# UPDATE ... FROM: SQLite 3.33. An older library writes a group row by row.
GROUPED_STATEMENTS = sqlite3.sqlite_version_info >= (3, 33, 0)

# (doc_id, rev, content, created_at) and who waits for it.
WaitingSnapshots: TypeAlias = list[tuple[dict[str, Any], asyncio.Future[None]]]


class DriverStatement:
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
        self.names = names
        # dialect_impl: the dialect's own type (SQLite's DATETIME and its storage format).
        self._processors = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in names
        )

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            values[name] if process is None else process(values[name])
            for name, process in zip(self.names, self._processors, strict=True)
        )

    def processor(self, name: str) -> Callable[[Any], Any]:
        """How parameter ``name``'s values are converted for the driver."""
        process = self._processors[self.names.index(name)]
        return (lambda value: value) if process is None else process


def _extract(*names: str, element: str = "value") -> dict[str, str]:
    """The SQL reading each of ``names`` out of one ``json_each`` element: an array of the
    values in that order."""
    return {name: f"json_extract({element}, '$[{i}]')" for i, name in enumerate(names)}


class GroupStatements:
    """The writer's SQL for a whole group, each statement taking every row at once as one JSON
    array of arrays, and those arrays built straight from the requests.

    Values are converted as SQLAlchemy converts them (the processors of the single-row
    statements), so a row stored either way has the same bytes (tests/test_store.py checks).
    """

    def __init__(self, advance: DriverStatement, insert_ops: DriverStatement) -> None:
        self._stamp = insert_ops.processor("created_at")
        self._stamp_document = advance.processor("b_at")
        moved = _extract("id", "base", "rev", "at", element="g.value")
        self.advance_sql = (
            f"UPDATE documents SET rev = {moved['rev']}, updated_at = {moved['at']} "
            f"FROM json_each(?) AS g "
            f"WHERE documents.id = {moved['id']} AND documents.rev = {moved['base']}"
        )
        # Which batches moved their document, when not all did: one row, a JSON array of
        # their indexes in the group.
        self.advanced_sql = (
            "SELECT json_group_array(g.key) FROM json_each(?) AS g JOIN documents "
            f"ON documents.id = {moved['id']} AND documents.rev = {moved['rev']} "
            f"AND documents.updated_at = {moved['at']}"
        )
        self.insert_ops_sql = _insert_select(
            "operations", ("doc_id", "rev", "op", "src", "seq", "user_id", "created_at")
        )
        # The EXISTS check: a snapshot of a deleted document would fail its foreign key and
        # roll the whole group back.
        snapshot = _extract("doc_id")
        self.insert_snapshots_sql = (
            _insert_select("snapshots", ("doc_id", "rev", "content", "created_at"), "OR IGNORE")
            + f" WHERE EXISTS (SELECT 1 FROM documents WHERE id = {snapshot['doc_id']})"
        )

    def advances(self, group: Sequence[CommitRequest]) -> str:
        stamp = self._stamp_document
        return _json(
            [(r.doc_id, r.base_rev, r.ops[-1].rev, stamp(r.ops[-1].created_at)) for r in group]
        )

    def ops(self, requests: Iterable[CommitRequest]) -> str:
        stamp = self._stamp
        rows = []
        for request in requests:
            doc_id = request.doc_id
            at, stamped = None, None
            for o in request.ops:
                if o.created_at is not at:  # a batch's ops share their time: convert it once
                    at, stamped = o.created_at, stamp(o.created_at)
                rows.append((doc_id, o.rev, encode_op(o.op), o.src, o.seq, o.user_id, stamped))
        return _json(rows)

    def snapshots(self, rows: Iterable[dict[str, Any]]) -> str:
        stamp = self._stamp
        return _json([(r["doc_id"], r["rev"], r["content"], stamp(r["created_at"])) for r in rows])


def _json(rows: list[tuple[Any, ...]]) -> str:
    return orjson.dumps(rows).decode()


def _insert_select(table: str, columns: tuple[str, ...], prefix: str = "") -> str:
    values = ", ".join(_extract(*columns).values())
    verb = f"INSERT {prefix} INTO" if prefix else "INSERT INTO"
    return f"{verb} {table} ({', '.join(columns)}) SELECT {values} FROM json_each(?)"


class SqliteWriter:
    """Commits on a dedicated thread with the injected synchronous engine.

    The loop side only queues a request and wakes the thread when it is idle; the thread's
    answer comes back in one callback for the whole group. A group is atomic only per batch in
    effect: a batch whose document moved is skipped (its ``UPDATE`` matched nothing) while the
    others commit; a constraint violation rolls the group back and each batch is retried alone.
    """

    def __init__(self, engine: Engine, *, grouped: bool = GROUPED_STATEMENTS) -> None:
        self._engine = engine
        dialect = engine.dialect
        self._dialect = dialect
        self._advance = DriverStatement(ADVANCE, dialect)
        self._insert_ops = DriverStatement(INSERT_OPS, dialect)
        self._insert_snapshot = DriverStatement(INSERT_SNAPSHOT, dialect)
        self._grouped = GroupStatements(self._advance, self._insert_ops) if grouped else None
        self._inserts: dict[str, DriverStatement] = {}  # extra rows' tables, compiled on use
        # A plain thread and a SimpleQueue: concurrent.futures' futures, locks and callback
        # chains cost more than the hand-off itself (profiled with 50 clients).
        self._groups: queue.SimpleQueue[tuple[list[CommitRequest], list[dict[str, Any]]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Connection | None = None  # used on the writer thread only
        self._waiting: Waiting = []
        self._snapshots: WaitingSnapshots = []
        self._in_flight: tuple[Waiting, WaitingSnapshots] | None = None
        self._idle: asyncio.Future[None] | None = None  # close() waits on it

    def statements(self, request: CommitRequest) -> list[tuple[str, tuple[Any, ...]]]:
        """The SQL and driver parameters this writer runs for ``request`` alone, in order
        (without the transaction around them): what a benchmark replays to find the floor."""
        grouped = self._grouped
        if grouped is not None:
            runs = [
                (grouped.advance_sql, (grouped.advances([request]),)),
                (grouped.insert_ops_sql, (grouped.ops([request]),)),
            ]
        else:
            runs = [(self._advance.sql, self._advance.parameters(request.advance_params()))]
            runs += [
                (self._insert_ops.sql, self._insert_ops.parameters(r)) for r in request.op_rows()
            ]
        for table, rows in request.extra_rows.items():
            statement = self._insert(table)
            runs += [(statement.sql, statement.parameters(dict(row))) for row in rows]
        return runs

    def _insert(self, table: str) -> DriverStatement:
        statement = self._inserts.get(table)
        if statement is None:
            statement = self._inserts[table] = DriverStatement(insert_into(table), self._dialect)
        return statement

    async def commit(self, request: CommitRequest) -> bool:
        if not request.ops:
            return True
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, done))
        self._start()
        return await done

    async def save_snapshot(self, doc_id: str, rev: int, content: str, now: datetime) -> None:
        """``Store.save_snapshot`` in the next group's transaction: as its own transaction it
        was a second writer, with its own ``fsync`` and SQLite's write lock, which the op
        commits then waited for (``SqlStore`` uses this when its committer has it)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        row = {"doc_id": doc_id, "rev": rev, "content": content, "created_at": now}
        self._snapshots.append((row, done))
        self._start()
        await done

    def _start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
            self._thread.start()
        if self._in_flight is None:
            self._write_next()

    def _write_next(self) -> None:
        group, self._waiting = self._waiting, []
        snapshots, self._snapshots = self._snapshots, []
        self._in_flight = (group, snapshots)
        # Compiled here, on the loop, so the thread never touches the cache.
        for request, _ in group:
            for table in request.extra_rows:
                self._insert(table)
        self._groups.put(([request for request, _ in group], [row for row, _ in snapshots]))

    def _answer(self, won: list[bool] | None, error: BaseException | None) -> None:
        """On the loop: the thread's outcome for the group in flight."""
        group, snapshots = self._in_flight or ([], [])
        self._in_flight = None
        settle(group, won, error)
        for _, done in snapshots:
            if not done.done():
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(None)
        if self._waiting or self._snapshots:
            self._write_next()
        elif self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    # -- on the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            while (work := self._groups.get()) is not None:
                group, snapshots = work
                try:
                    won = self._write_group(group, snapshots)
                except Exception as error:
                    loop.call_soon_threadsafe(self._answer, None, error)
                else:
                    loop.call_soon_threadsafe(self._answer, won, None)
        except RuntimeError:
            pass  # the loop was closed without close(): nobody is waiting any more
        finally:
            self._close_connection()

    def _write_group(
        self,
        group: list[CommitRequest],
        snapshots: Sequence[dict[str, Any]] = (),
    ) -> list[bool]:
        if self._connection is None:
            self._connection = self._engine.connect()
        conn = self._connection
        advance, insert_ops = self._advance, self._insert_ops
        try:
            # SQLAlchemy owns the transaction; the statements go to the driver's cursor.
            with conn.begin():
                cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                grouped = self._grouped
                if grouped is not None:
                    won = self._advance_group(cursor, grouped, group)
                else:
                    won = []
                    for request in group:
                        cursor.execute(advance.sql, advance.parameters(request.advance_params()))
                        won.append(cursor.rowcount == 1)
                winners = winners_of(group, won)
                if grouped is not None:
                    if winners:
                        cursor.execute(grouped.insert_ops_sql, (grouped.ops(winners),))
                else:
                    rows = op_rows(winners)
                    if rows:
                        cursor.executemany(insert_ops.sql, map(insert_ops.parameters, rows))
                # Extra rows (a Yjs update's bytes) cannot travel in JSON: row by row.
                for table, table_rows in extra_rows(winners).items():
                    statement = self._inserts[table]
                    cursor.executemany(statement.sql, map(statement.parameters, table_rows))
                self._write_snapshots(cursor, snapshots)
                cursor.close()
            return won
        except (IntegrityError, sqlite3.IntegrityError):
            if not snapshots and len(group) == 1:
                return [False]
            # One batch broke a constraint: find which by committing each on its own (the
            # snapshots, which cannot break one, in a transaction of their own).
            won = [self._write_group([request])[0] for request in group]
            if snapshots:
                self._write_group([], snapshots)
            return won

    def _advance_group(
        self, cursor: Any, grouped: GroupStatements, group: list[CommitRequest]
    ) -> list[bool]:
        """Moves every document whose revision is its batch's base, in one statement; which
        batches did so is read back only when some did not (a lost race is rare on SQLite).
        A batch taken for a winner wrongly (its document already at that revision) breaks
        the op rows' primary key, and the group is retried batch by batch."""
        advances = grouped.advances(group)
        cursor.execute(grouped.advance_sql, (advances,))
        if cursor.rowcount == len(group):
            return [True] * len(group)
        cursor.execute(grouped.advanced_sql, (advances,))
        advanced = set(orjson.loads(cursor.fetchone()[0]))
        return [index in advanced for index in range(len(group))]

    def _write_snapshots(self, cursor: Any, snapshots: Sequence[dict[str, Any]]) -> None:
        if not snapshots:
            return
        if self._grouped is not None:
            cursor.execute(
                self._grouped.insert_snapshots_sql, (self._grouped.snapshots(snapshots),)
            )
            return
        statement = self._insert_snapshot
        for row in snapshots:
            if cursor.execute(SNAPSHOT_DOCUMENT_EXISTS, (row["doc_id"],)).fetchone():
                cursor.execute(statement.sql, statement.parameters(row))

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        """Answers the groups in flight, then ends the thread (the engine is its owner's)."""
        if self._thread is None:
            return
        while self._in_flight is not None or self._waiting or self._snapshots:
            self._idle = asyncio.get_running_loop().create_future()
            if self._in_flight is None:
                self._write_next()
            await self._idle
        self._groups.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
