"""Resource limits of one server process: many idle connections, many idle documents.

These measure rather than race: memory per connection and per document is printed and recorded
(``record_property``, so it lands in JUnit XML), and only a very generous bound is asserted, so
a slow CI machine does not fail them while a leak of a megabyte per connection still does.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect

from collab.db import create_engine, create_session_factory
from collab.models import Document, Snapshot
from tests.support import ServerProcess, auth, recv_json, recv_until

MiB = 1024 * 1024
PEERS_PER_DOC = 20  # idle clients spread over documents, as real editing sessions are
OPENING_CONCURRENCY = 64


def local_http(server: ServerProcess) -> httpx.AsyncClient:
    # Plain HTTP to localhost: skipping the CA bundle saves ~30 ms per client, per call here.
    return httpx.AsyncClient(base_url=server.base_url, verify=False)


def raise_fd_limit(connections: int) -> None:
    """Both ends of every socket live in processes started from here; the child inherits this."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 512
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def rss(server: ServerProcess) -> int:
    assert server.process is not None
    return int(psutil.Process(server.process.pid).memory_info().rss)


async def metric(server: ServerProcess, name: str) -> float:
    async with local_http(server) as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


async def wait_for_metric(
    server: ServerProcess, name: str, expected: float, within: float
) -> None:
    deadline = time.monotonic() + within
    while (value := await metric(server, name)) != expected:
        assert time.monotonic() < deadline, f"{name} is {value}, expected {expected}"
        await asyncio.sleep(0.1)  # polling an HTTP endpoint, not synchronising on a guess


@asynccontextmanager
async def many_open(
    server: ServerProcess, docs: list[str]
) -> AsyncIterator[list[ClientConnection]]:
    """One connection per entry of ``docs``, each past its ``init``; all closed together."""
    gate = asyncio.Semaphore(OPENING_CONCURRENCY)
    headers = auth("idler")
    sockets: list[ClientConnection] = []

    async def one(doc: str) -> None:
        async with gate:
            # No keepalive pings: thousands of idle clients pinging is a load test, not this.
            # An unbounded receive queue: these clients never read the join/leave frames of
            # their peers, and a paused reader would stall the closing handshake at the end.
            ws = await connect(server.ws_url(doc), additional_headers=headers,
                               ping_interval=None, open_timeout=60, max_queue=None)
            sockets.append(ws)
            init = await recv_json(ws, timeout=60)
            assert (init["type"], init["doc"]) == ("init", doc)

    try:
        await asyncio.gather(*(one(doc) for doc in docs))
        yield sockets
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


async def newcomer_can_edit(server: ServerProcess, doc: str) -> None:
    async with connect(server.ws_url(doc), additional_headers=auth("newcomer")) as ws:
        init = await recv_json(ws)
        frame = {"type": "op", "rev": init["rev"], "op": ["hi"], "src": "newcomer", "seq": 1}
        await ws.send(json.dumps(frame))
        ack = await recv_until(ws, "ack", timeout=30)
        assert ack["rev"] == init["rev"] + 1


async def idle_connections(
    server: ServerProcess, count: int, record_property: Callable[[str, Any], None]
) -> None:
    await newcomer_can_edit(server, "warm-up")  # imports, pools and caches are not per-connection
    before = rss(server)
    started = time.monotonic()
    docs = [f"idle-{i // PEERS_PER_DOC}" for i in range(count)]
    async with many_open(server, docs) as sockets:
        opened_in = time.monotonic() - started
        await wait_for_metric(server, "collab_connections", count, within=60)
        during = rss(server)
        # All still up, and the server still serves someone new on a busy and a fresh document.
        await newcomer_can_edit(server, docs[0])
        await newcomer_can_edit(server, "fresh")
        assert all(ws.close_code is None for ws in sockets)
        await wait_for_metric(server, "collab_connections", count, within=30)
    per_connection = (during - before) / count
    record_property("rss_before_mib", round(before / MiB, 1))
    record_property("rss_with_connections_mib", round(during / MiB, 1))
    record_property("rss_per_connection_kib", round(per_connection / 1024, 1))
    print(f"\n{count} idle connections opened in {opened_in:.1f} s; server RSS "
          f"{before / MiB:.1f} -> {during / MiB:.1f} MiB, "
          f"{per_connection / 1024:.1f} KiB per connection")
    await wait_for_metric(server, "collab_connections", 0, within=60)
    # 300 sockets measure 43-48 KiB each here (the allocator's arenas and the documents'
    # actors are shared by few of them; 2,000 in `make bench` come to 16 KiB). Twice that
    # fails when a connection starts holding something per socket it did not before.
    assert per_connection < 96 * 1024


async def test_300_idle_connections_stay_up(
    server_factory: Callable[..., ServerProcess], record_property: Callable[[str, Any], None]
) -> None:
    raise_fd_limit(300)
    await idle_connections(server_factory(), 300, record_property)


@pytest.mark.slow
async def test_2000_idle_connections_stay_up(
    server_factory: Callable[..., ServerProcess], record_property: Callable[[str, Any], None]
) -> None:
    raise_fd_limit(2000)
    await idle_connections(server_factory(), 2000, record_property)


async def create_documents(database_url: str, ids: list[str]) -> None:
    """Stores documents in one transaction: this test is about loading them, not creating."""
    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            now = datetime.now(UTC)
            session.add_all(
                Document(id=doc_id, title="", rev=0, created_at=now, updated_at=now)
                for doc_id in ids
            )
            await session.flush()
            session.add_all(
                Snapshot(doc_id=doc_id, rev=0, content="", created_at=now) for doc_id in ids
            )
    finally:
        await engine.dispose()


async def load_and_unload(
    server: ServerProcess, docs: list[str]
) -> tuple[int, int, float, float]:
    """Loads every document at once, lets them all go idle.

    Returns the peak RSS, the RSS once all are unloaded, and how long opening and unloading took.
    """
    timer = time.monotonic()
    # Held open until every document is loaded, so all are loaded at the same time.
    async with many_open(server, docs):
        opened_in = time.monotonic() - timer
        assert await metric(server, "collab_documents_loaded") == len(docs)
        peak = rss(server)
    closed_at = time.monotonic()
    await wait_for_metric(server, "collab_documents_loaded", 0, within=60)
    return peak, rss(server), opened_in, time.monotonic() - closed_at


async def idle_documents(
    server: ServerProcess, count: int, record_property: Callable[[str, Any], None]
) -> None:
    first, second = [f"a-{i}" for i in range(count)], [f"b-{i}" for i in range(count)]
    await create_documents(server.database_url, first + second)
    await newcomer_can_edit(server, "warm-up")
    await wait_for_metric(server, "collab_documents_loaded", 0, within=30)
    before = rss(server)
    peak, after, opened_in, unloaded_in = await load_and_unload(server, first)
    # CPython keeps freed memory in its own allocator for reuse rather than returning it to
    # the OS, so RSS stays near the peak after one round. A second round of as many other
    # documents shows whether that memory is reused (no leak) or grows again (leak).
    peak2, after2, _, _ = await load_and_unload(server, second)
    growth = peak - before
    record_property("rss_before_mib", round(before / MiB, 1))
    record_property("rss_all_loaded_mib", round(peak / MiB, 1))
    record_property("rss_after_unload_mib", round(after / MiB, 1))
    record_property("rss_after_second_round_mib", round(after2 / MiB, 1))
    each = growth / count / 1024
    print(f"\n{count} documents opened in {opened_in:.1f} s: server RSS "
          f"{before / MiB:.1f} MiB before, {peak / MiB:.1f} MiB with all loaded "
          f"({each:.1f} KiB each with its client), {after / MiB:.1f} MiB once all were "
          f"unloaded ({unloaded_in:.1f} s after the last client left); a second round of "
          f"{count} other documents: peak {peak2 / MiB:.1f} MiB, {after2 / MiB:.1f} MiB after")
    await newcomer_can_edit(server, f"a-{count - 1}")  # unloaded, not gone
    assert after2 - after < max(0.25 * growth, 8 * MiB)


async def test_300_idle_documents_are_unloaded(
    server_factory: Callable[..., ServerProcess], record_property: Callable[[str, Any], None]
) -> None:
    raise_fd_limit(300)
    server = server_factory(COLLAB_DOC_IDLE_SECONDS="1")
    await idle_documents(server, 300, record_property)


@pytest.mark.slow
async def test_1000_idle_documents_are_unloaded(
    server_factory: Callable[..., ServerProcess], record_property: Callable[[str, Any], None]
) -> None:
    raise_fd_limit(1000)
    server = server_factory(COLLAB_DOC_IDLE_SECONDS="1")
    await idle_documents(server, 1000, record_property)
