"""The storage contract, one suite run against every ``Store``: memory, SQLite, PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from collab import ot
from collab.db import create_engine, create_session_factory, create_writer_engine
from collab.storage import (
    CommitRequest,
    EngineCommitter,
    MemoryDatabase,
    MemoryStore,
    SqlStore,
    Store,
    create_committer,
)
from collab.storage.postgres import GroupCommitter
from collab.storage.sqlite import SqliteWriter
from collab.types import StoredOp

T0 = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)


def test_sqlite_files_commit_on_the_writer_thread(database_url: str) -> None:
    engine = create_engine(database_url)
    writer_engine = create_writer_engine(database_url)
    expected = SqliteWriter if database_url.startswith("sqlite") else GroupCommitter
    assert isinstance(create_committer(engine, writer_engine), expected)
    assert create_writer_engine("sqlite+aiosqlite:///:memory:") is None
    memory = create_engine("sqlite+aiosqlite:///:memory:")
    assert isinstance(create_committer(memory, None), EngineCommitter)


def op_at(rev: int, op: ot.Op, *, src: str = "s", seq: int | None = None,
          minutes: int = 0) -> StoredOp:
    return StoredOp(rev, op, src, rev if seq is None else seq, "alice",
                    T0 + timedelta(minutes=minutes or rev))


def snapshot_row(doc_id: str, rev: int, content: str, at: datetime = T0) -> dict[str, object]:
    return {"doc_id": doc_id, "rev": rev, "content": content, "created_at": at}


class RefusingCommitter:
    """A fallback that must not be reached: the test is about the group path itself."""

    async def commit(self, request: CommitRequest) -> bool:
        raise AssertionError(f"fell back to one-batch commits for {request.doc_id}")

    async def close(self) -> None:
        pass


async def test_ping(store: Store) -> None:
    assert await store.ping() is None


async def test_ping_fails_when_the_database_is_unreachable() -> None:
    engine = create_engine("postgresql+asyncpg://collab@127.0.0.1:1/none")  # nothing listens
    unreachable = SqlStore(create_session_factory(engine), EngineCommitter(engine))
    try:
        with pytest.raises(OSError):
            await unreachable.ping()
    finally:
        await engine.dispose()


async def test_create_and_get(store: Store) -> None:
    info = await store.create_document("doc-1", "Title ✓", "héllo 😀", T0)
    assert info is not None
    assert (info.id, info.title, info.rev, info.created_at, info.updated_at) == (
        "doc-1", "Title ✓", 0, T0, T0)
    got = await store.get_document("doc-1")
    assert got == info
    assert got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == timedelta(0)
    assert await store.content_at("doc-1", 0) == "héllo 😀"
    assert [s.rev for s in await store.list_snapshots("doc-1")] == [0]


async def test_create_duplicate_returns_none(store: Store) -> None:
    assert await store.create_document("dup", "first", "a", T0) is not None
    assert await store.create_document("dup", "second", "b", T0) is None
    info = await store.get_document("dup")
    assert info is not None
    assert info.title == "first"
    assert await store.content_at("dup", 0) == "a"


async def test_unknown_document(store: Store) -> None:
    assert await store.get_document("nope") is None
    assert await store.load_document("nope") is None
    assert await store.load_ops("nope", after=0) == []
    assert await store.find_revs("nope", [("s", 1)]) == {}
    assert await store.list_snapshots("nope") == []
    assert await store.rev_at("nope", T0) is None
    assert await store.delete_document("nope") is False


async def test_timezone_aware_times_round_trip_in_utc(store: Store) -> None:
    paris = datetime(2026, 11, 24, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    info = await store.create_document("tz", "", "", paris)
    assert info is not None
    got = await store.get_document("tz")
    assert got is not None
    assert got.created_at == paris
    assert got.created_at.utcoffset() == timedelta(0)


async def test_commit_appends_in_order(store: Store) -> None:
    await store.create_document("d", "", "", T0)
    ops = [op_at(1, ["abc"]), op_at(2, [3, "def"]), op_at(3, [1, {"d": "bc"}])]
    assert await store.commit("d", 0, ops[:2])
    assert await store.commit("d", 2, ops[2:])
    info = await store.get_document("d")
    assert info is not None
    assert info.rev == 3
    assert info.updated_at == ops[-1].created_at
    assert await store.load_ops("d", after=0) == ops
    assert await store.load_ops("d", after=1) == ops[1:]
    assert await store.load_ops("d", after=0, until=2) == ops[:2]
    assert await store.load_ops("d", after=0, limit=1) == ops[:1]
    assert await store.load_ops("d", after=3) == []
    assert [await store.content_at("d", rev) for rev in range(4)] == [
        "", "abc", "abcdef", "adef"]


async def test_commit_of_nothing_succeeds(store: Store) -> None:
    await store.create_document("d", "", "", T0)
    assert await store.commit("d", 0, [])
    info = await store.get_document("d")
    assert info is not None
    assert info.rev == 0


async def test_commit_on_a_moved_document_writes_nothing(store: Store) -> None:
    await store.create_document("d", "", "", T0)
    assert await store.commit("d", 0, [op_at(1, ["a"], src="x")])
    # A writer that still thinks the document is at revision 0 loses.
    lost = [op_at(1, ["b"], src="y"), op_at(2, [1, "c"], src="y")]
    assert not await store.commit("d", 0, lost)
    info = await store.get_document("d")
    assert info is not None
    assert info.rev == 1
    assert await store.load_ops("d", after=0) == [op_at(1, ["a"], src="x")]
    assert [s.rev for s in await store.list_snapshots("d")] == [0]


async def test_commit_on_a_missing_document_fails(store: Store) -> None:
    assert not await store.commit("ghost", 0, [op_at(1, ["a"])])
    assert await store.load_ops("ghost", after=0) == []


async def test_duplicate_src_seq_rolls_the_commit_back(store: Store) -> None:
    await store.create_document("d", "", "", T0)
    assert await store.commit("d", 0, [op_at(1, ["a"], src="ed", seq=1)])
    batch = [op_at(2, [1, "b"], src="other", seq=1), op_at(3, [2, "c"], src="ed", seq=1)]
    assert not await store.commit("d", 1, batch)
    info = await store.get_document("d")
    assert info is not None
    assert info.rev == 1
    assert len(await store.load_ops("d", after=0)) == 1


async def test_same_src_seq_on_two_documents_is_fine(store: Store) -> None:
    for doc in ("a", "b"):
        await store.create_document(doc, "", "", T0)
        assert await store.commit(doc, 0, [op_at(1, ["x"], src="ed", seq=1)])
    assert await store.find_revs("a", [("ed", 1)]) == {("ed", 1): 1}
    assert await store.find_revs("b", [("ed", 1)]) == {("ed", 1): 1}


async def test_racing_commits_one_wins(store: Store) -> None:
    await store.create_document("d", "", "", T0)
    results = await asyncio.gather(
        *(store.commit("d", 0, [op_at(1, [f"w{i}"], src=f"w{i}")]) for i in range(6))
    )
    assert sorted(results) == [False] * 5 + [True]
    [stored] = await store.load_ops("d", after=0)
    assert stored.src == f"w{results.index(True)}"


async def test_concurrent_commits_of_many_documents(store: Store) -> None:
    """Batches waiting together may share a transaction: each still wins or loses alone."""
    for doc in ("a", "b", "c", "moved", "dup"):
        await store.create_document(doc, "", "", T0)
    assert await store.commit("moved", 0, [op_at(1, ["m"], src="x")])
    assert await store.commit("dup", 0, [op_at(1, ["d"], src="ed", seq=1)])
    results = await asyncio.gather(
        store.commit("a", 0, [op_at(1, ["a1"]), op_at(2, [2, "a2"])]),
        store.commit("moved", 0, [op_at(1, ["late"], src="y")]),
        store.commit("b", 0, [op_at(1, ["b1"])]),
        store.commit("dup", 1, [op_at(2, [1, "again"], src="ed", seq=1)]),
        store.commit("c", 0, [op_at(1, ["c1"])]),
    )
    assert results == [True, False, True, False, True]
    assert [s.op for s in await store.load_ops("a", after=0)] == [["a1"], [2, "a2"]]
    assert await store.content_at("b", 1) == "b1"
    assert [s.src for s in await store.load_ops("moved", after=0)] == ["x"]
    assert [s.op for s in await store.load_ops("dup", after=0)] == [["d"]]
    infos = [await store.get_document(doc) for doc in ("a", "b", "c", "moved", "dup")]
    assert [info.rev if info else None for info in infos] == [2, 1, 1, 1, 1]


@pytest.mark.parametrize("late_minutes", [1, 5], ids=["same-time", "later"])
async def test_concurrent_commits_with_one_lost_race(store: Store, late_minutes: int) -> None:
    """A group whose only failure is a moved document: the others commit in the group. The
    late batch's revision and time may equal what the document holds (same-time) or not."""
    for doc in ("p", "q", "r", "moved"):
        await store.create_document(doc, "", "", T0)
    assert await store.commit("moved", 0, [op_at(1, ["m"], src="x")])
    results = await asyncio.gather(
        store.commit("p", 0, [op_at(1, ["p1"]), op_at(2, [2, "p2"])]),
        store.commit("moved", 0, [op_at(1, ["late"], src="y", minutes=late_minutes)]),
        store.commit("q", 0, [op_at(1, ["q1"])]),
        store.commit("r", 0, [op_at(1, ["r1"], minutes=9)]),
    )
    assert results == [True, False, True, True]
    assert await store.content_at("p", 2) == "p1p2"
    assert [s.src for s in await store.load_ops("moved", after=0)] == ["x"]
    infos = [await store.get_document(doc) for doc in ("p", "q", "r", "moved")]
    assert [info.rev if info else None for info in infos] == [2, 1, 1, 1]
    assert infos[2] is not None and infos[2].updated_at == T0 + timedelta(minutes=9)


async def test_find_revs(store: Store) -> None:
    await store.create_document("d", "", "", T0)
    await store.commit("d", 0, [op_at(1, ["a"], src="ed", seq=1),
                                op_at(2, ["b"], src="ed", seq=2)], None)
    found = await store.find_revs("d", [("ed", 2), ("ed", 3), ("other", 1), ("ed", 2)])
    assert found == {("ed", 2): 2}
    many = await store.find_revs("d", [(f"c{i}", 1) for i in range(1000)] + [("ed", 1)])
    assert many == {("ed", 1): 1}


async def test_snapshots_and_load(store: Store) -> None:
    await store.create_document("d", "", "start", T0)
    text = "start"
    ops = []
    for rev in range(1, 8):
        op: ot.Op = [len(text), str(rev)]
        text = ot.apply(text, op)
        ops.append(op_at(rev, op))
        assert await store.commit("d", rev - 1, [ops[-1]])
        if rev == 5:
            await store.save_snapshot("d", rev, text, T0)
    assert [s.rev for s in await store.list_snapshots("d")] == [0, 5]
    loaded = await store.load_document("d")
    assert loaded is not None
    assert loaded.info.rev == 7
    assert (loaded.snapshot_rev, loaded.snapshot_content) == (5, "start12345")
    assert loaded.ops == ops[5:]
    assert await store.content_at("d", 7) == text
    assert await store.content_at("d", 5) == "start12345"
    assert await store.content_at("d", 3) == "start123"


async def test_content_at_trusts_the_nearest_snapshot(store: Store) -> None:
    """content_at starts from the newest snapshot at or before the revision, not from 0."""
    await store.create_document("d", "", "", T0)
    await store.commit("d", 0, [op_at(1, ["a"]), op_at(2, [1, "b"])])
    # A snapshot that disagrees with the ops proves which one the reader used.
    await store.save_snapshot("d", 1, "Z", T0)
    assert await store.content_at("d", 2) == "Zb"
    assert await store.content_at("d", 0) == ""


async def test_save_snapshot_is_idempotent(store: Store) -> None:
    await store.create_document("d", "", "", T0)
    await store.commit("d", 0, [op_at(1, ["a"])])
    await store.save_snapshot("d", 1, "a", T0)
    await store.save_snapshot("d", 1, "other", T0 + timedelta(hours=1))
    snapshots = await store.list_snapshots("d")
    assert [(s.rev, s.created_at) for s in snapshots] == [(0, T0), (1, T0)]
    assert await store.content_at("d", 1) == "a"


async def test_list_documents_pages_in_id_order(store: Store) -> None:
    ids = ["b", "a", "c.1", "C", "a-2", "z_9"]
    for doc_id in ids:
        await store.create_document(doc_id, f"t-{doc_id}", "", T0)
    expected = sorted(ids)
    assert [d.id for d in await store.list_documents(None, 100, None)] == expected
    page = await store.list_documents(None, 2, None)
    assert [d.id for d in page] == expected[:2]
    rest = await store.list_documents(page[-1].id, 100, None)
    assert [d.id for d in rest] == expected[2:]
    assert [d.id for d in await store.list_documents(None, 100, ["c.1", "a", "missing"])] == [
        "a", "c.1"]
    assert await store.list_documents(None, 100, []) == []
    assert [d.id for d in await store.list_documents("a", 100, {"a", "b"})] == ["b"]


async def test_delete_removes_everything(store: Store) -> None:
    await store.create_document("d", "", "x", T0)
    await store.commit("d", 0, [op_at(1, ["a"], src="ed", seq=1)])
    await store.save_snapshot("d", 1, "ax", T0)
    await store.create_document("keep", "", "k", T0)
    assert await store.delete_document("d")
    assert await store.get_document("d") is None
    assert await store.load_ops("d", after=0) == []
    assert await store.list_snapshots("d") == []
    assert not await store.delete_document("d")
    # The id can be reused with a fresh history, and (src, seq) starts over.
    assert await store.create_document("d", "again", "", T0) is not None
    assert await store.commit("d", 0, [op_at(1, ["b"], src="ed", seq=1)])
    assert await store.content_at("d", 1) == "b"
    assert await store.content_at("keep", 0) == "k"


async def test_rev_at(store: Store) -> None:
    await store.create_document("d", "", "", T0)
    await store.commit("d", 0, [op_at(1, ["a"], minutes=1), op_at(2, ["b"], minutes=2)])
    await store.commit("d", 2, [op_at(3, ["c"], minutes=5)])
    assert await store.rev_at("d", T0 - timedelta(seconds=1)) is None
    assert await store.rev_at("d", T0) == 0
    assert await store.rev_at("d", T0 + timedelta(seconds=30)) == 0
    assert await store.rev_at("d", T0 + timedelta(minutes=1)) == 1
    assert await store.rev_at("d", T0 + timedelta(minutes=4)) == 2
    assert await store.rev_at("d", T0 + timedelta(days=1)) == 3


async def test_large_and_unicode_text_round_trips(store: Store) -> None:
    big = "😀é\u0301\n\t\"'\\" * 20_000
    await store.create_document("d", "", big, T0)
    await store.commit("d", 0, [op_at(1, [len(big), "end 👋"])])
    assert await store.content_at("d", 1) == big + "end 👋"
    [stored] = await store.load_ops("d", after=0)
    assert stored.op == [len(big), "end 👋"]


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "row-by-row"])
async def test_the_writer_thread_stores_exactly_what_the_engine_path_stores(
    sqlite_url: str, grouped: bool
) -> None:
    """SqliteWriter sends SQLAlchemy's compiled SQL and converted values to the driver's
    cursor itself: the rows must be the same bytes as through Connection.execute (a
    datetime stored in another format would sort and compare wrongly)."""
    engine = create_engine(sqlite_url)
    sessions = create_session_factory(engine)
    writer_engine = create_writer_engine(sqlite_url)
    assert writer_engine is not None
    writer = SqliteWriter(writer_engine, grouped=grouped)
    by_writer, by_engine = SqlStore(sessions, writer), SqlStore(sessions, EngineCommitter(engine))
    at = datetime(2026, 11, 24, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    try:
        for doc, store in (("w", by_writer), ("e", by_engine)):
            await store.create_document(doc, "", "", T0)
            ops = [StoredOp(1, ["😀"], "ed", 1, "bob", at)]
            assert await store.commit(doc, 0, ops, {"snapshots": [snapshot_row(doc, 1, "😀", at)]})
        async with engine.connect() as conn:
            rows = {}
            for table, columns in (("operations", "rev, op, src, seq, user_id, created_at"),
                                   ("documents", "rev, updated_at"),
                                   ("snapshots", "rev, content, created_at")):
                result = await conn.exec_driver_sql(
                    f"SELECT doc_id, {columns} FROM {table} WHERE rev = 1 ORDER BY doc_id"
                    if table != "documents" else
                    f"SELECT id, {columns} FROM {table} ORDER BY id"
                )
                rows[table] = [tuple(row)[1:] for row in result]
        for table, (from_engine, from_writer) in rows.items():
            assert from_writer == from_engine, table
        assert rows["operations"][0][-1] == "2026-11-24 08:00:00.000005"
    finally:
        await writer.close()
        writer_engine.dispose()
        await engine.dispose()


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "row-by-row"])
async def test_the_writer_thread_carries_snapshots_in_its_groups(
    sqlite_url: str, grouped: bool
) -> None:
    """On SQLite a snapshot rides in the writer's next transaction (no second writer): written
    with the ops waiting beside it, in the session path's format, idempotent, skipped for a
    deleted document, and still written when a batch in its group breaks a constraint."""
    engine = create_engine(sqlite_url)
    sessions = create_session_factory(engine)
    writer_engine = create_writer_engine(sqlite_url)
    assert writer_engine is not None
    writer = SqliteWriter(writer_engine, grouped=grouped)
    store = SqlStore(sessions, writer)
    at = datetime(2026, 11, 24, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    try:
        for doc in ("a", "b", "gone", "s"):
            await store.create_document(doc, "", "", T0)
        assert await store.delete_document("gone")
        await store.commit("b", 0, [op_at(1, ["b"], src="x", seq=1)])
        results = await asyncio.gather(
            store.commit("a", 0, [op_at(1, ["a"])]),
            store.save_snapshot("a", 1, "a", at),
            store.save_snapshot("gone", 1, "g", at),
            store.commit("b", 1, [op_at(2, ["again"], src="x", seq=1)]),  # (x, 1) is taken
            store.save_snapshot("b", 1, "b", at),
            store.save_snapshot("b", 1, "other", T0),
        )
        assert results[0] is True and results[3] is False
        snapshots = await store.list_snapshots("a")
        assert [(s.rev, s.created_at) for s in snapshots] == [(0, T0), (1, at)]
        assert [s.rev for s in await store.list_snapshots("b")] == [0, 1]
        assert await store.content_at("b", 1) == "b"
        assert await store.list_snapshots("gone") == []
        await store.save_snapshot("s", 1, "y", at)
        async with engine.connect() as conn:
            result = await conn.exec_driver_sql(
                "SELECT rev, created_at FROM snapshots WHERE doc_id = 's' ORDER BY rev")
            stamps = [row[1] for row in result]
        assert stamps[1] == "2026-11-24 08:00:00.000005"  # the format every other path writes
    finally:
        await writer.close()
        writer_engine.dispose()
        await engine.dispose()


async def test_extra_rows_land_in_the_commits_transaction(database_url: str) -> None:
    """Rows of another table ride in the op commit: written with a winning batch, never with
    a lost one (how a second kind of update stays exactly as durable as the ops)."""
    engine = create_engine(database_url)
    writer_engine = create_writer_engine(database_url)
    store = SqlStore(create_session_factory(engine), create_committer(engine, writer_engine))
    try:
        await store.create_document("d", "", "", T0)
        won = await store.commit("d", 0, [op_at(1, ["a"])],
                                 {"snapshots": [snapshot_row("d", 1, "A")]})
        lost = await store.commit("d", 0, [op_at(1, ["b"], src="y")],
                                  {"snapshots": [snapshot_row("d", 2, "B")]})
        assert (won, lost) == (True, False)
        assert [s.rev for s in await store.list_snapshots("d")] == [0, 1]
        assert await store.content_at("d", 1) == "A"  # the snapshot row, not the op, proves it
    finally:
        await store.close()
        if writer_engine is not None:
            writer_engine.dispose()
        await engine.dispose()


async def test_memory_extra_rows_follow_the_same_rule() -> None:
    store = MemoryStore()
    await store.create_document("d", "", "", T0)
    assert await store.commit("d", 0, [op_at(1, ["a"])], {"yjs": [{"doc_id": "d", "n": 1}]})
    assert not await store.commit("d", 0, [op_at(1, ["b"], src="y")], {"yjs": [{"doc_id": "d"}]})
    assert store.database.extra == {"yjs": [{"doc_id": "d", "n": 1}]}
    assert await store.delete_document("d")
    assert store.database.extra == {"yjs": []}


async def test_memory_stores_on_one_database_race_like_two_processes() -> None:
    shared = MemoryDatabase()
    first, second = MemoryStore(shared), MemoryStore(shared)
    await first.create_document("d", "", "", T0)
    assert await first.commit("d", 0, [op_at(1, ["a"], src="p1")])
    assert not await second.commit("d", 0, [op_at(1, ["b"], src="p2")])
    assert await second.load_ops("d", after=0) == [op_at(1, ["a"], src="p1")]


@pytest.mark.postgres
async def test_postgres_group_commit_writes_a_group_in_one_go(postgres_database: str) -> None:
    """The group path itself, with no way back to one-batch commits: it must handle a lost
    race inside the group and write every winner's ops and snapshot."""
    engine = create_engine(postgres_database)
    committer = GroupCommitter(engine, fallback=RefusingCommitter())
    store = SqlStore(create_session_factory(engine), committer)
    try:
        for doc in ("a", "b", "c"):
            await store.create_document(doc, "", "", T0)
        requests = [
            CommitRequest("a", 0, [op_at(1, ["a"])], {"snapshots": [snapshot_row("a", 1, "a")]}),
            CommitRequest("b", 5, [op_at(6, ["b"])],  # b is at 0: a lost race
                          {"snapshots": [snapshot_row("b", 6, "b")]}),
            CommitRequest("c", 0, [op_at(1, ["c1"]), op_at(2, [2, "c2"])]),
        ]
        assert await committer.write_group(requests) == [True, False, True]
        assert await store.content_at("a", 1) == "a"
        assert [s.rev for s in await store.list_snapshots("a")] == [0, 1]
        assert await store.load_ops("b", after=0) == []
        assert [s.rev for s in await store.list_snapshots("b")] == [0]
        assert await store.content_at("c", 2) == "c1c2"
    finally:
        await committer.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_group_without_extra_rows_is_one_statement(postgres_database: str) -> None:
    """A group with ops only is written by one statement (no fallback): a lost race inside it
    writes nothing for that document, the winners' ops and revisions land, and a taken
    ``(src, seq)`` sends the group to the one-batch path, which refuses only that batch."""
    engine = create_engine(postgres_database)
    committer = GroupCommitter(engine, fallback=RefusingCommitter())
    store = SqlStore(create_session_factory(engine), committer)
    try:
        for doc in ("a", "b", "c"):
            await store.create_document(doc, "", "", T0)
        group = [
            CommitRequest("c", 0, [op_at(1, ["c1"]), op_at(2, [2, "c2"])]),
            CommitRequest("b", 5, [op_at(6, ["b"])]),  # b is at 0: a lost race
            CommitRequest("a", 0, [op_at(1, ["a"])]),
        ]
        assert await committer.write_group(group) == [True, False, True]
        assert await store.content_at("a", 1) == "a"
        assert await store.content_at("c", 2) == "c1c2"
        assert await store.load_ops("b", after=0) == []
        b = await store.get_document("b")
        c = await store.get_document("c")
        assert b is not None and b.rev == 0 and c is not None and c.rev == 2
        assert await committer.write_group([CommitRequest("b", 0, [op_at(1, ["b"])])]) == [True]
    finally:
        await committer.close()
        await engine.dispose()

    engine = create_engine(postgres_database)
    committer = GroupCommitter(engine)
    store = SqlStore(create_session_factory(engine), committer)
    try:
        taken = CommitRequest("a", 1, [op_at(2, ["x"], seq=1)])  # a's (s, 1) is stored
        fine = CommitRequest("b", 1, [op_at(2, ["y"])])
        assert await committer.write_group([taken, fine]) == [False, True]
        assert [o.rev for o in await store.load_ops("a", after=0)] == [1]
        assert [o.rev for o in await store.load_ops("b", after=0)] == [1, 2]
    finally:
        await committer.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_committer_reconnects_after_the_server_closed_its_connections(
    postgres_database: str,
) -> None:
    """The committer holds its connections (no ping per commit): once the server has closed
    them (a restart, an administrator), the next commit and read take new ones."""
    engine = create_engine(postgres_database)
    committer = GroupCommitter(engine, fallback=RefusingCommitter())
    store = SqlStore(create_session_factory(engine), committer)
    try:
        await store.create_document("d", "", "", T0)
        assert await store.commit("d", 0, [op_at(1, ["a"])])
        assert [o.rev for o in await store.load_ops("d", after=0)] == [1]
        held = [h.driver for h in (committer._connection, committer._reads) if h is not None]
        assert len(held) == 2
        closed = [asyncio.Event() for _ in held]
        for driver, event in zip(held, closed, strict=True):
            driver.add_termination_listener(lambda _, e=event: e.set())
        pids = [driver.get_server_pid() for driver in held]
        admin = create_engine(postgres_database)
        async with admin.connect() as conn:
            for pid in pids:
                await conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        await admin.dispose()
        async with asyncio.timeout(10):  # until the client side has seen both closes
            for event in closed:
                await event.wait()
        assert await store.commit("d", 1, [op_at(2, [1, "b"])])
        assert [o.rev for o in await store.load_ops("d", after=0)] == [1, 2]
    finally:
        await committer.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_groups_of_two_processes_race_without_deadlock(
    postgres_database: str,
) -> None:
    """Two processes' group commits on the same documents, queued in opposite orders: each
    document's round has exactly one winner, and no transaction dies in a deadlock."""
    docs = [f"d{i}" for i in range(12)]
    engines = [create_engine(postgres_database) for _ in range(2)]
    committers = [GroupCommitter(engine) for engine in engines]
    store = SqlStore(create_session_factory(engines[0]), committers[0])
    try:
        for doc in docs:
            await store.create_document(doc, "", "", T0)
        for round_ in range(40):
            attempts = [
                committer.commit(
                    CommitRequest(doc, round_, [op_at(round_ + 1, [f"{side}{round_}"],
                                                      src=f"p{side}")])
                )
                for side, committer in enumerate(committers)
                for doc in (docs if side == 0 else list(reversed(docs)))
            ]
            results = await asyncio.gather(*attempts)
            by_doc = {doc: 0 for doc in docs}
            for index, won in enumerate(results):
                side, offset = divmod(index, len(docs))
                doc = docs[offset] if side == 0 else docs[len(docs) - 1 - offset]
                by_doc[doc] += won
            assert by_doc == {doc: 1 for doc in docs}, (round_, results)
        for doc in docs:
            info = await store.get_document(doc)
            assert info is not None and info.rev == 40
            assert [s.rev for s in await store.load_ops(doc, after=0)] == list(range(1, 41))
    finally:
        for committer in committers:
            await committer.close()
        for engine in engines:
            await engine.dispose()


async def test_src_owners(store: Store) -> None:
    await store.create_document("d", "", "", T0)
    await store.create_document("other", "", "", T0)
    ops = [StoredOp(1, ["a"], "ed", 1, "alice", T0), StoredOp(2, ["b"], "ed", 2, "alice", T0),
           StoredOp(3, ["c"], "bot", 1, "bob", T0)]
    assert await store.commit("d", 0, ops)
    assert await store.commit("other", 0, [StoredOp(1, ["x"], "x", 1, "carol", T0)])
    assert await store.src_owners("d", ["ed", "bot", "x", "nobody", "ed"]) == {
        "ed": "alice", "bot": "bob"}
    assert await store.src_owners("ghost", ["ed"]) == {}
    many = await store.src_owners("d", [f"s{i}" for i in range(1000)] + ["bot"])
    assert many == {"bot": "bob"}
    # Lookups of several documents at once (which a SQL store answers with one query): each
    # gets the owners of its own document's srcs only.
    together = await asyncio.gather(
        store.src_owners("d", ["ed", "x"]),
        store.src_owners("other", ["x", "ed"]),
        store.src_owners("ghost", ["ed"]),
        store.src_owners("d", []),
        store.src_owners("d", ["bot"]),
    )
    assert together == [{"ed": "alice"}, {"x": "carol"}, {}, {}, {"bot": "bob"}]


async def test_the_store_works_after_releasing_memory(store: Store) -> None:
    await store.create_document("d", "", "abc", T0)
    await store.release_memory()
    assert await store.content_at("d", 0) == "abc"
    assert await store.commit("d", 0, [op_at(1, [3, "!"])])
