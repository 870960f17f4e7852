"""Engine and session factory, built from settings when the app starts (never at import)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import ConnectionPoolEntry

SessionFactory = async_sessionmaker[AsyncSession]


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, sqlite_synchronous: str = "FULL") -> AsyncEngine:
    """An async engine; SQLite gets the pragmas a server needs on every new connection."""
    if not is_sqlite(url):
        return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)

    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        apply_sqlite_pragmas(dbapi_connection, sqlite_synchronous)

    return engine


def is_sqlite_file(url: str) -> bool:
    """A SQLite database in a file: an in-memory one is private to each connection."""
    if not is_sqlite(url):
        return False
    parsed = make_url(url)
    return parsed.database not in (None, "", ":memory:") and "memory" not in str(parsed.query)


def create_writer_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine | None:
    """The synchronous engine of SQLite's writer thread (``collab.storage.sqlite``), with the
    same pragmas; None for any other database, which commits on the async engine."""
    if not is_sqlite_file(url):
        return None
    engine = create_sync_engine(
        make_url(url).set(drivername="sqlite+pysqlite"), connect_args={"timeout": 30}
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        apply_sqlite_pragmas(dbapi_connection, sqlite_synchronous)

    return engine


def apply_sqlite_pragmas(dbapi_connection: Any, synchronous: str) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; FULL syncs the WAL on every commit,
    # so an acknowledged op survives a power cut, not only a process crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)
