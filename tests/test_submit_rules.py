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


async def test_an_op_past_the_document_size_limit_is_refused(
    server_factory: Any,
) -> None:
    """Issue 17 #4: the op that would take the document past COLLAB_MAX_DOCUMENT_BYTES (UTF-8)
    is refused with document_too_large (REST 413), and nothing of it is stored."""
    server = server_factory(COLLAB_MAX_DOCUMENT_BYTES="1000")
    async with raw(server, "big") as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "op", "rev": 0, "op": ["é" * 400], "src": "b",
                                  "seq": 1}))  # 800 bytes
        assert (await recv_until(ws, "ack"))["rev"] == 1
        await ws.send(json.dumps({"type": "op", "rev": 1, "op": [400, "😀" * 51], "src": "b",
                                  "seq": 2}))  # 800 + 204 bytes
        refused = await recv_until(ws, "error")
        assert (refused["code"], refused["seq"]) == ("document_too_large", 2)
        assert "1004 bytes" in refused["message"]
        # Shrinking, or growing within the limit, still works.
        await ws.send(json.dumps({"type": "op", "rev": 1, "op": [{"d": 100}, "x" * 50],
                                  "src": "b", "seq": 3}))
        assert (await recv_until(ws, "ack"))["rev"] == 2
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post("/documents/big/ops", json={"rev": 2, "op": ["y" * 400]},
                                   headers=auth())
        assert response.status_code == 413, response.text
        document = (await http.get("/documents/big", headers=auth())).json()
    assert document["rev"] == 2
    assert len(document["content"].encode()) == 650  # 300 é and 50 x
    assert [o["seq"] for o in await history(server, "big")] == [1, 3]


async def test_deleting_a_document_with_editors_releases_their_connection_count(
    server: ServerProcess,
) -> None:
    """Issue 17 #9: the actor closes its editors with 4404 and counts them out itself (their
    own leave arrives after the actor stopped)."""
    async with raw(server, "doomed", "alice") as alice, raw(server, "doomed", "bob") as bob:
        await recv_json(alice)
        await recv_json(bob)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert "collab_connections 2" in (await http.get("/metrics")).text
            response = await http.delete("/documents/doomed", headers=auth())
            assert response.status_code == 204, response.text
            for ws in (alice, bob):
                await ws.wait_closed()
                assert ws.close_code == 4404
            metrics = (await http.get("/metrics")).text
    assert "collab_connections 0" in metrics
