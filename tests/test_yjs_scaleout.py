"""Yjs clients on two server processes (PostgreSQL + Redis) with OT clients beside them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from collab.client import CollabClient
from tests.support import ServerProcess, token
from tests.test_scaleout import cluster, redis_env  # noqa: F401  (fixtures)
from tests.test_yjs_e2e import converged, create, open_yjs
from tests.yjs_harness import YjsNode

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
async def node() -> AsyncIterator[YjsNode]:
    process = await YjsNode.start()
    try:
        yield process
    finally:
        await process.stop()


async def test_yjs_and_ot_clients_on_two_processes_converge(
    cluster: Callable[[int, dict[str, str]], list[ServerProcess]],  # noqa: F811
    redis_env: dict[str, str],  # noqa: F811
    node: YjsNode,
) -> None:
    first, second = cluster(2, redis_env)
    doc_id = "spread"
    await create(first, doc_id, "start 😀")
    await open_yjs(node, first, "y1", doc_id)
    await open_yjs(node, second, "y2", doc_id)
    for name in ("y1", "y2"):
        await node.call("waitSynced", name=name)
    ot_clients = [
        await CollabClient.connect(server.base_url, doc_id, token(f"o{i}"))
        for i, server in enumerate((first, second))
    ]

    async def ot_typing(client: CollabClient) -> None:
        for index in range(20):
            client.insert(len(client.text) if index % 2 else 0, "𝄞" if index % 3 else "x")
            await client.wait_synced(20)

    await asyncio.gather(
        node.call("type", name="y1", count=40, seed=7, delayMs=5, timeout=60),
        node.call("type", name="y2", count=40, seed=8, delayMs=5, timeout=60),
        *(ot_typing(client) for client in ot_clients),
    )
    await node.call("xmlAppend", name="y1", root="prosemirror", tag="p", text="across")
    await node.call("waitXml", name="y2", root="prosemirror", xml="<p>across</p>")
    try:
        for server in (first, second):
            await converged(server, doc_id, node, ["y1", "y2"], ot_clients)
    finally:
        for client in ot_clients:
            await client.close()
