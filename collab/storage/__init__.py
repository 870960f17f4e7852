"""Storage: the ``Store`` and ``Committer`` interfaces and their implementations.

=================  ==========================================================================
``base``           the interfaces, ``CommitRequest`` (ops plus rows of other tables committed
                   in the same transaction)
``sql``            ``SqlStore`` on an injected ``async_sessionmaker``; ``EngineCommitter``
``sqlite``         ``SqliteWriter``: one writer thread, group commit, one fsync per group
``postgres``       ``GroupCommitter``: group commit on the async engine
``memory``         ``MemoryStore`` and ``MemoryCommitter``: the same contract, no database
=================  ==========================================================================

One contract suite (``tests/test_store.py``) runs against memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from collab.storage.base import CommitRequest, Committer, ExtraRows, LostRace, Store, encode_op
from collab.storage.memory import MemoryCommitter, MemoryDatabase, MemoryStore
from collab.storage.sql import EngineCommitter, SqlStore

__all__ = [
    "CommitRequest",
    "Committer",
    "EngineCommitter",
    "ExtraRows",
    "LostRace",
    "MemoryCommitter",
    "MemoryDatabase",
    "MemoryStore",
    "SqlStore",
    "Store",
    "create_committer",
    "encode_op",
]


def create_committer(engine: AsyncEngine, writer_engine: Engine | None) -> Committer:
    """The fastest committer for the database: SQLite's writer thread on ``writer_engine``
    (built at startup by ``collab.db.create_writer_engine``), PostgreSQL's group commit, or
    one transaction per batch."""
    if writer_engine is not None:
        from collab.storage.sqlite import SqliteWriter

        return SqliteWriter(writer_engine)
    if engine.dialect.name == "postgresql":
        from collab.storage.postgres import GroupCommitter

        return GroupCommitter(engine)
    return EngineCommitter(engine)
