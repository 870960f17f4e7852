"""Several server processes on one PostgreSQL database, joined by Redis (SPEC §6)."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from collab import ot
from collab.client import CollabClient
from tests.support import (
    ServerProcess,
    auth,
    free_port,
    recv_json,
    recv_until,
    redis_url,
    services_required,
    token,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def redis_env() -> dict[str, str]:
    """The machine's Redis, with a key prefix of this test's own."""
    url = redis_url()
    if url is None:
        if services_required():
            pytest.fail("COLLAB_REQUIRE_SERVICES=1 but COLLAB_TEST_REDIS_URL is not set")
        pytest.skip("scale-out tests need COLLAB_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    return {"COLLAB_REDIS_URL": url, "COLLAB_REDIS_PREFIX": f"t{uuid.uuid4().hex[:10]}:"}


@pytest.fixture
def cluster(
    tmp_path: Path, postgres_database: str
) -> Iterator[Callable[[int, dict[str, str]], list[ServerProcess]]]:
    started: list[ServerProcess] = []

    def start(count: int, env: dict[str, str]) -> list[ServerProcess]:
        servers = []
        for _ in range(count):
            server = ServerProcess(
                database_url=postgres_database,
                log_path=tmp_path / f"node-{len(started)}.log",
                env={"COLLAB_DOC_IDLE_SECONDS": "30", **env},
            )
            server.start()
            started.append(server)
            servers.append(server)
        return servers

    yield start
    for server in started:
        if server.process is not None:
            server.stop()


async def _type_randomly(client: CollabClient, rng: random.Random, count: int) -> None:
    for _ in range(count):
        text = client.text
        if text and rng.random() < 0.3:
            pos = rng.randrange(len(text))
            client.delete(pos, min(rng.randint(1, 3), len(text) - pos))
        else:
            client.insert(rng.randint(0, len(text)), rng.choice(["a", "bc", "ü", "😀", "xyz"]))
        if rng.random() < 0.5:
            await client.wait_synced(20)


async def _replay(base_url: str, doc_id: str) -> tuple[str, list[int]]:
    async with httpx.AsyncClient(base_url=base_url, headers=auth()) as http:
        text, revs, since = "", [], 0
        while True:
            page = (await http.get(f"/documents/{doc_id}/history",
                                   params={"since": since, "limit": 1000})).json()
            for item in page["ops"]:
                text = ot.apply(text, item["op"])
                revs.append(item["rev"])
            if page["next"] is None:
                return text, revs
            since = page["next"]


async def _content(base_url: str, doc_id: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base_url, headers=auth()) as http:
        body: dict[str, object] = (await http.get(f"/documents/{doc_id}")).json()
        return body


async def _settle(clients: list[CollabClient]) -> None:
    """Waits until every client's edits are acknowledged, so the history holds them all."""
    for client in clients:
        await client.wait_synced(30)


async def _converged(clients: list[CollabClient], rev: int) -> None:
    await _settle(clients)
    for client in clients:
        await client.wait_rev(rev, 30)


async def test_clients_spread_over_processes_converge(cluster, redis_env) -> None:
    servers = cluster(3, redis_env)
    doc_id = "spread"
    clients = [
        await CollabClient.connect(servers[i % 3].base_url, doc_id, token(f"user{i}"))
        for i in range(6)
    ]
    try:
        rng = random.Random(7)
        await asyncio.gather(
            *(_type_randomly(c, random.Random(rng.random()), 25) for c in clients)
        )
        await _settle(clients)
        text, revs = await _replay(servers[0].base_url, doc_id)
        assert revs == list(range(1, len(revs) + 1)), "revisions are contiguous"
        await _converged(clients, revs[-1])
        assert {c.text for c in clients} == {text}
        for server in servers:
            assert (await _content(server.base_url, doc_id))["content"] == text
        # Peers on other processes are visible in presence: every client knows the other five.
        await wait_for(lambda: all(len(c.peers) >= 5 for c in clients), timeout=10)
    finally:
        for client in clients:
            await client.close()


async def test_killed_process_loses_no_acknowledged_op(cluster, redis_env) -> None:
    doomed, survivor = cluster(2, redis_env)
    doc_id = "killed"
    headers = {"Authorization": f"Bearer {token('alice')}"}
    acked: dict[int, int] = {}
    async with connect(doomed.ws_url(doc_id), additional_headers=headers) as ws:
        init = await recv_json(ws)
        rev = init["rev"]
        for seq in range(1, 21):
            await ws.send(json.dumps({"type": "op", "rev": rev, "op": [f"{seq:02d}"],
                                      "src": "alice-tab", "seq": seq}))
            ack = await recv_until(ws, "ack")
            acked[ack["seq"]] = rev = ack["rev"]
        # One op in flight when the process dies: sent, never acknowledged.
        await ws.send(json.dumps({"type": "op", "rev": rev, "op": ["!"], "src": "alice-tab",
                                  "seq": 21}))
        doomed.kill()
    # Reconnect to the other process with ?since= and resend the unacknowledged op.
    async with connect(survivor.ws_url(doc_id, since=rev), additional_headers=headers) as ws:
        init = await recv_json(ws)
        mine = [o for o in init.get("ops", []) if (o["src"], o["seq"]) == ("alice-tab", 21)]
        base = init["rev"]
        if not mine:
            # Lost with the process: resend it; an insert at 0 is valid at any revision.
            await ws.send(json.dumps({"type": "op", "rev": base, "op": ["!"],
                                      "src": "alice-tab", "seq": 21}))
            await recv_until(ws, "ack")
        # Resending once more is acknowledged, never applied twice.
        await ws.send(json.dumps({"type": "op", "rev": 0, "op": ["!"], "src": "alice-tab",
                                  "seq": 21}))
        await recv_until(ws, "ack")
    async with httpx.AsyncClient(base_url=survivor.base_url, headers=auth()) as http:
        history = (await http.get(f"/documents/{doc_id}/history",
                                  params={"limit": 1000})).json()["ops"]
    by_seq = {(o["src"], o["seq"]): o["rev"] for o in history}
    for seq, rev_acked in acked.items():
        assert by_seq[("alice-tab", seq)] == rev_acked
    assert sum(1 for o in history if o["seq"] == 21) == 1
    assert [o["rev"] for o in history] == list(range(1, len(history) + 1))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A Redis server of this test's own, so it can be stopped and started again."""
    binary = shutil.which("redis-server")
    if binary is None:
        if services_required():
            pytest.fail("redis-server is not installed")
        pytest.skip("needs redis-server")
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        return process

    start.port = port  # type: ignore[attr-defined]
    yield start
    for process in processes:
        process.kill()
        process.wait()


async def _ready(base_url: str) -> int:
    async with httpx.AsyncClient(base_url=base_url) as http:
        return (await http.get("/readyz")).status_code


async def test_redis_restart_under_load_converges(cluster, private_redis) -> None:
    redis_process = private_redis()
    env = {"COLLAB_REDIS_URL": f"redis://127.0.0.1:{private_redis.port}/0",
           "COLLAB_REDIS_PREFIX": "restart:"}
    await wait_for(lambda: _redis_answers(private_redis.port), timeout=10)
    servers = cluster(2, env)
    doc_id = "outage"
    clients = [
        await CollabClient.connect(servers[i % 2].base_url, doc_id, token(f"u{i}"))
        for i in range(4)
    ]
    try:
        rng = random.Random(11)
        await asyncio.gather(*(_type_randomly(c, random.Random(rng.random()), 10)
                               for c in clients))
        redis_process.kill()
        redis_process.wait()
        # Each process keeps serving its own clients while Redis is gone.
        await asyncio.gather(*(_type_randomly(c, random.Random(rng.random()), 10)
                               for c in clients))
        for client in clients:
            await client.wait_synced(30)
        statuses = [await _ready(s.base_url) for s in servers]
        assert statuses == [503, 503], "readiness reports the Redis outage"
        private_redis()
        await wait_for(lambda: _redis_answers(private_redis.port), timeout=10)
        await asyncio.gather(*(_type_randomly(c, random.Random(rng.random()), 5)
                               for c in clients))
        await _settle(clients)
        text, revs = await _replay(servers[0].base_url, doc_id)
        assert revs == list(range(1, len(revs) + 1))
        await _converged(clients, revs[-1])
        assert {c.text for c in clients} == {text}
        for server in servers:
            await wait_for(lambda s=server: _ready_now(s.base_url), timeout=20)
    finally:
        for client in clients:
            await client.close()


def _ready_now(base_url: str) -> bool:
    return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200


def _redis_answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_workers_refused_without_redis_or_shared_database(tmp_path: Path) -> None:
    from tests.support import COLLAB, SECRET

    base = {"COLLAB_JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    no_redis = subprocess.run(
        [COLLAB, "serve", "--workers", "2", "--port", str(free_port())],
        env={**base, "COLLAB_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1/test"},
        capture_output=True, text=True, timeout=60,
    )
    assert no_redis.returncode != 0
    assert "COLLAB_REDIS_URL" in no_redis.stderr
    on_sqlite = subprocess.run(
        [COLLAB, "serve", "--workers", "2", "--port", str(free_port())],
        env={**base, "COLLAB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
             "COLLAB_REDIS_URL": "redis://127.0.0.1:6379/0"},
        capture_output=True, text=True, timeout=60,
    )
    assert on_sqlite.returncode != 0
    assert "PostgreSQL" in on_sqlite.stderr


async def test_workers_share_one_port(tmp_path: Path, postgres_database: str,
                                      redis_env: dict[str, str]) -> None:
    server = ServerProcess(database_url=postgres_database, log_path=tmp_path / "workers.log",
                           env=redis_env, args=["--workers", "2"])
    server.start()
    try:
        clients = [await CollabClient.connect(server.base_url, "workers", token(f"w{i}"))
                   for i in range(6)]
        rng = random.Random(3)
        await asyncio.gather(*(_type_randomly(c, random.Random(rng.random()), 10)
                               for c in clients))
        await _settle(clients)
        text, revs = await _replay(server.base_url, "workers")
        await _converged(clients, revs[-1])
        assert {c.text for c in clients} == {text}
        for client in clients:
            await client.close()
    finally:
        assert server.stop() == 0
