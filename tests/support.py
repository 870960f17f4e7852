"""Shared test helpers: databases per test, a real server process, frame waiting.

The waiting helpers take ``timeout=`` like ``asyncio.wait_for`` (hence the ASYNC109 noqa):
every wait in a test is bounded, and the call sites stay one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from collab import cli
from collab.app import create_app
from collab.auth import mint_token
from collab.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789abcdef-0123456789abcdef"
COLLAB = str(Path(sys.executable).with_name("collab"))


def alembic_config(url: str) -> Config:
    return cli.alembic_config(url)


def migrate(url: str, revision: str = "head") -> None:
    """Runs ``alembic upgrade``; call from a thread when an event loop is running."""
    command.upgrade(alembic_config(url), revision)


def postgres_url() -> str | None:
    return os.environ.get("COLLAB_TEST_POSTGRES_URL")


def redis_url() -> str | None:
    return os.environ.get("COLLAB_TEST_REDIS_URL")


def services_required() -> bool:
    return os.environ.get("COLLAB_REQUIRE_SERVICES") == "1"


async def create_postgres_database(admin_url: str, template: str | None = None) -> str:
    """A fresh, uniquely named database on the server of ``admin_url``; returns its URL."""
    import asyncpg

    url = make_url(admin_url)
    name = f"collab_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        database=url.database,
    )
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(admin_url: str, database_url: str) -> None:
    import asyncpg

    url = make_url(admin_url)
    name = make_url(database_url).database
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        database=url.database,
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def open_app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The in-process app, its lifespan running, behind an httpx client (``client.app``)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def token(sub: str = "alice", *, secret: str = SECRET, **kwargs: Any) -> str:
    return mint_token(secret, sub, **kwargs)


def auth(sub: str = "alice", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **kwargs)}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """``collab serve`` in a subprocess on a free port, as users run it."""

    database_url: str
    log_path: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, doc_id: str, **query: str | int) -> str:
        url = f"ws://127.0.0.1:{self.port}/ws/documents/{doc_id}"
        if query:
            url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        return url

    def start(self, timeout: float = 30.0) -> None:
        env = {
            **os.environ,
            "COLLAB_DATABASE_URL": self.database_url,
            "COLLAB_JWT_SECRET": SECRET,
            **self.env,
        }
        # The child keeps its own copy of the descriptor; ours is closed at once.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [COLLAB, "serve", "--port", str(self.port), "--log-level", "info", *self.args],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # readiness polling of a starting process, not test synchronisation
        raise RuntimeError("server did not become healthy")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Waits until ``predicate()`` holds, yielding to the loop between checks."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


async def recv_json(ws: Any, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = json.loads(await ws.recv())
        return frame


async def recv_until(ws: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
    """Receives frames until one of type ``kind`` (looking inside ``ops`` batches)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return dict(frame)
            if frame["type"] == "ops":
                for item in frame["items"]:
                    if item["type"] == kind:
                        return dict(item)
