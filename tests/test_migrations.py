"""Alembic (SPEC §6): the migrations create exactly what the models declare, and downgrade."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

import collab.yjs.models  # noqa: F401  (puts the Yjs tables on Base.metadata)
from collab.db import create_engine
from collab.models import Base
from tests.support import (
    alembic_config,
    create_postgres_database,
    drop_postgres_database,
    migrate,
    postgres_url,
    services_required,
)

TABLES = {
    "documents",
    "operations",
    "snapshots",
    "yjs_documents",
    "yjs_updates",
    "yjs_snapshots",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with nothing in it, not even alembic_version."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    admin = postgres_url()
    if admin is None:
        if services_required():
            pytest.fail("COLLAB_REQUIRE_SERVICES=1 but COLLAB_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL tests need COLLAB_TEST_POSTGRES_URL")
    url = await create_postgres_database(admin)
    try:
        yield url
    finally:
        await drop_postgres_database(admin, url)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _version_rows(connection: Connection) -> list[str]:
    if "alembic_version" not in _tables(connection):
        return []
    return [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]


async def _inspect(url: str, fn: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(fn)
    finally:
        await engine.dispose()


def _downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def test_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1


async def test_upgrade_matches_models_and_downgrade_leaves_nothing(empty_database: str) -> None:
    url = empty_database
    assert await _inspect(url, _tables) == set()

    await asyncio.to_thread(migrate, url)
    assert await _inspect(url, _tables) == TABLES | {"alembic_version"}
    assert await _inspect(url, _diff) == []
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert await _inspect(url, _version_rows) == [head]

    # Upgrading again is a no-op, not an error.
    await asyncio.to_thread(migrate, url)
    assert await _inspect(url, _diff) == []

    await asyncio.to_thread(_downgrade, url)
    assert await _inspect(url, _tables) <= {"alembic_version"}
    assert await _inspect(url, _version_rows) == []

    # And the whole way up again works after a downgrade.
    await asyncio.to_thread(migrate, url)
    assert await _inspect(url, _diff) == []


async def test_constraints_exist_after_upgrade(empty_database: str) -> None:
    """The keys SPEC §6 names, checked by reflection rather than trusted to the diff."""
    url = empty_database
    await asyncio.to_thread(migrate, url)

    def reflect(connection: Connection) -> dict[str, Any]:
        inspector = inspect(connection)
        return {
            "operations_pk": inspector.get_pk_constraint("operations")["constrained_columns"],
            "snapshots_pk": inspector.get_pk_constraint("snapshots")["constrained_columns"],
            "documents_pk": inspector.get_pk_constraint("documents")["constrained_columns"],
            "operations_unique": [
                u["column_names"] for u in inspector.get_unique_constraints("operations")
            ],
        }

    found = await _inspect(url, reflect)
    assert found["documents_pk"] == ["id"]
    assert found["operations_pk"] == ["doc_id", "rev"]
    assert found["snapshots_pk"] == ["doc_id", "rev"]
    assert ["doc_id", "src", "seq"] in found["operations_unique"]


async def test_downgrade_with_data(empty_database: str) -> None:
    url = empty_database
    await asyncio.to_thread(migrate, url)

    def fill(connection: Connection) -> None:
        connection.execute(text(
            "INSERT INTO documents (id, title, rev, created_at, updated_at) "
            "VALUES ('d', '', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        connection.execute(text(
            "INSERT INTO operations (doc_id, rev, op, src, seq, user_id, created_at) "
            "VALUES ('d', 1, '[\"a\"]', 's', 1, 'u', CURRENT_TIMESTAMP)"))
        connection.execute(text(
            "INSERT INTO snapshots (doc_id, rev, content, created_at) "
            "VALUES ('d', 0, '', CURRENT_TIMESTAMP)"))
        connection.commit()

    await _inspect(url, fill)
    await asyncio.to_thread(_downgrade, url)
    assert await _inspect(url, _tables) <= {"alembic_version"}


async def test_the_comparison_sees_a_missing_index(empty_database: str) -> None:
    """Guards the test above: a schema that drifted from the models is reported."""
    url = empty_database
    await asyncio.to_thread(migrate, url)

    def drop_index(connection: Connection) -> None:
        connection.execute(text("DROP INDEX ix_operations_doc_id_created_at"))
        connection.commit()

    await _inspect(url, drop_index)
    diff = await _inspect(url, _diff)
    assert [d[0] for d in diff] == ["add_index"]
