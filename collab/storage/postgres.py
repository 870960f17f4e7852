"""PostgreSQL's committer: the batches that wait while a transaction commits share the next one."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import column, select, update, values
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from collab.storage.base import CommitRequest, Committer
from collab.storage.sql import (
    INSERT_OPS,
    EngineCommitter,
    Waiting,
    documents_table,
    insert_into,
    settle,
    winners_rows,
)


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
        if len(group) == 1 or len({request.doc_id for request in group}) != len(group):
            return [await self._fallback.commit(request) for request in group]
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
                rows, extra = winners_rows(group, won)
                if rows:
                    await conn.execute(INSERT_OPS, rows)
                for table, table_rows in extra.items():
                    await conn.execute(insert_into(table), table_rows)
            return won
        except IntegrityError:
            # One batch broke a constraint: find which by committing each on its own.
            return [await self._fallback.commit(request) for request in group]

    async def close(self) -> None:
        while self._writer is not None:
            await asyncio.wait([self._writer])
