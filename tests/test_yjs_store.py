"""Yjs rows on SQLite and PostgreSQL (collab.yjs.store): seeding once, loading, compaction,
the state at a revision, and deletion with the document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pycrdt
import pytest
from sqlalchemy import insert

from collab.db import create_engine, create_session_factory
from collab.models import Document
from collab.yjs.bridge import YjsDocument
from collab.yjs.models import YjsUpdate
from collab.yjs.store import RevisionCompacted, SnapshotAhead, YjsStore, update_rows

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[tuple[YjsStore, Any]]:
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        await session.execute(
            insert(Document).values(id="d", title="", rev=0, created_at=NOW, updated_at=NOW)
        )
    try:
        yield YjsStore(sessions), sessions
    finally:
        await engine.dispose()


def text_of(updates: list[bytes]) -> str:
    return YjsDocument("content", updates).text


async def test_seeding_happens_once(store: tuple[YjsStore, Any]) -> None:
    yjs, _ = store
    assert await yjs.load("d") is None
    first = YjsDocument("content")
    assert await yjs.seed("d", 0, first.seed("hello"), NOW)
    second = YjsDocument("content")
    assert not await yjs.seed("d", 0, second.seed("hello"), NOW)
    loaded = await yjs.load("d")
    assert loaded is not None and text_of(loaded) == "hello"  # not "hellohello"


async def test_load_compact_and_state_at(store: tuple[YjsStore, Any]) -> None:
    yjs, sessions = store
    server = YjsDocument("content")
    await yjs.seed("d", 0, server.seed("a"), NOW)
    for rev, piece in enumerate(["b", "c", "😀"], start=1):
        update = server.apply_op([rev, piece])
        assert update is not None
        async with sessions() as session, session.begin():
            await session.execute(insert(YjsUpdate).values(update_rows("d", [(rev, update)], NOW)))
    # An update that changes no text, stored at the revision it came with.
    client = pycrdt.Doc(client_id=5)
    client.apply_update(server.snapshot())
    client.get("meta", type=pycrdt.Map)["title"] = "T"
    await yjs.append("d", 3, [client.get_update(server.state_vector())], NOW)

    loaded = await yjs.load("d")
    assert loaded is not None and text_of(loaded) == "abc😀"
    until_two = await yjs.load("d", until=2)
    assert until_two is not None and text_of(until_two) == "abc"
    assert await yjs.count_updates("d") == 5
    at_two = await yjs.state_at("d", 2)
    assert at_two is not None and text_of([at_two]) == "abc"

    assert await yjs.compact("d", NOW) == 5
    assert await yjs.count_updates("d") == 0
    loaded = await yjs.load("d")
    assert loaded is not None and len(loaded) == 1 and text_of(loaded) == "abc😀"
    restored = pycrdt.Doc()
    restored.apply_update(loaded[0])
    assert restored.get("meta", type=pycrdt.Map)["title"] == "T"

    update = server.apply_op([4, "!"])
    assert update is not None
    async with sessions() as session, session.begin():
        await session.execute(insert(YjsUpdate).values(update_rows("d", [(4, update)], NOW)))
    assert await yjs.updates_from("d", 4, 4) == [update]
    assert await yjs.updates_from("d", 5, 9) == []
    assert await yjs.updates_from("d", 0, 3) == []  # folded into the snapshot
    with pytest.raises(SnapshotAhead):
        await yjs.load("d", until=2)
    up_to_three = await yjs.load("d", until=3)
    assert up_to_three is not None and text_of(up_to_three) == "abc😀"
    current = await yjs.state_at("d", None)
    assert current is not None and text_of([current]) == "abc😀!"
    at_three = await yjs.state_at("d", 3)  # the snapshot's revision
    assert at_three is not None and text_of([at_three]) == "abc😀"
    with pytest.raises(RevisionCompacted):
        await yjs.state_at("d", 1)


async def test_rows_go_with_the_document(store: tuple[YjsStore, Any]) -> None:
    yjs, sessions = store
    await yjs.seed("d", 0, YjsDocument("content").seed("x"), NOW)
    await yjs.compact("d", NOW)
    await yjs.append("d", 0, [b"\x00\x00"], NOW)
    from sqlalchemy import delete

    async with sessions() as session, session.begin():
        await session.execute(delete(Document).where(Document.id == "d"))
    assert await yjs.load("d") is None
    assert await yjs.count_updates("d") == 0
