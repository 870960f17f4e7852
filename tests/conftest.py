from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.db import create_engine, create_session_factory, create_writer_engine
from collab.settings import Settings
from collab.storage import Committer, MemoryStore, SqlStore, Store, create_committer
from collab.storage.sqlite import SqliteWriter
from tests.support import (
    SECRET,
    ServerProcess,
    create_postgres_database,
    drop_postgres_database,
    migrate,
    open_app_client,
    postgres_url,
    services_required,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import os

    if os.environ.get("COLLAB_LONG_TESTS") == "1" or "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="long variant: set COLLAB_LONG_TESTS=1 or use -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _require_postgres() -> str:
    url = postgres_url()
    if url is None:
        if services_required():
            pytest.fail("COLLAB_REQUIRE_SERVICES=1 but COLLAB_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL tests need COLLAB_TEST_POSTGRES_URL (e.g. "
                    "postgresql+asyncpg://postgres@127.0.0.1:5432/test)")
    return url


_pg_template: dict[str, str] = {}


@asynccontextmanager
async def _postgres_test_database() -> AsyncIterator[str]:
    """A new database for one test, dropped afterwards."""
    url = await _postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(_require_postgres(), url)


async def _postgres_database() -> str:
    """A new database per test, copied from a migrated template made once per session."""
    admin = _require_postgres()
    if "name" not in _pg_template:
        from sqlalchemy.engine import make_url

        template_url = await create_postgres_database(admin)
        await asyncio.to_thread(migrate, template_url)
        _pg_template["name"] = make_url(template_url).database or ""
        _pg_template["url"] = template_url
    return await create_postgres_database(admin, template=_pg_template["name"])


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_template() -> Iterator[None]:
    yield
    if "url" in _pg_template:
        asyncio.run(drop_postgres_database(_require_postgres(), _pg_template["url"]))


_sqlite_template: dict[str, Path] = {}


def _sqlite_database(tmp_path: Path) -> str:
    if "path" not in _sqlite_template:
        import tempfile

        template = Path(tempfile.mkdtemp(prefix="collab-template-")) / "template.db"
        migrate(f"sqlite+aiosqlite:///{template}")
        _sqlite_template["path"] = template
    target = tmp_path / "collab.db"
    target.write_bytes(_sqlite_template["path"].read_bytes())
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database of its own for this test, on each backend."""
    if request.param == "sqlite":
        yield await asyncio.to_thread(_sqlite_database, tmp_path)
        return
    async with _postgres_test_database() as url:
        yield url


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "sqlite-row-by-row",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every ``Store`` implementation on a fresh database, built as the app builds it (SQLite
    commits on the writer thread, PostgreSQL through group commit); "sqlite-row-by-row" is the
    writer as it runs on a SQLite older than 3.33 (no ``UPDATE ... FROM``)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    async with contextlib.AsyncExitStack() as stack:
        if request.param.startswith("sqlite"):
            url = await asyncio.to_thread(_sqlite_database, tmp_path)
        else:
            url = await stack.enter_async_context(_postgres_test_database())
        engine = create_engine(url)
        writer_engine = create_writer_engine(url)
        committer: Committer = create_committer(engine, writer_engine)
        if request.param == "sqlite-row-by-row":
            assert writer_engine is not None
            committer = SqliteWriter(writer_engine, grouped=False)
        sql_store = SqlStore(create_session_factory(engine), committer)
        try:
            yield sql_store
        finally:
            await sql_store.close()
            if writer_engine is not None:
                writer_engine.dispose()
            await engine.dispose()


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    return await asyncio.to_thread(_sqlite_database, tmp_path)


@pytest.fixture
async def postgres_database() -> AsyncIterator[str]:
    async with _postgres_test_database() as url:
        yield url


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": database_url, "jwt_secret": SECRET}
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The in-process app (lifespan running) behind an httpx client."""
    async with open_app_client(settings) as client:
        yield client


@pytest.fixture
def server_factory(tmp_path: Path, sqlite_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """Starts real ``collab serve`` processes; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(database_url: str | None = None, **env: str) -> ServerProcess:
        server = ServerProcess(
            database_url=database_url or sqlite_url,
            log_path=tmp_path / f"server-{len(started)}.log",
            env=env,
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process is not None:
            server.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()
