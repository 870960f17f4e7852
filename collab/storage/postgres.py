"""PostgreSQL's committer: the batches that wait while a transaction commits share the next one.

On asyncpg a group without extra rows is one statement in one round trip (``ONE_ROUND_TRIP``):
a server that commits one op per round trip (two clients on a hot document) waited on five
(``BEGIN``, the lock, the update, the insert, ``COMMIT``) plus the pool's ping.
docs/benchmarks.md has the measurements.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson
from sqlalchemy import column, select, update, values
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from collab.storage.base import CommitRequest, Committer
from collab.storage.sql import (
    INSERT_OPS,
    EngineCommitter,
    Waiting,
    documents_table,
    extra_rows,
    insert_into,
    op_rows,
    settle,
    winners_of,
)
from collab.types import StoredOp


def _advance_all(group: list[CommitRequest]) -> Any:
    """One ``UPDATE … FROM (VALUES …)`` that advances every document of ``group`` that is still
    at its batch's base revision, returning the ids it advanced."""
    last = [request.ops[-1] for request in group]
    batches = values(
        column("b_id", documents_table.c.id.type),
        column("b_base", documents_table.c.rev.type),
        column("b_rev", documents_table.c.rev.type),
        column("b_at", documents_table.c.updated_at.type),
        name="batches",
    ).data(
        [
            (request.doc_id, request.base_rev, op.rev, op.created_at)
            for request, op in zip(group, last, strict=True)
        ]
    )
    return (
        update(documents_table)
        .where(documents_table.c.id == batches.c.b_id, documents_table.c.rev == batches.c.b_base)
        .values(rev=batches.c.b_rev, updated_at=batches.c.b_at)
        .returning(documents_table.c.id)
    )


# One statement, so one round trip in autocommit: lock the group's documents in id order (the
# locking CTE takes the lock an UPDATE of non-key columns takes, and is read by an uncorrelated
# sub-select, which PostgreSQL evaluates once, as a one-time filter, before the update touches
# any row: two processes' groups never take the same rows in opposite orders), advance those
# still at their base revision, insert the ops of the documents advanced, and return which.
# A unique violation aborts the whole statement.
ONE_ROUND_TRIP = """
WITH locked AS (
    SELECT id FROM documents WHERE id = ANY($1::varchar[]) ORDER BY id FOR NO KEY UPDATE
),
advanced AS (
    UPDATE documents AS d SET rev = b.rev, updated_at = b.at
    FROM unnest($1::varchar[], $2::integer[], $3::integer[], $4::timestamptz[])
        AS b(id, base, rev, at)
    WHERE d.id = b.id AND d.rev = b.base AND (SELECT count(*) FROM locked) >= 0
    RETURNING d.id
),
inserted AS (
    INSERT INTO operations (doc_id, rev, op, src, seq, user_id, created_at)
    SELECT o.doc_id, o.rev, o.op, o.src, o.seq, o.user_id, o.created_at
    FROM unnest($5::varchar[], $6::integer[], $7::text[], $8::varchar[], $9::integer[],
                $10::varchar[], $11::timestamptz[])
        AS o(doc_id, rev, op, src, seq, user_id, created_at)
    WHERE o.doc_id IN (SELECT id FROM advanced)
)
SELECT id FROM advanced
"""


def one_round_trip_args(group: list[CommitRequest]) -> list[list[Any]]:
    """The eleven arrays ``ONE_ROUND_TRIP`` takes: the batches, then every op of the group."""
    batches: list[list[Any]] = [[], [], [], []]
    ops: list[list[Any]] = [[], [], [], [], [], [], []]
    for request in group:
        last = request.ops[-1]
        for column_values, value in zip(
            batches, (request.doc_id, request.base_rev, last.rev, last.created_at), strict=True
        ):
            column_values.append(value)
        for row in request.op_rows():
            for column_values, key in zip(ops, _OP_COLUMNS, strict=True):
                column_values.append(row[key])
    return batches + ops


_OP_COLUMNS = ("doc_id", "rev", "op", "src", "seq", "user_id", "created_at")
# LIMIT NULL is no limit; the revision bound is an integer column's largest value.
LOAD_OPS = """
SELECT rev, op, src, seq, user_id, created_at FROM operations
WHERE doc_id = $1 AND rev > $2 AND rev <= $3 ORDER BY rev LIMIT $4
"""
_NO_UNTIL = 2**31 - 1
# SQLSTATE class 23: a unique or foreign key violation (asyncpg's errors carry ``sqlstate``).
_INTEGRITY_VIOLATION = "23"


class GroupCommitter:
    """One transaction at a time from this process, each a fixed number of round trips however
    many documents it carries: one ``UPDATE … FROM (VALUES …)`` advances every document still
    at its base revision and returns which (a document another process moved is a lost race
    for that batch alone), then one insert of every winner's ops (and extra rows). A constraint
    violation rolls the group back and each batch goes through ``fallback`` alone.
    """

    def __init__(self, engine: AsyncEngine, fallback: Committer | None = None) -> None:
        self._engine = engine
        self._fallback = fallback or EngineCommitter(engine)
        self._waiting: Waiting = []
        self._writer: asyncio.Task[None] | None = None
        self._one_statement = engine.dialect.driver == "asyncpg"
        # Held between groups: a checkout from the pool pings the server (one round trip more).
        self._connection: _Held | None = None
        # Reads (load_ops) on a connection of their own, one at a time, in autocommit.
        self._reads: _Held | None = None
        self._reading = asyncio.Lock()

    async def commit(self, request: CommitRequest) -> bool:
        if not request.ops:
            return True
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
                    won = await self.write_group([request for request, _ in group])
                except Exception as error:
                    settle(group, None, error)
                else:
                    settle(group, won, None)
        finally:
            self._writer = None

    async def write_group(self, group: list[CommitRequest]) -> list[bool]:
        """Commits ``group`` (one batch per document) and says which batches won."""
        if len({request.doc_id for request in group}) != len(group):
            return [await self._fallback.commit(request) for request in group]
        if self._one_statement and not any(request.extra_rows for request in group):
            return await self._write_in_one_statement(group)
        if len(group) == 1:
            return [await self._fallback.commit(group[0])]
        try:
            async with self._engine.begin() as conn:
                # Lock the rows in id order first: another process's group locking the same
                # documents in another order would deadlock with this one.
                ids = sorted(request.doc_id for request in group)
                await conn.execute(
                    select(documents_table.c.id)
                    .where(documents_table.c.id.in_(ids))
                    .order_by(documents_table.c.id)
                    .with_for_update()
                )
                moved = {row[0] for row in await conn.execute(_advance_all(group))}
                won = [request.doc_id in moved for request in group]
                winners = winners_of(group, won)
                rows = op_rows(winners)
                if rows:
                    await conn.execute(INSERT_OPS, rows)
                for table, table_rows in extra_rows(winners).items():
                    await conn.execute(insert_into(table), table_rows)
            return won
        except IntegrityError:
            # One batch broke a constraint: find which by committing each on its own.
            return [await self._fallback.commit(request) for request in group]

    async def _write_in_one_statement(self, group: list[CommitRequest]) -> list[bool]:
        try:
            self._connection = held = await self._open(self._connection)
            rows = await held.driver.fetch(ONE_ROUND_TRIP, *one_round_trip_args(group))
        except Exception as error:
            if not str(getattr(error, "sqlstate", "")).startswith(_INTEGRITY_VIOLATION):
                await self._drop_connection()
                raise
            # One batch broke a constraint: find which by committing each on its own.
            return [await self._fallback.commit(request) for request in group]
        except BaseException:
            await self._drop_connection()
            raise
        moved = {row[0] for row in rows}
        return [request.doc_id in moved for request in group]

    async def load_ops(
        self, doc_id: str, after: int, until: int | None = None, limit: int | None = None
    ) -> list[StoredOp]:
        """``Store.load_ops`` in one round trip: through a session it took four (the pool's
        ping, ``BEGIN``, the query, ``ROLLBACK``) and ORM objects, and with two processes every
        lost race reads what it missed (docs/benchmarks.md). Other drivers use the session."""
        if not self._one_statement:
            return await self._session_load_ops(doc_id, after, until, limit)
        async with self._reading:
            try:
                self._reads = held = await self._open(self._reads)
                rows = await held.driver.fetch(
                    LOAD_OPS, doc_id, after, _NO_UNTIL if until is None else until, limit
                )
            except BaseException:
                await _drop(self._reads)
                self._reads = None
                raise
        return [
            StoredOp(rev, orjson.loads(op), src, seq, user_id, created_at.astimezone(UTC))
            for rev, op, src, seq, user_id, created_at in rows
        ]

    async def _session_load_ops(
        self, doc_id: str, after: int, until: int | None, limit: int | None
    ) -> list[StoredOp]:
        from collab.db import create_session_factory
        from collab.storage.sql import SqlStore

        return await SqlStore(create_session_factory(self._engine), self._fallback).load_ops(
            doc_id, after, until, limit
        )

    async def _open(self, held: _Held | None) -> _Held:
        """``held``, or a new connection if it is missing or was closed (the server restarted,
        say): what the pool's ping did at every checkout, without the round trip."""
        if held is not None:
            if not held.driver.is_closed():
                return held
            await _drop(held)
        connection = await self._engine.connect()
        raw = await connection.get_raw_connection()
        assert raw.driver_connection is not None
        return _Held(connection, raw.driver_connection)

    async def _drop_connection(self) -> None:
        """After an error the held connection may be broken: the next group takes a new one."""
        await _drop(self._connection)
        self._connection = None

    async def close(self) -> None:
        while self._writer is not None:
            await asyncio.wait([self._writer])
        for held in (self._connection, self._reads):
            if held is not None:
                await held.connection.close()
        self._connection = self._reads = None


@dataclass(frozen=True, slots=True)
class _Held:
    """A connection held between uses, and its asyncpg connection: asking SQLAlchemy for that
    at every group goes through a greenlet, a few percent of the CPU per op at low load."""

    connection: AsyncConnection
    driver: Any


async def _drop(held: _Held | None) -> None:
    """Closes a held connection that may be broken (the pool forgets it)."""
    if held is not None:
        try:
            await held.connection.invalidate()
            await held.connection.close()
        except Exception:
            pass  # it was broken already
    return None
