"""SIGTERM drains: queued ops committed and acked, documents snapshotted, sockets closed 1001."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support import ServerProcess, auth, recv_json, token


async def test_sigterm_commits_queued_ops_snapshots_and_closes_with_1001(
    server_factory: Callable[..., ServerProcess],
) -> None:
    # No periodic snapshot can stand in for the one the drain must write.
    server = server_factory(COLLAB_SNAPSHOT_EVERY="1000000")
    headers = {"Authorization": f"Bearer {token('alice')}"}
    acked: dict[int, int] = {}
    async with connect(server.ws_url("drain"), additional_headers=headers) as ws:
        init = await recv_json(ws)
        # A burst the actor cannot have finished when the signal lands: all based on init's rev.
        for seq in range(1, 201):
            op = {"type": "op", "rev": init["rev"], "op": ["x"], "src": "s", "seq": seq}
            await ws.send(json.dumps(op))
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            try:
                while True:
                    frame = json.loads(await ws.recv())
                    items = frame["items"] if frame["type"] == "ops" else [frame]
                    for item in items:
                        if item["type"] == "ack":
                            acked[item["seq"]] = item["rev"]
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert server.stop() in (0, -signal.SIGTERM)
    assert acked, "ops queued before the signal were acknowledged before the close"

    server.start()
    async with httpx.AsyncClient(base_url=server.base_url, headers=auth()) as http:
        history = (await http.get("/documents/drain/history", params={"limit": 1000})).json()
        stored = {item["seq"]: item["rev"] for item in history["ops"]}
        document = (await http.get("/documents/drain")).json()
        snapshots = (await http.get("/documents/drain/snapshots")).json()
    for seq, rev in acked.items():
        assert stored[seq] == rev
    assert document["content"] == "x" * document["rev"]
    assert snapshots[-1]["rev"] == document["rev"], "the drain wrote a snapshot at the last rev"
