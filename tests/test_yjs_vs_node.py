"""The bridge against the real npm ``yjs``: updates a JavaScript client makes with UTF-16
indexes become OT ops in code points, and the server's updates land where OT put them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from collab import ot
from collab.yjs.bridge import YjsDocument
from tests.yjs_harness import YjsNode

OFFLINE = {"url": "ws://127.0.0.1:9/ws/yjs", "room": "unused", "connect": False}


@pytest.fixture
async def node() -> AsyncIterator[YjsNode]:
    process = await YjsNode.start()
    try:
        yield process
    finally:
        await process.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def exchange(node: YjsNode, name: str, server: YjsDocument) -> list[ot.Op]:
    """Sends the client's news to the server and back; returns the ops the server made of it."""
    ops = []
    update = base64.b64decode(
        await node.call("diffUpdate", name=name, stateVector=b64(server.state_vector()))
    )
    applied = server.apply_update(update)
    if applied.op is not None:
        ops.append(applied.op)
    await node.call("apply", name=name, update=b64(server.snapshot()))
    return ops


async def test_javascript_utf16_edits_become_code_point_ops(node: YjsNode) -> None:
    server = YjsDocument("content")
    server.seed("a😀b")
    await node.call("open", name="js", **OFFLINE)
    assert await node.call("apply", name="js", update=b64(server.snapshot())) == "a😀b"
    # After the emoji: UTF-16 index 3, code point 2, UTF-8 offset 5.
    await node.call("insert", name="js", index=3, text="𝄞")
    await node.call("delete", name="js", index=0, length=1)
    ops = await exchange(node, "js", server)
    assert ops == [[{"d": 1}, 1, "𝄞"]]
    assert server.text == await node.call("text", name="js") == "😀𝄞b"


async def test_server_ops_land_where_ot_put_them_in_javascript(node: YjsNode) -> None:
    server = YjsDocument("content")
    server.seed("👍🏽 x 中")
    await node.call("open", name="js", **OFFLINE)
    await node.call("apply", name="js", update=b64(server.snapshot()))
    op: ot.Op = [2, "😀", 2, {"d": 1}, "é"]
    text = await node.call("apply", name="js", update=b64(server.apply_op(op) or b""))
    assert text == server.text == ot.apply("👍🏽 x 中", op) == "👍🏽😀 xé中"


async def test_random_javascript_typing_matches_the_ot_replay(node: YjsNode) -> None:
    server = YjsDocument("content")
    replay = ""
    await node.call("open", name="js", **OFFLINE)
    for seed in range(1, 21):
        await node.call("type", name="js", count=15, seed=seed)
        for op in await exchange(node, "js", server):
            replay = ot.apply(replay, op)
        assert replay == server.text == await node.call("text", name="js")
