"""WebSocket refusals and in-session errors (SPEC §2, §4), against real server processes.

Handshake refusals must happen before ``accept()``: the server answers with an HTTP status and
no room, actor or document is made for the attempt, which ``/metrics`` and the document list
show. In-session errors answer one frame with an ``error`` (or close with the code SPEC gives)
and leave both the document and every other client untouched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import ServerProcess, auth, migrate, recv_json, token, wait_for
from tests.test_security import AUDIENCE, ISSUER, bad_tokens, good_token

ALLOWED_ORIGIN = "https://editor.example"
EVIL_ORIGIN = "https://evil.example"


def local_http(server: ServerProcess) -> httpx.AsyncClient:
    # Plain HTTP to localhost: skipping the CA bundle saves ~30 ms per client, per call here.
    return httpx.AsyncClient(base_url=server.base_url, verify=False)


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> ServerProcess:
    directory = tmp_path_factory.mktemp(name)
    url = f"sqlite+aiosqlite:///{directory / 'collab.db'}"
    migrate(url)
    server = ServerProcess(database_url=url, log_path=directory / "server.log", env=env)
    server.start()
    return server


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Default settings. Idle documents stay loaded, so a count that moves is this test's doing."""
    server = _server(tmp_path_factory, "gate", COLLAB_DOC_IDLE_SECONDS="3600")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Audience, issuer and an origin allow-list configured; tickets live one second."""
    server = _server(
        tmp_path_factory,
        "guarded",
        COLLAB_DOC_IDLE_SECONDS="3600",
        COLLAB_JWT_AUDIENCE=AUDIENCE,
        COLLAB_JWT_ISSUER=ISSUER,
        COLLAB_ALLOWED_ORIGINS=f"{ALLOWED_ORIGIN}, https://other.example",
        COLLAB_TICKET_TTL_SECONDS="1",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Small limits, so each in-session limit can be reached quickly."""
    server = _server(
        tmp_path_factory,
        "strict",
        COLLAB_DOC_IDLE_SECONDS="3600",
        COLLAB_MAX_REBASE_DISTANCE="5",
        COLLAB_OPS_PER_SECOND="5",
        COLLAB_OPS_BURST="5",
        COLLAB_PRESENCE_PER_SECOND="5",
        COLLAB_PRESENCE_BURST="5",
        COLLAB_MAX_MESSAGE_BYTES="1000",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Per-user and per-address limits small enough to reach; the user op bucket barely refills."""
    server = _server(
        tmp_path_factory,
        "limited",
        COLLAB_DOC_IDLE_SECONDS="3600",
        COLLAB_MAX_CONNECTIONS_PER_USER="2",
        COLLAB_MAX_CONNECTIONS_PER_ADDRESS="3",
        COLLAB_USER_OPS_PER_SECOND="0.001",
        COLLAB_USER_OPS_BURST="3",
    )
    yield server
    server.stop()


# -- helpers ------------------------------------------------------------------------------------


def new_doc() -> str:
    return f"doc-{uuid.uuid4().hex[:12]}"


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def metrics(server: ServerProcess) -> dict[str, float]:
    async with local_http(server) as client:
        text = (await client.get("/metrics")).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def document_ids(server: ServerProcess, admin: str) -> list[str]:
    async with local_http(server) as client:
        response = await client.get("/documents", params={"limit": 200}, headers=bearer(admin))
        assert response.status_code == 200
        return [item["id"] for item in response.json()["items"]]


@asynccontextmanager
async def no_work_done(server: ServerProcess, doc: str, admin: str) -> AsyncIterator[None]:
    """Asserts that what runs inside loads no document, opens no connection, creates nothing."""
    before = await metrics(server)
    listed = await document_ids(server, admin)
    assert before["collab_connections"] == 0
    yield
    after = await metrics(server)
    assert after["collab_connections"] == 0
    assert after["collab_documents_loaded"] == before["collab_documents_loaded"]
    assert after["collab_ops_applied_total"] == before["collab_ops_applied_total"]
    assert await document_ids(server, admin) == listed
    assert doc not in listed


async def refused(
    url: str, headers: dict[str, str] | None = None, origin: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Opens a WebSocket that must be refused at the handshake; returns the status and body."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=headers, origin=origin,  # type: ignore[arg-type]
                           open_timeout=10):
            pass
    response = info.value.response
    body = json.loads(response.body or b"{}")
    return response.status_code, body


async def settle(server: ServerProcess) -> None:
    """Waits until the server has seen every closed connection leave."""
    await wait_for_connections(server, 0)


async def wait_for_connections(server: ServerProcess, count: int) -> None:
    deadline = time.monotonic() + 10
    while (await metrics(server))["collab_connections"] != count:
        assert time.monotonic() < deadline, f"collab_connections never came to {count}"
        await asyncio.sleep(0.02)


# -- handshake refusals: credentials -----------------------------------------------------------


async def test_no_credentials_is_refused_with_403(gate: ServerProcess) -> None:
    doc = new_doc()
    async with no_work_done(gate, doc, token("admin")):
        status, body = await refused(gate.ws_url(doc))
    assert status == 403
    assert "credentials" in body["detail"]


@pytest.mark.parametrize("name", sorted(bad_tokens()))
async def test_bad_token_in_header_is_refused_with_403(gate: ServerProcess, name: str) -> None:
    doc = new_doc()
    async with no_work_done(gate, doc, token("admin")):
        status, _ = await refused(gate.ws_url(doc), bearer(bad_tokens()[name]))
    assert status == 403


@pytest.mark.parametrize("name", ["malformed", "wrong_key", "alg_none", "expired"])
async def test_bad_token_in_query_is_refused_with_403(gate: ServerProcess, name: str) -> None:
    doc = new_doc()
    async with no_work_done(gate, doc, token("admin")):
        status, _ = await refused(gate.ws_url(doc, token=bad_tokens()[name]))
    assert status == 403


@pytest.mark.parametrize(
    "name", ["wrong_audience", "no_audience", "wrong_issuer", "no_issuer", "expired", "alg_none"]
)
async def test_wrong_audience_or_issuer_is_refused_when_configured(
    guarded: ServerProcess, name: str
) -> None:
    doc = new_doc()
    async with no_work_done(guarded, doc, good_token(AUDIENCE, ISSUER)):
        status, _ = await refused(guarded.ws_url(doc), bearer(bad_tokens(AUDIENCE, ISSUER)[name]))
    assert status == 403


async def test_token_for_another_document_is_refused(gate: ServerProcess) -> None:
    doc = new_doc()
    async with no_work_done(gate, doc, token("admin")):
        status, body = await refused(gate.ws_url(doc), auth(docs={"some-other-doc": "write"}))
    assert status == 403
    assert doc in body["detail"]


async def test_read_only_token_on_missing_document_is_refused_with_404(gate: ServerProcess) -> None:
    doc = new_doc()
    async with no_work_done(gate, doc, token("admin")):
        status, _ = await refused(gate.ws_url(doc), auth(docs={doc: "read"}))
    assert status == 404


@pytest.mark.parametrize(
    ("raw", "doc"), [("x" * 129, "x" * 129), ("abc%0A", "abc\n"), ("abc%0D%0A", "abc\r\n")]
)
async def test_invalid_document_id_is_refused(gate: ServerProcess, raw: str, doc: str) -> None:
    """One full-match rule: an id with a trailing newline is no id, on the socket as on REST."""
    admin = token("admin")
    async with no_work_done(gate, doc, admin):
        status, _ = await refused(gate.ws_url(raw), auth())
    assert status == 404
    async with local_http(gate) as client:
        rest = await client.get(f"/documents/{raw}", headers=bearer(admin))
        ticket = await client.post("/tickets", json={"doc": doc}, headers=bearer(admin))
    assert rest.status_code == 422
    assert ticket.status_code == 422


# -- handshake refusals: origins ----------------------------------------------------------------


async def test_cross_site_origin_is_refused_by_default(gate: ServerProcess) -> None:
    doc = new_doc()
    async with no_work_done(gate, doc, token("admin")):
        status, body = await refused(gate.ws_url(doc), auth(), origin=EVIL_ORIGIN)
    assert status == 403
    assert "origin" in body["detail"]


async def test_cross_site_origin_is_refused_with_an_allow_list(guarded: ServerProcess) -> None:
    doc = new_doc()
    async with no_work_done(guarded, doc, good_token(AUDIENCE, ISSUER)):
        for origin in (EVIL_ORIGIN, "http://editor.example", "https://editor.example.evil.com",
                       "null"):
            status, _ = await refused(
                guarded.ws_url(doc), bearer(good_token(AUDIENCE, ISSUER)), origin=origin
            )
            assert status == 403, origin


async def test_the_servers_own_origin_is_accepted(gate: ServerProcess) -> None:
    doc = new_doc()
    async with connect(gate.ws_url(doc), additional_headers=auth(), origin=gate.base_url) as ws:  # type: ignore[arg-type]
        init = await recv_json(ws)
    assert (init["type"], init["doc"]) == ("init", doc)
    await settle(gate)


@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, "https://other.example"])
async def test_an_allowed_origin_is_accepted(guarded: ServerProcess, origin: str) -> None:
    doc = new_doc()
    headers = bearer(good_token(AUDIENCE, ISSUER))
    async with connect(guarded.ws_url(doc), additional_headers=headers, origin=origin) as ws:  # type: ignore[arg-type]
        init = await recv_json(ws)
    assert (init["type"], init["access"]) == ("init", "write")
    await settle(guarded)


# -- tickets and ?token= ------------------------------------------------------------------------


async def ticket_for(server: ServerProcess, doc: str, bearer_token: str) -> str:
    async with local_http(server) as client:
        response = await client.post("/tickets", json={"doc": doc}, headers=bearer(bearer_token))
    assert response.status_code == 201, response.text
    ticket: str = response.json()["ticket"]
    return ticket


async def test_token_in_query_is_accepted(gate: ServerProcess) -> None:
    doc = new_doc()
    async with connect(gate.ws_url(doc, token=token("quinn", name="Quinn"))) as ws:
        init = await recv_json(ws)
    assert init["user"] == {"id": "quinn", "name": "Quinn"}
    await settle(gate)


async def test_ticket_works_once_and_is_refused_the_second_time(gate: ServerProcess) -> None:
    doc = new_doc()
    ticket = await ticket_for(gate, doc, token("tess", name="Tess"))
    async with connect(gate.ws_url(doc, ticket=ticket)) as ws:
        init = await recv_json(ws)
        assert init["user"] == {"id": "tess", "name": "Tess"}
    await settle(gate)
    async with no_work_done(gate, "never-created", token("admin")):
        status, body = await refused(gate.ws_url(doc, ticket=ticket))
    assert status == 403
    assert "ticket" in body["detail"]


async def test_unknown_ticket_is_refused(gate: ServerProcess) -> None:
    doc = new_doc()
    async with no_work_done(gate, doc, token("admin")):
        status, _ = await refused(gate.ws_url(doc, ticket="made-up-ticket"))
    assert status == 403


async def test_ticket_for_another_document_is_refused(gate: ServerProcess) -> None:
    doc = new_doc()
    ticket = await ticket_for(gate, "somewhere-else", token())
    async with no_work_done(gate, doc, token("admin")):
        status, _ = await refused(gate.ws_url(doc, ticket=ticket))
    assert status == 403


async def test_expired_ticket_is_refused(guarded: ServerProcess) -> None:
    doc = new_doc()
    ticket = await ticket_for(guarded, doc, good_token(AUDIENCE, ISSUER))
    issued = time.monotonic()
    # A ticket's expiry is a clock condition: wait until its 1 s lifetime has surely passed.
    await wait_for(lambda: time.monotonic() - issued > 1.5, timeout=5)
    async with no_work_done(guarded, doc, good_token(AUDIENCE, ISSUER)):
        status, _ = await refused(guarded.ws_url(doc, ticket=ticket))
    assert status == 403


async def test_ticket_of_a_token_that_has_since_expired_is_refused(gate: ServerProcess) -> None:
    """SPEC §2: refused at the handshake (403), not accepted and then closed with 1008."""
    doc = new_doc()
    short_lived = token("ursula", ttl=2)
    expires_at = json.loads(
        base64.urlsafe_b64decode(short_lived.split(".")[1] + "==")
    )["exp"]
    ticket = await ticket_for(gate, doc, short_lived)
    # The token's expiry is a clock condition: wait until it has surely passed.
    await wait_for(lambda: time.time() > expires_at + 0.2, timeout=10)
    async with no_work_done(gate, doc, token("admin")):
        status, body = await refused(gate.ws_url(doc, ticket=ticket))
    assert status == 403
    assert "expired" in body["detail"]


async def test_ticket_needs_a_readable_document(gate: ServerProcess) -> None:
    async with local_http(gate) as client:
        response = await client.post(
            "/tickets", json={"doc": "target"}, headers=auth(docs={"other": "write"})
        )
    assert response.status_code == 403


# -- in-session errors ----------------------------------------------------------------------------


def flatten(frame: dict[str, Any]) -> list[dict[str, Any]]:
    return list(frame["items"]) if frame["type"] == "ops" else [frame]


async def frames_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], within: float = 10.0
) -> list[dict[str, Any]]:
    """Every frame received (batches opened) up to and including the first matching one."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while True:
            for item in flatten(json.loads(await ws.recv())):
                seen.append(item)
                if predicate(item):
                    return seen


async def close_code(ws: ClientConnection, within: float = 10.0) -> int | None:
    """Reads until the server closes the connection; returns the close code it sent."""
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
    return ws.close_code


def op(rev: int, components: list[Any], src: str, seq: int) -> str:
    return json.dumps({"type": "op", "rev": rev, "op": components, "src": src, "seq": seq})


async def create(server: ServerProcess, doc: str, content: str) -> None:
    async with local_http(server) as client:
        response = await client.post("/documents", json={"id": doc, "content": content},
                                     headers=auth("admin"))
    assert response.status_code == 201, response.text


async def state(server: ServerProcess, doc: str) -> tuple[str, int]:
    async with local_http(server) as client:
        response = await client.get(f"/documents/{doc}", headers=auth("admin"))
    assert response.status_code == 200, response.text
    body = response.json()
    return body["content"], body["rev"]


@asynccontextmanager
async def joined(
    server: ServerProcess, doc: str, sub: str = "alice", **kwargs: Any
) -> AsyncIterator[ClientConnection]:
    async with connect(server.ws_url(doc), additional_headers=auth(sub, **kwargs)) as ws:
        init = await recv_json(ws)
        assert init["type"] == "init"
        yield ws


async def submit_and_ack(ws: ClientConnection, rev: int, src: str, seq: int) -> int:
    """Submits an insert at the start; returns the acknowledged revision. No errors allowed."""
    await ws.send(op(rev, [f"{src}#{seq} "], src, seq))
    seen = await frames_until(ws, lambda f: f["type"] == "ack" and f["seq"] == seq)
    assert not [f for f in seen if f["type"] == "error"], seen
    ack_rev: int = seen[-1]["rev"]
    return ack_rev


async def assert_undisturbed(
    server: ServerProcess, doc: str, before: tuple[str, int], bystander: ClientConnection
) -> None:
    """The document is as it was, and another client of it still edits normally."""
    assert await state(server, doc) == before
    content, rev = before
    assert await submit_and_ack(bystander, rev, "bystander", 1) == rev + 1
    assert await state(server, doc) == (f"bystander#1 {content}", rev + 1)


def error_case(
    raw: str | bytes, code: str, seq: int | None = None
) -> tuple[str | bytes, str, int | None]:
    return (raw, code, seq)


def _frame(**fields: Any) -> str:
    return json.dumps(fields)


_OP = {"type": "op", "rev": 0, "op": ["x"], "src": "offender", "seq": 7}

# (what the offender sends, the error code, the seq the error must carry or None)
BAD_FRAMES: dict[str, tuple[str | bytes, str, int | None]] = {
    # not JSON at all
    "empty": error_case("", "bad_json"),
    "garbage": error_case("hello", "bad_json"),
    "truncated": error_case('{"type": "op", "rev": 0', "bad_json"),
    "single_quotes": error_case("{'type': 'op'}", "bad_json"),
    "trailing_comma": error_case('{"type": "presence",}', "bad_json"),
    "nan": error_case('{"type": "presence", "rev": NaN, "cursor": null}', "bad_json"),
    "infinite_number": error_case('{"type": "presence", "rev": 1e400, "cursor": null}',
                                  "bad_json"),
    "lone_surrogate": error_case('{"type": "op", "rev": 0, "op": ["\\ud800"], "src": "s", '
                                 '"seq": 1}', "bad_json"),
    # JSON, but not a frame
    "array": error_case("[]", "bad_message"),
    "number": error_case("1", "bad_message"),
    "string": error_case('"op"', "bad_message"),
    "null": error_case("null", "bad_message"),
    "no_type": error_case("{}", "bad_message"),
    "unknown_type": error_case(_frame(type="hello"), "bad_message"),
    "server_type": error_case(_frame(type="ack", seq=1, rev=1), "bad_message"),
    "numeric_type": error_case(_frame(type=5), "bad_message"),
    "binary_frame": error_case(json.dumps(_OP).encode(), "bad_message"),
    # op frames with missing or mistyped fields
    "op_missing_everything": error_case(_frame(type="op"), "bad_message"),
    "op_missing_rev": error_case(_frame(**{**_OP, "rev": None}), "bad_message", 7),
    "op_missing_op": error_case(
        _frame(**{k: v for k, v in _OP.items() if k != "op"}), "bad_message", 7),
    "op_missing_src": error_case(
        _frame(**{k: v for k, v in _OP.items() if k != "src"}), "bad_message", 7),
    "op_missing_seq": error_case(
        _frame(**{k: v for k, v in _OP.items() if k != "seq"}), "bad_message"),
    "rev_string": error_case(_frame(**{**_OP, "rev": "0"}), "bad_message", 7),
    "rev_bool": error_case(_frame(**{**_OP, "rev": False}), "bad_message", 7),
    "rev_float": error_case(_frame(**{**_OP, "rev": 0.5}), "bad_message", 7),
    "rev_negative": error_case(_frame(**{**_OP, "rev": -1}), "bad_message", 7),
    "rev_huge": error_case(_frame(**{**_OP, "rev": 2**31}), "bad_message", 7),
    "rev_beyond_64_bits": error_case(_frame(**{**_OP, "rev": 10**30}), "bad_message", 7),
    "seq_bool": error_case(_frame(**{**_OP, "seq": True}), "bad_message"),
    "seq_zero": error_case(_frame(**{**_OP, "seq": 0}), "bad_message", 0),
    "seq_huge": error_case(_frame(**{**_OP, "seq": 2**31}), "bad_message", 2**31),
    "seq_string": error_case(_frame(**{**_OP, "seq": "7"}), "bad_message"),
    "src_empty": error_case(_frame(**{**_OP, "src": ""}), "bad_message", 7),
    "src_too_long": error_case(_frame(**{**_OP, "src": "s" * 65}), "bad_message", 7),
    "src_number": error_case(_frame(**{**_OP, "src": 5}), "bad_message", 7),
    "op_not_list": error_case(_frame(**{**_OP, "op": "x"}), "bad_message", 7),
    "op_object": error_case(_frame(**{**_OP, "op": {"d": 1}}), "bad_message", 7),
    # presence frames
    "presence_no_cursor": error_case(_frame(type="presence", rev=0), "bad_message"),
    "presence_no_rev": error_case(_frame(type="presence", cursor=None), "bad_message"),
    "presence_bool_anchor": error_case(
        _frame(type="presence", rev=0, cursor={"anchor": True, "head": 0}), "bad_message"),
    "presence_negative_head": error_case(
        _frame(type="presence", rev=0, cursor={"anchor": 0, "head": -1}), "bad_message"),
    "presence_huge_rev": error_case(
        _frame(type="presence", rev=2**40, cursor=None), "bad_message"),
    "presence_cursor_list": error_case(
        _frame(type="presence", rev=0, cursor=[0, 0]), "bad_message"),
    # well-formed frames carrying an invalid operation: answered with the op's seq
    "skip_zero": error_case(_frame(**{**_OP, "op": [0]}), "invalid_op", 7),
    "skip_negative": error_case(_frame(**{**_OP, "op": [-3]}), "invalid_op", 7),
    "skip_float": error_case(_frame(**{**_OP, "op": [1.5]}), "invalid_op", 7),
    "skip_bool": error_case(_frame(**{**_OP, "op": [True]}), "invalid_op", 7),
    "insert_empty": error_case(_frame(**{**_OP, "op": [""]}), "invalid_op", 7),
    "component_null": error_case(_frame(**{**_OP, "op": [None]}), "invalid_op", 7),
    "component_list": error_case(_frame(**{**_OP, "op": [[1]]}), "invalid_op", 7),
    "delete_zero": error_case(_frame(**{**_OP, "op": [{"d": 0}]}), "invalid_op", 7),
    "delete_bool": error_case(_frame(**{**_OP, "op": [{"d": True}]}), "invalid_op", 7),
    "delete_extra_key": error_case(_frame(**{**_OP, "op": [{"d": 1, "x": 1}]}), "invalid_op", 7),
    "delete_wrong_key": error_case(_frame(**{**_OP, "op": [{"x": 1}]}), "invalid_op", 7),
    "delete_empty_text": error_case(_frame(**{**_OP, "op": [{"d": ""}]}), "invalid_op", 7),
    # valid shapes that do not fit the document "hello"
    "skip_past_end": error_case(_frame(**{**_OP, "op": [6, "x"]}), "invalid_op", 7),
    "huge_skip": error_case(_frame(**{**_OP, "op": [2**40, "x"]}), "invalid_op", 7),
    "delete_past_end": error_case(_frame(**{**_OP, "op": [{"d": 6}]}), "invalid_op", 7),
    "huge_delete": error_case(_frame(**{**_OP, "op": [{"d": 2**62}]}), "invalid_op", 7),
    "delete_wrong_text": error_case(_frame(**{**_OP, "op": [{"d": "help"}]}), "invalid_op", 7),
    # revisions the document does not have
    "future_revision": error_case(_frame(**{**_OP, "rev": 1}), "bad_revision", 7),
    "far_future_revision": error_case(_frame(**{**_OP, "rev": 2**31 - 1}), "bad_revision", 7),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
async def test_bad_frame_gets_its_error_and_disturbs_nobody(
    strict: ServerProcess, name: str
) -> None:
    raw, code, seq = BAD_FRAMES[name]
    doc = new_doc()
    await create(strict, doc, "hello")
    before = await state(strict, doc)
    async with joined(strict, doc, "offender") as offender, joined(strict, doc, "bob") as bob:
        await offender.send(raw)
        error = (await frames_until(offender, lambda f: f["type"] == "error"))[-1]
        assert error["code"] == code, error
        assert isinstance(error["message"], str) and error["message"]
        assert error.get("seq") == seq
        await assert_undisturbed(strict, doc, before, bob)
        # The offender's connection stays open and in sync: it sees bob's op, then edits.
        await frames_until(offender, lambda f: f["type"] == "op" and f["src"] == "bystander")
        assert await submit_and_ack(offender, before[1] + 1, "offender", 8) == before[1] + 2


async def test_op_older_than_the_rebase_limit_is_bad_revision(strict: ServerProcess) -> None:
    doc = new_doc()
    await create(strict, doc, "")
    async with local_http(strict) as client:
        for i in range(10):
            response = await client.post(
                f"/documents/{doc}/ops",
                json={"rev": i, "op": [i, str(i)] if i else ["0"]},
                headers=auth(),
            )
            assert response.json() == {"rev": i + 1}
    before = await state(strict, doc)
    async with joined(strict, doc, "offender") as offender, joined(strict, doc, "bob") as bob:
        await offender.send(op(0, ["stale"], "offender", 1))
        error = (await frames_until(offender, lambda f: f["type"] == "error"))[-1]
        assert (error["code"], error["seq"]) == ("bad_revision", 1)
        # Within the limit the same op is rebased and applied.
        assert await submit_and_ack(offender, 5, "offender", 2) == 11
        content, rev = await state(strict, doc)
        assert (content, rev) == ("offender#2 0123456789", 11)
        await assert_undisturbed(strict, doc, (content, rev), bob)
    assert before == ("0123456789", 10)


async def test_read_only_connection_cannot_submit(strict: ServerProcess) -> None:
    doc = new_doc()
    await create(strict, doc, "hello")
    before = await state(strict, doc)
    reader_token = auth("reader", docs={doc: "read"})
    async with connect(strict.ws_url(doc), additional_headers=reader_token) as reader, \
            joined(strict, doc, "bob") as bob:
        init = await recv_json(reader)
        assert init["access"] == "read"
        await reader.send(op(0, ["x"], "reader", 1))
        error = (await frames_until(reader, lambda f: f["type"] == "error"))[-1]
        assert (error["code"], error["seq"]) == ("read_only", 1)
        await assert_undisturbed(strict, doc, before, bob)
        # Still connected: the reader receives bob's op.
        seen = await frames_until(reader, lambda f: f["type"] == "op")
        assert seen[-1]["src"] == "bystander"


async def test_flood_of_ops_is_rate_limited(strict: ServerProcess) -> None:
    doc = new_doc()
    await create(strict, doc, "")
    async with joined(strict, doc, "flooder") as flooder, joined(strict, doc, "bob") as bob:
        total = 40
        started = time.monotonic()
        for seq in range(1, total + 1):
            await flooder.send(op(0, ["f"], "flooder", seq))
        answered: dict[int, str] = {}
        acked_revs: list[int] = []
        async with asyncio.timeout(10):
            while len(answered) < total:
                for frame in flatten(json.loads(await flooder.recv())):
                    if frame["type"] == "ack":
                        answered[frame["seq"]] = "ack"
                        acked_revs.append(frame["rev"])
                    elif frame["type"] == "error":
                        assert frame["code"] == "rate_limited", frame
                        answered[frame["seq"]] = "rate_limited"
        # The burst of 5, and what refilled at 5/s meanwhile, got through; the rest did not.
        allowed = 5 + int(5 * (time.monotonic() - started)) + 1
        limited = [seq for seq, outcome in answered.items() if outcome == "rate_limited"]
        assert 5 <= len(acked_revs) <= allowed < total
        assert len(limited) == total - len(acked_revs)
        content, rev = await state(strict, doc)
        assert rev == len(acked_revs) and content == "f" * rev
        assert sorted(acked_revs) == list(range(1, rev + 1))
        # Bob has a bucket of his own.
        await assert_undisturbed(strict, doc, (content, rev), bob)


async def test_flood_of_presence_is_rate_limited(strict: ServerProcess) -> None:
    doc = new_doc()
    await create(strict, doc, "hello")
    before = await state(strict, doc)
    async with joined(strict, doc, "flooder") as flooder, joined(strict, doc, "bob") as bob:
        started = time.monotonic()
        for i in range(50):
            cursor = {"anchor": i % 6, "head": i % 6}
            await flooder.send(json.dumps({"type": "presence", "rev": 0, "cursor": cursor}))
        error = (await frames_until(flooder, lambda f: f["type"] == "error"))[-1]
        assert error["code"] == "rate_limited"
        assert "seq" not in error  # presence has no seq; the warning is sent once a second
        # Some presence got through to bob, but far from all fifty: the burst (and refills).
        seen = await frames_until(bob, lambda f: f["type"] == "presence")
        await flooder.send(op(0, ["m"], "flooder", 1))
        seen += await frames_until(bob, lambda f: f["type"] == "op" and f["src"] == "flooder")
        relayed = [f for f in seen if f["type"] == "presence"]
        allowed = 5 + int(5 * (time.monotonic() - started)) + 1
        # Presence waits behind ops in bob's outbox, so one may still follow the marker op.
        assert 1 <= len(relayed) <= allowed < 50
        assert await state(strict, doc) == ("mhello", 1)
        await assert_undisturbed(strict, doc, ("mhello", 1), bob)
    assert before == ("hello", 0)


# 400 astral characters are 400 code points but 1600 bytes: the limit counts bytes.
@pytest.mark.parametrize("text", ["x" * 2000, "😀" * 400], ids=["ascii", "multibyte"])
async def test_oversized_frame_closes_with_1009(strict: ServerProcess, text: str) -> None:
    doc = new_doc()
    await create(strict, doc, "hello")
    before = await state(strict, doc)
    async with joined(strict, doc, "offender") as offender, joined(strict, doc, "bob") as bob:
        await offender.send(op(0, [text], "offender", 1))
        assert await close_code(offender) == 1009
        await assert_undisturbed(strict, doc, before, bob)


async def test_token_expiring_mid_session_closes_with_1008(strict: ServerProcess) -> None:
    doc = new_doc()
    await create(strict, doc, "hello")
    before = await state(strict, doc)
    async with joined(strict, doc, "shortlived", ttl=2) as shortlived, \
            joined(strict, doc, "bob") as bob:
        assert await close_code(shortlived, within=10) == 1008
        assert shortlived.close_reason == "token expired"
        await assert_undisturbed(strict, doc, before, bob)


async def test_invalid_utf8_closes_1007_and_logs_one_line_at_most(strict: ServerProcess) -> None:
    doc = new_doc()
    logged_before = strict.logs()
    for _ in range(3):
        async with joined(strict, doc, "mallory") as ws:
            await ws.send(b'{"type":"op","\xff\xfe"}', text=True)
            assert await close_code(ws) == 1007
    await settle(strict)
    logged = strict.logs()[len(logged_before) :]
    assert "Traceback" not in logged
    lines = [line for line in logged.splitlines() if "UTF-8" in line]
    assert len(lines) == 3, logged
    assert all("ERROR" not in line for line in lines)


async def test_deleted_document_closes_its_clients_with_4404(strict: ServerProcess) -> None:
    doc, elsewhere = new_doc(), new_doc()
    await create(strict, doc, "hello")
    await create(strict, elsewhere, "there")
    before = await state(strict, elsewhere)
    async with joined(strict, doc, "a") as first, joined(strict, doc, "b") as second, \
            joined(strict, elsewhere, "bob") as bob:
        async with local_http(strict) as client:
            response = await client.delete(f"/documents/{doc}", headers=auth("admin"))
            assert response.status_code == 204
            assert await close_code(first) == 4404
            assert await close_code(second) == 4404
            assert first.close_reason == "document deleted"
            gone = await client.get(f"/documents/{doc}", headers=auth("admin"))
            assert gone.status_code == 404
        # Every close path releases what it counted: only bob is still connected.
        await wait_for_connections(strict, 1)
        await assert_undisturbed(strict, elsewhere, before, bob)


# -- per-user and per-address limits ----------------------------------------------------------


async def test_connections_are_limited_per_user_and_per_address(limited: ServerProcess) -> None:
    doc = new_doc()
    async with joined(limited, doc, "ada"), joined(limited, doc, "ada"):
        status, body = await refused(limited.ws_url(doc), auth("ada"))
        assert (status, body["detail"]) == (429, "too many connections for this user")
        async with joined(limited, doc, "bob"):
            status, body = await refused(limited.ws_url(doc), auth("cyd"))
            assert (status, body["detail"]) == (429, "too many connections from this address")
    await settle(limited)
    # Every close released what it held: the same user and address may connect again.
    async with joined(limited, doc, "ada"), joined(limited, doc, "ada"), \
            joined(limited, doc, "cyd"):
        pass
    await settle(limited)


async def test_ops_are_limited_per_user_across_rest_and_sockets(limited: ServerProcess) -> None:
    doc = new_doc()
    await create(limited, doc, "")
    async with local_http(limited) as client:
        for seq in (1, 2):
            response = await client.post(
                f"/documents/{doc}/ops",
                json={"rev": 0, "op": ["x"], "src": "rest", "seq": seq},
                headers=auth("eve"),
            )
            assert response.status_code == 200, response.text
        async with joined(limited, doc, "eve") as ws:
            await ws.send(op(2, ["y"], "sock", 1))
            ack = await frames_until(ws, lambda f: f["type"] in ("ack", "error"))
            assert ack[-1]["type"] == "ack"
            # The user's third op used the burst: the next, on either path, is refused.
            await ws.send(op(3, ["z"], "sock", 2))
            error = (await frames_until(ws, lambda f: f["type"] == "error"))[-1]
            assert (error["code"], error["seq"]) == ("rate_limited", 2)
        response = await client.post(
            f"/documents/{doc}/ops", json={"rev": 3, "op": ["w"]}, headers=auth("eve")
        )
        assert response.status_code == 429
        # Another user is not held back by eve's limit.
        response = await client.post(
            f"/documents/{doc}/ops", json={"rev": 3, "op": ["v"]}, headers=auth("fay")
        )
        assert response.status_code == 200
    await settle(limited)
