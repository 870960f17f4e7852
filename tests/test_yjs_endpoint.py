"""The Yjs endpoint's share of what every socket owes the server (collab.yjs.endpoint), on a real
``collab serve`` over real sockets: the per-user and per-address connection limits are one budget
with the OT socket's, and ``collab_connections`` counts a Yjs socket for exactly as long as it is
open, however it ends.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect

from collab.errors import CloseCode
from collab.yjs import messages
from collab.yjs.messages import SyncStep2
from tests.support import ServerProcess, auth, migrate
from tests.test_ws_errors import joined, metrics, refused, wait_for_connections

USER_LIMIT = 2
ADDRESS_LIMIT = 3


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("yjs-limited")
    url = f"sqlite+aiosqlite:///{directory / 'collab.db'}"
    migrate(url)
    server = ServerProcess(
        database_url=url,
        log_path=directory / "server.log",
        env={
            "COLLAB_DOC_IDLE_SECONDS": "3600",
            "COLLAB_MAX_CONNECTIONS_PER_USER": str(USER_LIMIT),
            "COLLAB_MAX_CONNECTIONS_PER_ADDRESS": str(ADDRESS_LIMIT),
        },
    )
    server.start()
    yield server
    server.stop()


def new_doc() -> str:
    return f"doc-{uuid.uuid4().hex[:12]}"


def yjs_url(server: ServerProcess, doc: str) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/yjs/{doc}"


async def synced(ws: ClientConnection) -> None:
    """Joins as a provider does and waits for the server's answer: the socket is then a peer
    of the document's room (and counted)."""
    await ws.send(messages.sync_step1(b"\x00"))
    async with asyncio.timeout(10):
        reply = await ws.recv()
    assert isinstance(reply, bytes)
    assert isinstance(messages.decode_frame(reply)[0], SyncStep2)


@asynccontextmanager
async def yjs_joined(server: ServerProcess, doc: str, sub: str) -> AsyncIterator[ClientConnection]:
    async with connect(yjs_url(server, doc), additional_headers=auth(sub)) as ws:
        await synced(ws)
        yield ws


async def close_code(ws: ClientConnection) -> int | None:
    async with asyncio.timeout(10):
        await ws.wait_closed()
    return ws.close_code


async def connections(server: ServerProcess) -> float:
    return (await metrics(server))["collab_connections"]


# -- one budget for both kinds of socket ------------------------------------------------------


async def test_a_user_at_the_limit_with_ot_sockets_is_refused_a_yjs_socket(
    limited: ServerProcess,
) -> None:
    doc = new_doc()
    async with joined(limited, doc, "ada"), joined(limited, doc, "ada"):
        status, body = await refused(yjs_url(limited, doc), auth("ada"))
        assert (status, body["detail"]) == (429, "too many connections for this user")
        # Another user on the same address still gets in: the third of the address's three.
        async with yjs_joined(limited, doc, "bob"):
            status, body = await refused(yjs_url(limited, doc), auth("cyd"))
            assert (status, body["detail"]) == (429, "too many connections from this address")
            assert await connections(limited) == 3  # the refusals were never counted
    await wait_for_connections(limited, 0)


async def test_a_user_at_the_limit_with_yjs_sockets_is_refused_any_socket(
    limited: ServerProcess,
) -> None:
    doc = new_doc()
    async with yjs_joined(limited, doc, "ada"), yjs_joined(limited, doc, "ada"):
        status, body = await refused(limited.ws_url(doc), auth("ada"))
        assert (status, body["detail"]) == (429, "too many connections for this user")
        status, body = await refused(yjs_url(limited, doc), auth("ada"))
        assert (status, body["detail"]) == (429, "too many connections for this user")
        async with joined(limited, doc, "bob"):
            status, body = await refused(limited.ws_url(doc), auth("cyd"))
            assert (status, body["detail"]) == (429, "too many connections from this address")
            status, body = await refused(yjs_url(limited, doc), auth("cyd"))
            assert (status, body["detail"]) == (429, "too many connections from this address")
    await wait_for_connections(limited, 0)


async def test_every_way_a_yjs_socket_ends_gives_its_connection_back(
    limited: ServerProcess,
) -> None:
    doc = new_doc()
    async with yjs_joined(limited, doc, "ada") as clean, yjs_joined(limited, doc, "ada") as bad:
        await bad.send(b"\x09")  # an unknown message type
        assert await close_code(bad) == CloseCode.BAD_MESSAGE
        await clean.close()
    await wait_for_connections(limited, 0)
    async with yjs_joined(limited, doc, "ada") as dropped, joined(limited, doc, "ada"):
        dropped.transport.abort()  # the client vanishes without a closing handshake
        await wait_for_connections(limited, 1)
        async with yjs_joined(limited, doc, "ada"):
            pass
    await wait_for_connections(limited, 0)
    # Both of ada's connections, and the address's three, are free again.
    async with yjs_joined(limited, doc, "ada"), joined(limited, doc, "ada"), \
            yjs_joined(limited, doc, "bob"):
        assert await connections(limited) == 3
    await wait_for_connections(limited, 0)


# -- collab_connections -----------------------------------------------------------------------


async def test_the_metric_counts_a_yjs_socket_while_it_is_open(limited: ServerProcess) -> None:
    doc = new_doc()
    await wait_for_connections(limited, 0)
    async with yjs_joined(limited, doc, "ada") as ws:
        assert await connections(limited) == 1
        async with joined(limited, doc, "bob"):
            assert await connections(limited) == 2
        await wait_for_connections(limited, 1)
        await ws.close()
    await wait_for_connections(limited, 0)


async def test_the_metric_lets_go_of_a_yjs_socket_closed_by_an_error(
    limited: ServerProcess,
) -> None:
    doc = new_doc()
    async with yjs_joined(limited, doc, "ada") as ws:
        assert await connections(limited) == 1
        await ws.send(b"\x00\x02\x80")  # a truncated varUint
        assert await close_code(ws) == CloseCode.BAD_MESSAGE
    await wait_for_connections(limited, 0)
    async with yjs_joined(limited, doc, "ada") as ws:
        assert await connections(limited) == 1
        ws.transport.abort()
    await wait_for_connections(limited, 0)
