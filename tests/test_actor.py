"""The document actor, driven by fake peers over a ``MemoryStore``: no database, no sockets.

Every test is deterministic: it waits for the frame it expects (with a timeout), never sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from collab.actor import ActorConfig, DocumentActor, DocumentGone
from collab.document import Submission
from collab.errors import CloseCode
from collab.metrics import Metrics
from collab.pubsub import LocalHub, LocalPubSub
from collab.registry import Registry
from collab.storage import MemoryDatabase, MemoryStore
from collab.types import StoredOp
from tests.fakes import WAIT, FakePeer, RacingStore

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Harness:
    def __init__(self, store: MemoryStore, **config: Any) -> None:
        self.store = store
        self.metrics = Metrics()
        self.exited = asyncio.Event()
        self.actor = DocumentActor(
            "d",
            store,
            ActorConfig(**config),
            self.metrics,
            LocalPubSub(),
            lambda _actor: self.exited.set(),
        )

    async def start(self) -> DocumentActor:
        self.actor.start()
        await self.actor.loaded
        return self.actor

    async def join(self, name: str) -> FakePeer:
        peer = FakePeer(name)
        await self.actor.join(peer, None)
        return peer

    async def commit(self, op: Any, rev: int, origin: FakePeer | None = None,
                     src: str = "rest", seq: int = 1) -> int:
        """Submits and waits until the op is durable; returns its revision."""
        reply = await self.actor.submit(Submission(op, rev, src, seq, "u"), origin)
        return await asyncio.wait_for(reply, WAIT)


async def with_text(store: MemoryStore, text: str) -> MemoryStore:
    await store.create_document("d", "", "", T0)
    if text:
        assert await store.commit("d", 0, [StoredOp(1, [text], "old", 1, "old", T0)])
    return store


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness(await with_text(MemoryStore(), "abc"))
    await h.start()
    yield h
    await h.actor.stop()


def test_constructing_an_actor_starts_nothing() -> None:
    async def build() -> None:
        h = Harness(MemoryStore())
        tasks = asyncio.all_tasks()
        assert [t for t in tasks if t.get_name() == "actor:d"] == []
        assert not h.actor.loaded.done()

    asyncio.run(build())


async def test_a_lost_race_forwards_the_rival_op_first_then_acks() -> None:
    store = await with_text(RacingStore(), "abc")
    h = Harness(store)
    await h.start()
    alice, bob = await h.join("alice"), await h.join("bob")
    store.rivals = [["X"]]
    await h.actor.submit_from_peer(Submission([3, "!"], 1, "a", 1, "alice"), alice)
    await alice.wait_for(lambda p: p.of_type("ack"))
    assert [(i["type"], i["rev"]) for i in alice.items() if i["type"] in ("op", "ack")] == [
        ("op", 2), ("ack", 3)]
    await bob.wait_for(lambda p: len(p.of_type("op")) == 2)
    assert [(i["rev"], i["op"]) for i in bob.of_type("op")] == [(2, ["X"]), (3, [4, "!"])]
    assert h.actor.state.text == "Xabc!" == await store.content_at("d", 3)
    await h.actor.stop()


async def test_the_retry_cap_closes_the_peer_and_fails_the_rest_call() -> None:
    store = await with_text(RacingStore(), "abc")
    h = Harness(store, max_commit_retries=2)
    await h.start()
    alice = await h.join("alice")
    store.endless_rival = True
    await h.actor.submit_from_peer(Submission(["x"], 1, "a", 1, "alice"), alice)
    await alice.wait_for(lambda p: p.closed is not None)
    assert alice.closed is not None and alice.closed[0] == CloseCode.TRY_AGAIN
    assert "lost 3 commit races" in alice.closed[1]
    with pytest.raises(DocumentGone, match="commit races"):
        await h.commit(["y"], h.actor.state.rev)
    assert all(s.src == "rival" for s in await store.load_ops("d", after=1))
    await h.actor.stop()


async def test_delete_closes_every_peer_and_releases_their_count(harness: Harness) -> None:
    alice, bob = await harness.join("alice"), await harness.join("bob")
    assert harness.metrics.connections == 2
    assert await harness.actor.delete()
    for peer in (alice, bob):
        assert peer.closed == (CloseCode.DELETED, "document deleted")
    assert harness.metrics.connections == 0
    await asyncio.wait_for(harness.exited.wait(), WAIT)
    assert not harness.actor.alive
    assert await harness.store.get_document("d") is None
    with pytest.raises(DocumentGone):
        await harness.actor.read()


async def test_an_idle_document_unloads_with_a_final_snapshot() -> None:
    h = Harness(await with_text(MemoryStore(), "abc"), idle_seconds=0, snapshot_every=1000)
    await h.start()
    h.actor.lease()
    assert await h.commit([3, "!"], 1) == 2
    assert [s.rev for s in await h.store.list_snapshots("d")] == [0]
    h.actor.release()
    await asyncio.wait_for(h.exited.wait(), WAIT)
    assert not h.actor.alive
    assert [s.rev for s in await h.store.list_snapshots("d")] == [0, 2]
    assert await h.store.content_at("d", 2) == "abc!"


async def test_a_paced_flush_sends_one_frame_in_revision_order() -> None:
    # Two peers at 0.01 frames a second: after the first flush the next is 200 s away, so
    # only something that must follow the ops (here a presence update) sends them.
    h = Harness(await with_text(MemoryStore(), "abc"), frames_per_second=0.01)
    await h.start()
    alice, bob = await h.join("alice"), await h.join("bob")
    assert await h.commit([3, "1"], 1, alice, "a", 1) == 2  # flushed at once: the first tick
    await bob.wait_for(lambda p: p.of_type("op"))
    before = (len(alice.frames), len(bob.frames))
    assert await h.commit([4, "2"], 2, alice, "a", 2) == 3
    assert await h.commit([5, "3"], 3, bob, "b", 1) == 4
    assert (len(alice.frames), len(bob.frames)) == before  # committed, not yet sent
    await h.actor.presence(alice, {"anchor": 0, "head": 0}, 4)
    await bob.wait_for(lambda p: p.frames[-1]["type"] == "presence")
    ops_frame, presence = bob.frames[-2:]
    assert [(i["type"], i["rev"]) for i in ops_frame["items"]] == [("op", 3), ("ack", 4)]
    assert presence["rev"] == 4
    assert [(i["type"], i["rev"]) for i in alice.frames[-1]["items"]] == [("ack", 3), ("op", 4)]
    await h.actor.stop()


async def test_cursors_move_over_the_ops_made_since(harness: Harness) -> None:
    alice, bob = await harness.join("alice"), await harness.join("bob")
    await harness.actor.presence(alice, {"anchor": 1, "head": 2}, 1)
    await bob.wait_for(lambda p: p.of_type("presence"))
    assert bob.of_type("presence")[-1]["cursor"] == {"anchor": 1, "head": 2}
    assert await harness.commit(["XX"], 1) == 2
    # A newcomer sees alice's cursor at the revision of its init: moved past "XX".
    carol = await harness.join("carol")
    [entry] = [p for p in carol.frames[0]["peers"] if p["client"] == alice.client_id]
    assert entry["cursor"] == {"anchor": 3, "head": 4}
    # A cursor sent at an older revision is moved before it is relayed.
    await harness.actor.presence(bob, {"anchor": 3, "head": 3}, 1)
    await alice.wait_for(lambda p: p.of_type("presence"))
    assert alice.of_type("presence")[-1]["cursor"] == {"anchor": 5, "head": 5}
    assert alice.of_type("presence")[-1]["rev"] == 2


async def test_a_resend_is_acked_again_and_stored_once(harness: Harness) -> None:
    alice, bob = await harness.join("alice"), await harness.join("bob")
    for _ in range(2):
        await harness.actor.submit_from_peer(Submission([3, "!"], 1, "a", 7, "alice"), alice)
    await alice.wait_for(lambda p: len(p.of_type("ack")) == 2)
    assert [a["rev"] for a in alice.of_type("ack")] == [2, 2]
    assert len(await harness.store.load_ops("d", after=1)) == 1
    assert [o["rev"] for o in bob.of_type("op")] == [2]


class SnapshotsNeverLand(MemoryStore):
    """A store whose snapshot writes hang: what an ack must never wait for."""

    def __init__(self, database: MemoryDatabase) -> None:
        super().__init__(database)
        self.snapshot_started = asyncio.Event()
        self.release = asyncio.Event()

    async def save_snapshot(self, doc_id: str, rev: int, content: str, now: datetime) -> None:
        self.snapshot_started.set()
        await self.release.wait()
        await super().save_snapshot(doc_id, rev, content, now)


async def test_acks_never_wait_for_a_snapshot_and_a_crash_before_one_loses_nothing() -> None:
    shared = MemoryDatabase()
    store = SnapshotsNeverLand(shared)
    await with_text(store, "abc")
    h = Harness(store, snapshot_every=1)
    await h.start()
    try:
        assert await h.commit([3, "!"], 1, seq=1) == 2  # acknowledged while its snapshot hangs
        await asyncio.wait_for(store.snapshot_started.wait(), WAIT)
        assert await h.commit([4, "?"], 2, seq=2) == 3
        # "Crash" now: another process loads the document from the database alone.
        survivor = MemoryStore(shared)
        loaded = await survivor.load_document("d")
        assert loaded is not None and loaded.snapshot_rev == 0
        assert loaded.info.rev == 3
        assert await survivor.content_at("d", 3) == "abc!?"
    finally:
        store.release.set()
        await h.actor.stop()
    assert [s.rev for s in await survivor.list_snapshots("d")][-1] == 3


async def test_two_nodes_on_a_local_hub_share_ops_and_presence() -> None:
    shared, hub = MemoryDatabase(), LocalHub()
    await with_text(MemoryStore(shared), "abc")
    registries = [
        Registry(MemoryStore(shared), ActorConfig(), Metrics(), LocalPubSub(hub))
        for _ in range(2)
    ]
    alice, bob = FakePeer("alice"), FakePeer("bob")
    async with registries[0].lease("d") as here, registries[1].lease("d") as there:
        await here.join(alice, None)
        await there.join(bob, None)
        await alice.wait_for(lambda p: p.of_type("join"))
        assert alice.of_type("join")[-1]["user"] == "bob"
        reply = await here.submit(Submission([3, "!"], 1, "a", 1, "alice"), alice)
        assert await asyncio.wait_for(reply, WAIT) == 2
        await bob.wait_for(lambda p: p.of_type("op"))
        assert [(o["rev"], o["op"], o["user"]) for o in bob.of_type("op")] == [
            (2, [3, "!"], "alice")]
        assert (await there.read()) == ("abc!", 2)
        here.leave(alice)
        await bob.wait_for(lambda p: p.of_type("leave"))
    for registry in registries:
        await registry.shutdown()
