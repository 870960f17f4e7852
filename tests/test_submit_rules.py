"""What the server does with unusual submissions, the same on the WebSocket and over REST
(docs/protocol.md): ops that change nothing, (src, seq) claimed by another user, documents
grown past their size limit. End to end, on a real server.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.support import ServerProcess, auth, recv_json, recv_until, token


def raw(server: ServerProcess, doc: str, sub: str = "alice") -> Any:
    return connect(server.ws_url(doc),
                   additional_headers={"Authorization": f"Bearer {token(sub, name=sub.title())}"},
                   max_size=None)


async def history(server: ServerProcess, doc: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.get(f"/documents/{doc}/history", headers=auth())
        assert response.status_code == 200, response.text
        ops: list[dict[str, Any]] = response.json()["ops"]
        return ops


async def test_an_op_that_changes_nothing_is_acked_without_a_revision(
    server: ServerProcess,
) -> None:
    async with raw(server, "empty") as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "op", "rev": 0, "op": ["ab"], "src": "e", "seq": 1}))
        assert (await recv_until(ws, "ack"))["rev"] == 1
        for seq, op in ((2, []), (3, [2])):  # empty, and a lone skip (normalises to nothing)
            await ws.send(json.dumps({"type": "op", "rev": 1, "op": op, "src": "e", "seq": seq}))
            assert await recv_until(ws, "ack") == {"type": "ack", "seq": seq, "rev": 1}
        # Made at an old revision it is still nothing: acked at the current one.
        await ws.send(json.dumps({"type": "op", "rev": 1, "op": [1, "c"], "src": "e", "seq": 4}))
        assert (await recv_until(ws, "ack"))["rev"] == 2
        await ws.send(json.dumps({"type": "op", "rev": 0, "op": [], "src": "e", "seq": 5}))
        assert (await recv_until(ws, "ack"))["rev"] == 2
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post("/documents/empty/ops", json={"rev": 1, "op": []},
                                   headers=auth())
        assert (response.status_code, response.json()) == (200, {"rev": 2})
        document = (await http.get("/documents/empty", headers=auth())).json()
    assert (document["rev"], document["content"]) == (2, "acb")
    assert [(o["rev"], o["seq"]) for o in await history(server, "empty")] == [(1, 1), (2, 4)]


async def test_another_user_cannot_claim_an_editors_src_seq(server: ServerProcess) -> None:
    """Issue 17 #2: every `op` frame shows alice's src; mallory sends ops under it with
    alice's next seqs, over the WebSocket and over REST. They are refused, and alice's own ops
    under those seqs are stored and acked at new revisions."""
    async with raw(server, "victim", "alice") as alice, raw(server, "victim", "mallory") as mal:
        await recv_json(alice)
        await recv_json(mal)
        await alice.send(json.dumps({"type": "op", "rev": 0, "op": ["a"], "src": "al", "seq": 1}))
        assert (await recv_until(alice, "ack"))["rev"] == 1
        seen = await recv_until(mal, "op")
        assert (seen["src"], seen["seq"]) == ("al", 1)
        await mal.send(json.dumps({"type": "op", "rev": 1, "op": ["X"], "src": "al", "seq": 2}))
        refused = await recv_until(mal, "error")
        assert (refused["code"], refused["seq"]) == ("bad_message", 2)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post("/documents/victim/ops",
                                       json={"rev": 1, "op": ["Y"], "src": "al", "seq": 3},
                                       headers=auth("mallory"))
            assert response.status_code == 400, response.text
        for seq in (2, 3):
            frame = {"type": "op", "rev": seq - 1, "op": [seq - 1, str(seq)], "src": "al",
                     "seq": seq}
            await alice.send(json.dumps(frame))
            assert await recv_until(alice, "ack") == {"type": "ack", "seq": seq, "rev": seq}
    stored = await history(server, "victim")
    assert [(o["src"], o["seq"], o["user"]) for o in stored] == [
        ("al", 1, "alice"), ("al", 2, "alice"), ("al", 3, "alice")]
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        document = (await http.get("/documents/victim", headers=auth())).json()
    assert document["content"] == "a23"
