"""SQLite's committer: one writer thread; the batches waiting when it is free share a transaction.

aiosqlite hands each statement to its thread and back (about eight hand-offs per transaction,
~1 ms of CPU); here a whole group of batches, from any document, costs one hand-off and one
fsync. docs/benchmarks.md has the measurements.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import IntegrityError

from collab.storage.base import CommitRequest
from collab.storage.sql import ADVANCE, INSERT_OPS, Waiting, insert_into, settle, winners_rows


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
    """Commits on a dedicated thread with the injected synchronous engine.

    The loop side only queues a request and wakes the thread when it is idle; the thread's
    answer comes back in one callback for the whole group. A group is atomic only per batch in
    effect: a batch whose document moved is skipped (its ``UPDATE`` matched nothing) while the
    others commit; a constraint violation rolls the group back and each batch is retried alone.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        dialect = engine.dialect
        self._dialect = dialect
        self._advance = DriverStatement(ADVANCE, dialect)
        self._insert_ops = DriverStatement(INSERT_OPS, dialect)
        self._inserts: dict[str, DriverStatement] = {}  # extra rows' tables, compiled on use
        # A plain thread and a SimpleQueue: concurrent.futures' futures, locks and callback
        # chains cost more than the hand-off itself (profiled with 50 clients).
        self._groups: queue.SimpleQueue[list[CommitRequest] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Connection | None = None  # used on the writer thread only
        self._waiting: Waiting = []
        self._in_flight: Waiting | None = None
        self._idle: asyncio.Future[None] | None = None  # close() waits on it

    def statements(self, request: CommitRequest) -> list[tuple[str, tuple[Any, ...]]]:
        """The SQL and driver parameters this writer runs for ``request``, in order (without
        the transaction around them): what a benchmark replays to find the floor."""
        runs = [(self._advance.sql, self._advance.parameters(request.advance_params()))]
        runs += [(self._insert_ops.sql, self._insert_ops.parameters(r)) for r in request.op_rows()]
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
        # Compiled here, on the loop, so the thread never touches the cache.
        for request, _ in group:
            for table in request.extra_rows:
                self._insert(table)
        self._groups.put([request for request, _ in group])

    def _answer(self, won: list[bool] | None, error: BaseException | None) -> None:
        """On the loop: the thread's outcome for the group in flight."""
        group, self._in_flight = self._in_flight or [], None
        settle(group, won, error)
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
        advance, insert_ops = self._advance, self._insert_ops
        try:
            # SQLAlchemy owns the transaction; the statements go to the driver's cursor.
            with conn.begin():
                cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                won = []
                for request in group:
                    cursor.execute(advance.sql, advance.parameters(request.advance_params()))
                    won.append(cursor.rowcount == 1)
                rows, extra = winners_rows(group, won)
                if rows:
                    cursor.executemany(insert_ops.sql, map(insert_ops.parameters, rows))
                for table, table_rows in extra.items():
                    statement = self._inserts[table]
                    cursor.executemany(statement.sql, map(statement.parameters, table_rows))
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

    async def close(self) -> None:
        """Answers the groups in flight, then ends the thread (the engine is its owner's)."""
        if self._thread is None:
            return
        while self._in_flight is not None or self._waiting:
            self._idle = asyncio.get_running_loop().create_future()
            if self._in_flight is None:
                self._write_next()
            await self._idle
        self._groups.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
