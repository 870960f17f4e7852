"""The REST API (SPEC §5) on the in-process app, against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from collab import ot
from collab.settings import Settings
from tests.support import SECRET, auth, open_app_client, wait_for

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]
ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
WRITER = auth("alice")


@pytest.fixture
async def client_with(make_settings: Callable[..., Settings]) -> AsyncIterator[ClientFactory]:
    """Opens an in-process app with settings overridden, e.g. ``await client_with(x=1)``."""
    async with AsyncExitStack() as stack:

        async def open_client(**overrides: Any) -> httpx.AsyncClient:
            return await stack.enter_async_context(open_app_client(make_settings(**overrides)))

        yield open_client


# -- helpers ----------------------------------------------------------------------------------


async def create(client: httpx.AsyncClient, doc_id: str | None = None, content: str = "",
                 title: str = "", headers: dict[str, str] = WRITER) -> dict[str, Any]:
    body: dict[str, Any] = {"content": content, "title": title}
    if doc_id is not None:
        body["id"] = doc_id
    response = await client.post("/documents", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def submit(client: httpx.AsyncClient, doc_id: str, rev: int, op: Any,
                 headers: dict[str, str] = WRITER, **extra: Any) -> httpx.Response:
    return await post_json(client, f"/documents/{doc_id}/ops", {"rev": rev, "op": op, **extra},
                           headers)


async def post_json(client: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str]
                    ) -> httpx.Response:
    # Encoded here, ASCII-escaped, because httpx cannot send a lone surrogate as UTF-8.
    return await client.post(path, content=json.dumps(body),
                             headers={**headers, "content-type": "application/json"})


async def commit(client: httpx.AsyncClient, doc_id: str, rev: int, op: Any, **extra: Any) -> int:
    response = await submit(client, doc_id, rev, op, **extra)
    assert response.status_code == 200, response.text
    new_rev: int = response.json()["rev"]
    return new_rev


async def full_history(client: httpx.AsyncClient, doc_id: str, limit: int = 1000
                       ) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    since = 0
    while True:
        response = await client.get(f"/documents/{doc_id}/history",
                                    params={"since": since, "limit": limit}, headers=WRITER)
        assert response.status_code == 200, response.text
        page = response.json()
        ops.extend(page["ops"])
        if page["next"] is None:
            return ops
        since = page["next"]


def replay(initial: str, ops: list[dict[str, Any]]) -> list[str]:
    """The text at every revision: ``texts[r]`` is the document after ``r`` ops."""
    texts = [initial]
    for item in ops:
        texts.append(ot.apply(texts[-1], item["op"]))
    return texts


async def content_at(client: httpx.AsyncClient, doc_id: str, **query: Any) -> httpx.Response:
    return await client.get(f"/documents/{doc_id}/content", params=query, headers=WRITER)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(alg: str, claims: dict[str, Any], key: bytes = b"") -> str:
    signing_input = f"{_b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}." \
                    f"{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64(signature)}"


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# -- creating, reading, listing ---------------------------------------------------------------


async def test_create_with_id_title_content(app_client: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    doc = await create(app_client, "notes-1", content="héllo 😀", title="My notes")
    after = datetime.now(UTC)
    assert set(doc) == {"id", "title", "rev", "content", "created_at", "updated_at"}
    assert (doc["id"], doc["title"], doc["rev"], doc["content"]) == (
        "notes-1", "My notes", 0, "héllo 😀")
    created = datetime.fromisoformat(doc["created_at"])
    assert created.tzinfo is not None
    assert before <= created <= after
    assert doc["updated_at"] == doc["created_at"]
    got = await app_client.get("/documents/notes-1", headers=WRITER)
    assert got.status_code == 200
    assert got.json() == doc


async def test_create_without_anything(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post("/documents", json={}, headers=WRITER)
    assert response.status_code == 201
    doc = response.json()
    assert ID_RE.match(doc["id"])
    assert (doc["title"], doc["content"], doc["rev"]) == ("", "", 0)
    other = await create(app_client)
    assert other["id"] != doc["id"]
    assert (await app_client.get(f"/documents/{doc['id']}", headers=WRITER)).status_code == 200


async def test_create_duplicate_is_409(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "dup", content="first")
    response = await app_client.post("/documents", json={"id": "dup", "content": "second"},
                                     headers=WRITER)
    assert response.status_code == 409
    assert "dup" in response.json()["detail"]
    got = await app_client.get("/documents/dup", headers=WRITER)
    assert got.json()["content"] == "first"


async def test_get_unknown_is_404(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/documents/nope", headers=WRITER)
    assert response.status_code == 404
    assert "detail" in response.json()


async def test_get_reflects_ops(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d", content="hello")
    assert await commit(app_client, "d", 0, [5, " world"]) == 1
    doc = (await app_client.get("/documents/d", headers=WRITER)).json()
    assert (doc["rev"], doc["content"]) == (1, "hello world")
    assert datetime.fromisoformat(doc["updated_at"]) >= datetime.fromisoformat(doc["created_at"])


async def test_list_pages_with_cursor(app_client: httpx.AsyncClient) -> None:
    ids = [f"doc-{i:02d}" for i in range(7)]
    for doc_id in reversed(ids):
        await create(app_client, doc_id, content="secret body", title=doc_id.upper())
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await app_client.get("/documents", params=params, headers=WRITER)
        assert response.status_code == 200
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= 3
        for item in page["items"]:
            assert "content" not in item
            assert set(item) == {"id", "title", "rev", "created_at", "updated_at"}
            assert item["title"] == item["id"].upper()
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3
    everything = (await app_client.get("/documents", headers=WRITER)).json()
    assert [i["id"] for i in everything["items"]] == ids
    assert everything["next_cursor"] is None


async def test_list_exact_page_has_no_next(app_client: httpx.AsyncClient) -> None:
    for doc_id in ("a", "b"):
        await create(app_client, doc_id)
    page = (await app_client.get("/documents", params={"limit": 2}, headers=WRITER)).json()
    assert [i["id"] for i in page["items"]] == ["a", "b"]
    assert page["next_cursor"] is None


async def test_list_bad_parameters(app_client: httpx.AsyncClient) -> None:
    for params in ({"limit": 0}, {"limit": -1}, {"limit": "many"}, {"limit": 10_000}):
        response = await app_client.get("/documents", params=params, headers=WRITER)
        assert response.status_code == 422, params
    for cursor in ("!!!", "@@", base64.urlsafe_b64encode(b"bad id").decode()):
        response = await app_client.get("/documents", params={"cursor": cursor}, headers=WRITER)
        assert response.status_code == 400, cursor


async def test_list_only_shows_readable_documents(app_client: httpx.AsyncClient) -> None:
    for doc_id in ("a", "b", "c", "d"):
        await create(app_client, doc_id)

    async def listed(headers: dict[str, str], limit: int = 50) -> list[str]:
        ids: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            response = await app_client.get("/documents", params=params, headers=headers)
            assert response.status_code == 200
            ids.extend(i["id"] for i in response.json()["items"])
            cursor = response.json()["next_cursor"]
            if cursor is None:
                return ids

    assert await listed(auth("u", docs={"a": "read", "c": "write"})) == ["a", "c"]
    assert await listed(auth("u", docs={"a": "read", "c": "write", "d": "read"}), limit=1) == [
        "a", "c", "d"]
    assert await listed(auth("u", docs={"zzz": "write"})) == []
    assert await listed(auth("u", docs={})) == []
    assert await listed(auth("u", docs={"*": "read"})) == ["a", "b", "c", "d"]
    assert await listed(auth("u", docs={"*": "read", "b": "write"})) == ["a", "b", "c", "d"]
    assert await listed(auth("u")) == ["a", "b", "c", "d"]


# -- ops, history, content, snapshots ---------------------------------------------------------


async def test_submit_op(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d", content="abc")
    response = await submit(app_client, "d", 0, [1, "X", 2], src="editor-1", seq=1)
    assert response.status_code == 200
    assert response.json() == {"rev": 1}
    # A stale op is transformed past the newer one.
    assert await commit(app_client, "d", 0, [3, "!"], src="editor-2", seq=1) == 2
    assert (await app_client.get("/documents/d", headers=WRITER)).json()["content"] == "aXbc!"
    [first, second] = await full_history(app_client, "d")
    assert first["op"] == [1, "X"]  # stored in normal form
    assert second["op"] == [4, "!"]


async def test_submit_without_src_gets_distinct_ids(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d")
    await commit(app_client, "d", 0, ["a"])
    await commit(app_client, "d", 1, [1, "a"])
    ops = await full_history(app_client, "d")
    assert len(ops) == 2
    assert ops[0]["src"] != ops[1]["src"]
    assert (await app_client.get("/documents/d", headers=WRITER)).json()["content"] == "aa"


async def test_repeated_src_seq_is_answered_with_original_revision(
    app_client: httpx.AsyncClient,
) -> None:
    await create(app_client, "d", content="")
    assert await commit(app_client, "d", 0, ["hello"], src="ed", seq=1) == 1
    assert await commit(app_client, "d", 1, [5, "!"], src="other", seq=1) == 2
    # The resend, even with another body, is not applied again.
    assert await commit(app_client, "d", 0, ["hello"], src="ed", seq=1) == 1
    assert await commit(app_client, "d", 2, ["zzz"], src="ed", seq=1) == 1
    doc = (await app_client.get("/documents/d", headers=WRITER)).json()
    assert (doc["rev"], doc["content"]) == (2, "hello!")
    assert len(await full_history(app_client, "d")) == 2
    # The next seq from the same editor is a new op.
    assert await commit(app_client, "d", 2, [6, "?"], src="ed", seq=2) == 3


async def test_concurrent_resends_apply_once(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d")
    responses = await asyncio.gather(
        *(submit(app_client, "d", 0, ["once"], src="ed", seq=1) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["rev"] for r in responses} == {1}
    assert (await app_client.get("/documents/d", headers=WRITER)).json()["content"] == "once"
    assert len(await full_history(app_client, "d")) == 1


async def test_resend_after_the_document_was_unloaded(client_with: ClientFactory) -> None:
    """The (src, seq) lookup falls back to the database when the actor starts afresh."""
    client = await client_with(doc_idle_seconds=0)
    await create(client, "d")
    assert await commit(client, "d", 0, ["a"], src="ed", seq=1) == 1
    assert await commit(client, "d", 1, [1, "b"], src="ed", seq=2) == 2
    await _until_unloaded(client)
    assert await commit(client, "d", 0, ["a"], src="ed", seq=1) == 1
    await _until_unloaded(client)
    assert await commit(client, "d", 1, [1, "b"], src="ed", seq=2) == 2
    assert (await client.get("/documents/d", headers=WRITER)).json()["content"] == "ab"


async def _until_unloaded(client: httpx.AsyncClient) -> None:
    registry = client.app.state.services.registry  # type: ignore[attr-defined]
    await wait_for(lambda: len(registry) == 0)


@pytest.mark.parametrize(
    "op",
    [
        [10, "x"],            # skip past the end
        [{"d": 6}],           # delete past the end
        [2, {"d": "xyz"}],    # text delete that does not match
        [{"d": "HELLO"}],
        [True],               # bad component types
        [1.5],
        [0],
        [-1],
        [""],
        [None],
        [["x"]],
        [{"i": "x"}],
        [{"d": 0}],
        [{"d": 1, "extra": 1}],
        ["\ud800"],
    ],
    ids=lambda op: json.dumps(op),
)
async def test_invalid_op_is_422(app_client: httpx.AsyncClient, op: Any) -> None:
    await create(app_client, "d", content="hello")
    response = await submit(app_client, "d", 0, op)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    doc = (await app_client.get("/documents/d", headers=WRITER)).json()
    assert (doc["rev"], doc["content"]) == (0, "hello")


async def test_invalid_op_at_its_base_revision(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d", content="ab")
    await commit(app_client, "d", 0, [2, "cdef"])
    # Valid on today's text, but revision 0 had 2 characters.
    assert (await submit(app_client, "d", 0, [5, "x"])).status_code == 422
    assert (await submit(app_client, "d", 1, [5, "x"])).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"rev": 0},
        {"op": ["x"]},
        {"rev": "0", "op": ["x"]},
        {"rev": True, "op": ["x"]},
        {"rev": -1, "op": ["x"]},
        {"rev": 2**31, "op": ["x"]},
        {"rev": 0, "op": "x"},
        {"rev": 0, "op": {"d": 1}},
        {"rev": 0, "op": ["x"], "src": ""},
        {"rev": 0, "op": ["x"], "src": "s" * 65},
        {"rev": 0, "op": ["x"], "src": "s", "seq": 0},
        {"rev": 0, "op": ["x"], "src": "s", "seq": True},
        {"rev": 0, "op": ["x"], "colour": "red"},
    ],
    ids=lambda body: json.dumps(body)[:60],
)
async def test_bad_op_body_is_422(app_client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    await create(app_client, "d")
    response = await app_client.post("/documents/d/ops", json=body, headers=WRITER)
    assert response.status_code == 422, response.text


async def test_src_and_seq_go_together(app_client: httpx.AsyncClient) -> None:
    """A src without a seq would make every later op look like a resend and be dropped."""
    await create(app_client, "d")
    assert (await submit(app_client, "d", 0, ["a"], src="ed")).status_code == 422
    assert (await submit(app_client, "d", 0, ["a"], seq=1)).status_code == 422
    assert (await app_client.get("/documents/d", headers=WRITER)).json()["rev"] == 0


async def test_future_revision_is_409(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d", content="x")
    response = await submit(app_client, "d", 1, [1, "y"])
    assert response.status_code == 409
    assert "detail" in response.json()
    await commit(app_client, "d", 0, ["a"])
    assert (await submit(app_client, "d", 5, ["b"])).status_code == 409
    assert (await submit(app_client, "d", 1, ["b"])).status_code == 200


async def test_revision_older_than_history_is_409(client_with: ClientFactory) -> None:
    client = await client_with(max_rebase_distance=2)
    await create(client, "d")
    for rev in range(3):
        await commit(client, "d", rev, ["x"])
    assert (await submit(client, "d", 0, ["y"])).status_code == 409
    assert (await submit(client, "d", 1, ["y"])).status_code == 200


async def test_op_on_unknown_document_is_404(app_client: httpx.AsyncClient) -> None:
    response = await submit(app_client, "ghost", 0, ["x"])
    assert response.status_code == 404
    # Submitting did not create it.
    assert (await app_client.get("/documents/ghost", headers=WRITER)).status_code == 404


async def test_history_pages(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d")
    started = datetime.now(UTC)
    for rev in range(7):
        await commit(app_client, "d", rev, [*([rev] if rev else []), str(rev)], src="ed",
                     seq=rev + 1)
    first = (await app_client.get("/documents/d/history", params={"limit": 3},
                                  headers=WRITER)).json()
    assert [o["rev"] for o in first["ops"]] == [1, 2, 3]
    assert first["next"] == 3
    op = first["ops"][0]
    assert set(op) == {"rev", "op", "src", "seq", "user", "created_at"}
    assert (op["op"], op["src"], op["seq"], op["user"]) == (["0"], "ed", 1, "alice")
    assert datetime.fromisoformat(op["created_at"]) >= started
    second = (await app_client.get("/documents/d/history", params={"since": 3, "limit": 3},
                                   headers=WRITER)).json()
    assert [o["rev"] for o in second["ops"]] == [4, 5, 6]
    assert second["next"] == 6
    last = (await app_client.get("/documents/d/history", params={"since": 6, "limit": 3},
                                 headers=WRITER)).json()
    assert [o["rev"] for o in last["ops"]] == [7]
    assert last["next"] is None
    everything = (await app_client.get("/documents/d/history", headers=WRITER)).json()
    assert [o["rev"] for o in everything["ops"]] == list(range(1, 8))
    assert everything["next"] is None
    beyond = (await app_client.get("/documents/d/history", params={"since": 50},
                                   headers=WRITER)).json()
    assert beyond == {"ops": [], "next": None}


async def test_history_exact_last_page_has_no_next(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d")
    for rev in range(4):
        await commit(app_client, "d", rev, ["x"])
    page = (await app_client.get("/documents/d/history", params={"since": 2, "limit": 2},
                                 headers=WRITER)).json()
    assert [o["rev"] for o in page["ops"]] == [3, 4]
    assert page["next"] is None


async def test_history_errors(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/documents/ghost/history", headers=WRITER)).status_code == 404
    await create(app_client, "d")
    for params in ({"since": -1}, {"limit": 0}, {"limit": 100_000}, {"since": "x"}):
        response = await app_client.get("/documents/d/history", params=params, headers=WRITER)
        assert response.status_code == 422, params


async def test_content_at_revision(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d", content="start")
    ops: list[ot.Op] = [[5, " one"], [{"d": "start"}], ["two "], [3, {"d": 2}, "X"]]
    for rev, op in enumerate(ops):
        await commit(app_client, "d", rev, op)
    texts = replay("start", [{"op": op} for op in ops])
    for rev, text in enumerate(texts):
        response = await content_at(app_client, "d", rev=rev)
        assert response.status_code == 200
        assert response.json() == {"rev": rev, "content": text}
    assert (await content_at(app_client, "d")).json() == {"rev": 4, "content": texts[-1]}
    assert (await content_at(app_client, "d", rev=5)).status_code == 404
    assert (await content_at(app_client, "d", rev=-1)).status_code == 422
    assert (await content_at(app_client, "ghost", rev=0)).status_code == 404


async def test_content_at_time(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d", content="v0")
    moments = [datetime.now(UTC)]
    for rev in range(3):
        await commit(app_client, "d", rev, [{"d": f"v{rev}"}, f"v{rev + 1}"])
        moments.append(datetime.now(UTC))
    for rev, moment in enumerate(moments):
        response = await content_at(app_client, "d", at=moment.isoformat())
        assert response.status_code == 200, response.text
        assert response.json() == {"rev": rev, "content": f"v{rev}"}
    # The "Z" spelling and other offsets mean the same instant.
    zulu = moments[1].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert (await content_at(app_client, "d", at=zulu)).json()["rev"] == 1
    plus_two = moments[2].astimezone(timezone(timedelta(hours=2)))
    assert (await content_at(app_client, "d", at=plus_two.isoformat())).json()["rev"] == 2
    # Before the document existed: 404.
    before = (moments[0] - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (await content_at(app_client, "d", at=before)).status_code == 404
    assert (await content_at(app_client, "d", at="2000-01-01T00:00:00Z")).status_code == 404
    # Far in the future: the latest revision.
    assert (await content_at(app_client, "d", at="2999-01-01T00:00:00Z")).json()["rev"] == 3


async def test_content_at_bad_queries(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d")
    assert (await content_at(app_client, "d", at="yesterday")).status_code == 422
    # A time without a zone is ambiguous.
    assert (await content_at(app_client, "d", at="2026-11-24T10:00:00")).status_code == 400
    both = await content_at(app_client, "d", rev=0, at="2026-11-24T10:00:00Z")
    assert both.status_code == 400


async def test_snapshots_every_n_ops(client_with: ClientFactory) -> None:
    client = await client_with(snapshot_every=5)
    await create(client, "d", content="s")
    snapshots = (await client.get("/documents/d/snapshots", headers=WRITER)).json()
    assert [s["rev"] for s in snapshots] == [0]
    for rev in range(12):
        await commit(client, "d", rev, [rev + 1, chr(ord("a") + rev)])
    response = await client.get("/documents/d/snapshots", headers=WRITER)
    assert response.status_code == 200
    snapshots = response.json()
    assert [s["rev"] for s in snapshots] == [0, 5, 10]
    assert all(set(s) == {"rev", "created_at"} for s in snapshots)
    times = [datetime.fromisoformat(s["created_at"]) for s in snapshots]
    assert times == sorted(times)
    texts = replay("s", await full_history(client, "d"))
    for rev in range(13):
        assert (await content_at(client, "d", rev=rev)).json()["content"] == texts[rev]
    assert texts[12] == "sabcdefghijkl"
    assert (await client.get("/documents/ghost/snapshots", headers=WRITER)).status_code == 404


# -- deleting -----------------------------------------------------------------------------------


async def test_delete(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "loaded", content="x")
    await commit(app_client, "loaded", 0, ["y"])  # its actor is running
    await create(app_client, "cold", content="x")  # never loaded
    for doc_id in ("loaded", "cold"):
        response = await app_client.delete(f"/documents/{doc_id}", headers=WRITER)
        assert response.status_code == 204
        assert response.content == b""
        assert (await app_client.get(f"/documents/{doc_id}", headers=WRITER)).status_code == 404
        assert (await app_client.delete(f"/documents/{doc_id}", headers=WRITER)).status_code == 404
        assert (await submit(app_client, doc_id, 0, ["z"])).status_code == 404
        assert (await app_client.get(f"/documents/{doc_id}/history",
                                     headers=WRITER)).status_code == 404
        assert (await content_at(app_client, doc_id, rev=0)).status_code == 404
    listed = (await app_client.get("/documents", headers=WRITER)).json()["items"]
    assert listed == []
    # The id can be used again, with a fresh history.
    again = await create(app_client, "loaded", content="new")
    assert again["rev"] == 0
    assert await commit(app_client, "loaded", 0, [3, "!"]) == 1
    assert (await app_client.get("/documents/loaded", headers=WRITER)).json()["content"] == "new!"
    assert len(await full_history(app_client, "loaded")) == 1


async def test_delete_unknown_is_404(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.delete("/documents/ghost", headers=WRITER)).status_code == 404


# -- tickets, health, metrics, schema ---------------------------------------------------------


async def test_ticket(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post("/tickets", json={"doc": "d"}, headers=WRITER)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"ticket", "expires_in"}
    assert body["expires_in"] == 30
    assert len(body["ticket"]) >= 32
    again = (await app_client.post("/tickets", json={"doc": "d"}, headers=WRITER)).json()
    assert again["ticket"] != body["ticket"]
    reader = auth("r", docs={"d": "read"})
    assert (await app_client.post("/tickets", json={"doc": "d"}, headers=reader)).status_code == 201
    for bad in ({}, {"doc": "bad id"}, {"doc": "d", "x": 1}, {"doc": 5}):
        response = await app_client.post("/tickets", json=bad, headers=WRITER)
        assert response.status_code == 422, bad


async def test_healthz_and_readyz(app_client: httpx.AsyncClient) -> None:
    health = await app_client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in metrics"
    return float(match.group(1))


async def test_metrics(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("collab_connections", "collab_documents_loaded", "collab_ops_applied_total",
                 "collab_send_queue_drops_total", "collab_op_latency_seconds_count"):
        _metric(text, name)
    assert "# TYPE collab_op_latency_seconds histogram" in text
    applied = _metric(text, "collab_ops_applied_total")
    latency_count = _metric(text, "collab_op_latency_seconds_count")

    await create(app_client, "d")
    for rev in range(3):
        await commit(app_client, "d", rev, ["x"])
    await commit(app_client, "d", 0, ["x"], src="ed", seq=1)
    await commit(app_client, "d", 0, ["x"], src="ed", seq=1)  # a resend is not applied
    after = (await app_client.get("/metrics")).text
    assert _metric(after, "collab_ops_applied_total") == applied + 4
    assert _metric(after, "collab_op_latency_seconds_count") == latency_count + 4
    assert _metric(after, "collab_documents_loaded") >= 1
    assert _metric(after, 'collab_op_latency_seconds_bucket{le="+Inf"}') == latency_count + 4


async def test_openapi_lists_every_route(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/documents": {"get", "post"},
        "/documents/{doc_id}": {"get", "delete"},
        "/documents/{doc_id}/ops": {"post"},
        "/documents/{doc_id}/history": {"get"},
        "/documents/{doc_id}/content": {"get"},
        "/documents/{doc_id}/snapshots": {"get"},
        "/tickets": {"post"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
        for method in methods:
            assert paths[path][method].get("description") or paths[path][method].get("summary")
    # Dev-only routes are not part of a production server's schema.
    assert "/dev/token" not in paths
    assert (await app_client.post("/dev/token", json={"name": "x"})).status_code in (404, 405)


# -- authentication and authorisation ---------------------------------------------------------

DOC_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/documents", {"id": "d2"}),
    ("GET", "/documents", None),
    ("GET", "/documents/d", None),
    ("POST", "/documents/d/ops", {"rev": 0, "op": ["x"]}),
    ("GET", "/documents/d/history", None),
    ("GET", "/documents/d/content", None),
    ("GET", "/documents/d/snapshots", None),
    ("DELETE", "/documents/d", None),
    ("POST", "/tickets", {"doc": "d"}),
]


async def _call(client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None,
                headers: dict[str, str] | None) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers or {})


def _expired() -> dict[str, str]:
    return auth("alice", ttl=-30)


def _now_claims() -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 600}


BAD_CREDENTIALS: dict[str, Callable[[], dict[str, str] | None]] = {
    "no-token": lambda: None,
    "empty-bearer": lambda: {"Authorization": "Bearer "},
    "basic-scheme": lambda: {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
    "garbage": lambda: bearer("not-a-jwt"),
    "bad-signature": lambda: auth("alice", secret="another-secret-0123456789abcdef-012345"),
    "alg-none": lambda: bearer(forged("none", _now_claims())),
    "alg-rs256": lambda: bearer(forged("RS256", _now_claims(), SECRET.encode())),
    "expired": _expired,
}


@pytest.mark.parametrize("kind", list(BAD_CREDENTIALS))
async def test_unauthenticated_is_401_everywhere(app_client: httpx.AsyncClient, kind: str
                                                 ) -> None:
    await create(app_client, "d", content="keep")
    for method, path, body in DOC_ROUTES:
        response = await _call(app_client, method, path, body, BAD_CREDENTIALS[kind]())
        assert response.status_code == 401, (method, path, response.text)
        assert "detail" in response.json()
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
    doc = (await app_client.get("/documents/d", headers=WRITER)).json()
    assert (doc["rev"], doc["content"]) == (0, "keep")
    assert (await app_client.get("/documents/d2", headers=WRITER)).status_code == 404


@pytest.mark.parametrize(
    ("claim", "expected", "wrong"),
    [
        ("audience", "collab-api", "someone-else"),
        ("issuer", "https://auth.example", "https://evil.example"),
    ],
)
async def test_claim_checked_when_configured(
    client_with: ClientFactory, claim: str, expected: str, wrong: str
) -> None:
    client = await client_with(**{f"jwt_{claim}": expected})
    assert (await client.get("/documents", headers=auth("a"))).status_code == 401
    mismatched = auth("a", **{claim: wrong})
    assert (await client.get("/documents", headers=mismatched)).status_code == 401
    right = auth("a", **{claim: expected})
    assert (await client.get("/documents", headers=right)).status_code == 200


async def test_token_for_another_document_is_403(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d", content="keep")
    other = auth("mallory", docs={"other": "write"})
    for method, path, body in DOC_ROUTES:
        if path == "/documents" and method == "GET":
            continue  # a listing is filtered, not refused
        response = await _call(app_client, method, path, body, other)
        assert response.status_code == 403, (method, path, response.text)
        assert "detail" in response.json()
    # 403 also for a document that does not exist: nothing is revealed about it.
    assert (await app_client.get("/documents/ghost", headers=other)).status_code == 403
    listing = await app_client.get("/documents", headers=other)
    assert listing.json()["items"] == []
    doc = (await app_client.get("/documents/d", headers=WRITER)).json()
    assert (doc["rev"], doc["content"]) == (0, "keep")


async def test_read_only_token(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d", content="keep")
    await commit(app_client, "d", 0, [4, "!"])
    reader = auth("reader", docs={"d": "read"})
    for path in ("/documents/d", "/documents/d/history", "/documents/d/content",
                 "/documents/d/snapshots", "/documents"):
        response = await app_client.get(path, headers=reader)
        assert response.status_code == 200, path
    assert (await app_client.get("/documents/d", headers=reader)).json()["content"] == "keep!"
    assert (await submit(app_client, "d", 1, ["x"], headers=reader)).status_code == 403
    assert (await app_client.delete("/documents/d", headers=reader)).status_code == 403
    created = await app_client.post("/documents", json={"id": "d"}, headers=reader)
    assert created.status_code == 403
    doc = (await app_client.get("/documents/d", headers=WRITER)).json()
    assert (doc["rev"], doc["content"]) == (1, "keep!")


async def test_star_read_with_a_specific_write(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "mine")
    await create(app_client, "theirs")
    headers = auth("u", docs={"*": "read", "mine": "write"})
    assert (await submit(app_client, "mine", 0, ["x"], headers=headers)).status_code == 200
    assert (await submit(app_client, "theirs", 0, ["x"], headers=headers)).status_code == 403
    assert (await app_client.get("/documents/theirs", headers=headers)).status_code == 200
    # A specific read wins over a "*" write.
    limited = auth("u", docs={"*": "write", "theirs": "read"})
    assert (await submit(app_client, "theirs", 0, ["x"], headers=limited)).status_code == 403
    assert (await submit(app_client, "mine", 1, ["y"], headers=limited)).status_code == 200


async def test_create_needs_write_on_the_new_id(app_client: httpx.AsyncClient) -> None:
    scoped = auth("u", docs={"allowed": "write"})
    ok = await app_client.post("/documents", json={"id": "allowed"}, headers=scoped)
    assert ok.status_code == 201
    denied = await app_client.post("/documents", json={"id": "elsewhere"}, headers=scoped)
    assert denied.status_code == 403
    # Without an id the server picks one, which such a token cannot be granted in advance.
    assert (await app_client.post("/documents", json={}, headers=scoped)).status_code == 403
    star = auth("u", docs={"*": "write"})
    assert (await app_client.post("/documents", json={}, headers=star)).status_code == 201


async def test_op_author_is_the_token_subject(app_client: httpx.AsyncClient) -> None:
    await create(app_client, "d")
    await commit(app_client, "d", 0, ["x"])
    response = await submit(app_client, "d", 1, ["y"], headers=auth("bob", name="Bob"))
    assert response.status_code == 200
    assert [o["user"] for o in await full_history(app_client, "d")] == ["alice", "bob"]


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc_id", ["bad id", "bad$id", "x" * 129, "émoji", "semi;colon", "a%2Fb"],
)
async def test_bad_document_id_is_422(app_client: httpx.AsyncClient, doc_id: str) -> None:
    response = await app_client.post("/documents", json={"id": doc_id}, headers=WRITER)
    assert response.status_code == 422
    for method, suffix in (("GET", ""), ("POST", "/ops"), ("GET", "/history"),
                           ("GET", "/content"), ("GET", "/snapshots"), ("DELETE", "")):
        body = {"rev": 0, "op": ["x"]} if suffix == "/ops" else None
        path = f"/documents/{doc_id}{suffix}"
        response = await _call(app_client, method, path, body, WRITER)
        assert response.status_code in (404, 422), (method, path)
        if "%" not in doc_id:
            assert response.status_code == 422, (method, path, response.text)


async def test_longest_document_id_is_fine(app_client: httpx.AsyncClient) -> None:
    doc_id = "a" * 128
    await create(app_client, doc_id)
    assert (await app_client.get(f"/documents/{doc_id}", headers=WRITER)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "colour": "red"},
        {"id": "x", "content": 5},
        {"id": "x", "title": None},
        {"id": 7},
        {"id": "x", "title": "t" * 513},
        {"id": "x", "content": "\ud800"},
    ],
    ids=lambda body: json.dumps(body)[:40],
)
async def test_bad_create_body_is_422(app_client: httpx.AsyncClient, body: dict[str, Any]
                                      ) -> None:
    response = await post_json(app_client, "/documents", body, WRITER)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


async def test_malformed_json_is_422(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post(
        "/documents", content=b'{"id": ', headers={**WRITER, "content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_oversized_body_is_413(client_with: ClientFactory) -> None:
    client = await client_with(max_message_bytes=1000)
    big = "x" * 2000
    response = await client.post("/documents", json={"id": "big", "content": big},
                                 headers=WRITER)
    assert response.status_code == 413
    assert "detail" in response.json()
    assert (await client.get("/documents/big", headers=WRITER)).status_code == 404
    await create(client, "d", content="small")
    response = await submit(client, "d", 0, [big])
    assert response.status_code == 413
    assert (await client.get("/documents/d", headers=WRITER)).json()["rev"] == 0

    # A body without Content-Length (chunked) is counted as it arrives.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"id": "chunked", "content": "'
        for _ in range(10):
            yield b"y" * 200
        yield b'"}'

    response = await client.post("/documents", content=chunks(),
                                 headers={**WRITER, "content-type": "application/json"})
    assert response.status_code == 413
    assert (await client.get("/documents/chunked", headers=WRITER)).status_code == 404
    # Under the limit is fine.
    assert (await client.post("/documents", json={"id": "ok", "content": "z" * 500},
                              headers=WRITER)).status_code == 201


# -- many concurrent writers ------------------------------------------------------------------


def _random_op(rng: random.Random, text: str, marker: str, allow_delete: bool) -> ot.Op:
    """An op valid on ``text``: an insert at a random position, or a checked text delete."""
    pos = rng.randint(0, len(text))
    skip: ot.Op = [pos] if pos else []
    if allow_delete and len(text) > pos and rng.random() < 0.35:
        length = rng.randint(1, min(4, len(text) - pos))
        return [*skip, {"d": text[pos:pos + length]}]
    return [*skip, marker]


async def test_two_hundred_concurrent_stale_writers(client_with: ClientFactory) -> None:
    # Snapshots every 30 ops, so reading old revisions crosses several of them.
    client = await client_with(snapshot_every=30)
    initial = "The quick brown fox jumps over the lazy dog."
    await create(client, "race", content=initial)
    rng = random.Random(20261124)

    # Wave 1: 100 inserts all made at revision 0.
    wave1 = [
        submit(client, "race", 0, _random_op(rng, initial, f"<{i}>", False), src=f"w1-{i}",
               seq=1)
        for i in range(100)
    ]
    responses = await asyncio.gather(*wave1)
    assert [r.status_code for r in responses] == [200] * 100, [r.text for r in responses]
    assert sorted(r.json()["rev"] for r in responses) == list(range(1, 101))
    texts = replay(initial, await full_history(client, "race"))
    for i in range(100):
        assert f"<{i}>" in texts[100]  # no insert lost

    # Wave 2: 100 inserts and deletes, each made at a random older revision.
    wave2 = []
    for i in range(100):
        base = rng.randint(0, 100)
        op = _random_op(rng, texts[base], f"[{i}]", True)
        wave2.append(submit(client, "race", base, op, src=f"w2-{i}", seq=1))
    responses = await asyncio.gather(*wave2)
    assert [r.status_code for r in responses] == [200] * 100, [r.text for r in responses]
    assert sorted(r.json()["rev"] for r in responses) == list(range(101, 201))

    history = await full_history(client, "race", limit=37)
    assert [o["rev"] for o in history] == list(range(1, 201))
    pairs = [(o["src"], o["seq"]) for o in history]
    assert len(set(pairs)) == 200
    texts = replay(initial, history)
    doc = (await client.get("/documents/race", headers=WRITER)).json()
    assert (doc["rev"], doc["content"]) == (200, texts[200])
    for rev in range(201):
        response = await content_at(client, "race", rev=rev)
        assert response.json() == {"rev": rev, "content": texts[rev]}, rev
    # Ops committed together share a snapshot, so only the last boundary's is certain.
    snapshots = (await client.get("/documents/race/snapshots", headers=WRITER)).json()
    revs = [s["rev"] for s in snapshots]
    assert revs == sorted(revs)
    assert revs[0] == 0
    assert 180 <= revs[-1] <= 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/documents/d/history?since={n}", None),
        ("GET", "/documents/d/history?limit={n}", None),
        ("GET", "/documents/d/content?rev={n}", None),
        ("GET", "/documents?limit={n}", None),
        ("POST", "/documents/d/ops", {"rev": "{n}", "op": []}),
        ("POST", "/documents/d/ops", {"rev": 0, "op": [], "src": "s", "seq": "{n}"}),
    ],
)
@pytest.mark.parametrize("number", [10**30, -(10**30), 2**31])
async def test_every_integer_parameter_is_bounded(
    app_client: httpx.AsyncClient, method: str, path: str, body: Any, number: int
) -> None:
    """A huge or negative integer anywhere is a 422, never a 500 from an overflow."""
    await create(app_client, "d")
    raw = None
    if body is not None:
        raw = json.dumps(body).replace('"{n}"', str(number))
    response = await app_client.request(
        method,
        path.format(n=number),
        content=raw,
        headers={**WRITER, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text


async def test_the_api_docs_page_needs_no_internet(app_client: httpx.AsyncClient) -> None:
    """/docs loads Swagger UI from the package: every asset it names is served here."""
    page = await app_client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
    referenced = [a or b for a, b in urls]
    assert referenced, page.text
    assert not [u for u in referenced if "//" in u], referenced  # nothing from another host
    for url in referenced:
        response = await app_client.get(url)
        assert response.status_code == 200, url
        assert response.content, url
    assert (await app_client.get("/redoc")).status_code == 404  # its scripts would be a CDN's
