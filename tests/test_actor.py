"""The document actor, driven by fake peers over a ``MemoryStore``: no database, no sockets.

Every test is deterministic: it waits for the frame it expects (with a timeout), never sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from collab.actor import ActorConfig, DocumentActor, DocumentGone, Remote
from collab.document import Submission, SubmitError
from collab.errors import CloseCode, ErrorCode
from collab.metrics import Metrics
from collab.pubsub import LocalHub, LocalPubSub
from collab.pubsub.messages import Committed
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
        self.committed: list[int] = []  # the last revision of each batch taken in
        self.actor = DocumentActor(
            "d",
            store,
            ActorConfig(**config),
            self.metrics,
            LocalPubSub(),
            lambda _actor: self.exited.set(),
            [lambda _doc, ops: self.committed.append(ops[-1].rev)],
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


async def test_ops_heard_from_another_process_are_taken_in_before_a_waiting_submission() -> None:
    """An op another process committed, waiting in the inbox behind a submission, is applied
    first: the submission is staged past it and commits at once, with no lost race."""
    store = await with_text(RacingStore(), "abc")
    h = Harness(store)
    await h.start()
    alice = await h.join("alice")
    await store.rival_commit("d", ["X"])
    heard = await store.load_ops("d", after=1)
    commits_before = store.commits
    # Both are queued before the actor runs again, so they reach it in one run.
    await h.actor.submit_from_peer(Submission([3, "!"], 1, "a", 1, "alice"), alice)
    h.actor.post(Remote("other-process", Committed(tuple(heard))))
    await alice.wait_for(lambda p: p.of_type("ack"))
    assert [(i["type"], i["rev"]) for i in alice.items() if i["type"] in ("op", "ack")] == [
        ("op", 2), ("ack", 3)]
    assert store.commits == commits_before + 1
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


async def test_delete_closes_every_peer(harness: Harness) -> None:
    # The connection count is the connection's to keep (test_realtime checks it after a delete).
    alice, bob = await harness.join("alice"), await harness.join("bob")
    assert await harness.actor.delete()
    for peer in (alice, bob):
        assert peer.closed == (CloseCode.DELETED, "document deleted")
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


async def test_no_other_user_can_claim_an_editors_src(harness: Harness) -> None:
    """Issue 17 #2: mallory sends ops under alice's src with alice's next seqs; they are
    refused, and alice's real ops under those seqs are stored, not taken for resends."""
    alice, mallory = await harness.join("alice"), await harness.join("mallory")
    await harness.actor.submit_from_peer(Submission([3, "1"], 1, "a-src", 1, "alice"), alice)
    await alice.wait_for(lambda p: p.of_type("ack"))
    for seq in (2, 3):
        claim = Submission(["!"], 2, "a-src", seq, "mallory")
        await harness.actor.submit_from_peer(claim, mallory)
    await mallory.wait_for(lambda p: len(p.of_type("error")) == 2)
    assert {e["code"] for e in mallory.of_type("error")} == {"bad_message"}
    for seq in (2, 3):
        await harness.actor.submit_from_peer(Submission([3, str(seq)], 2, "a-src", seq, "alice"),
                                             alice)
    await alice.wait_for(lambda p: len(p.of_type("ack")) == 3)
    assert [a["rev"] for a in alice.of_type("ack")] == [2, 3, 4]
    stored = await harness.store.load_ops("d", after=1)
    assert [(s.src, s.seq, s.user_id) for s in stored] == [
        ("a-src", 1, "alice"), ("a-src", 2, "alice"), ("a-src", 3, "alice")]
    assert harness.actor.state.text == "abc321"


async def test_a_src_is_owned_across_reloads() -> None:
    """Ownership comes from storage too: after the document reloads, a stranger still cannot
    use a src whose ops are no longer held in memory."""
    store = await with_text(MemoryStore(), "abc")
    first = Harness(store, history_window=1)
    await first.start()
    for seq in (1, 2):
        assert await first.commit(["x"], first.actor.state.rev, src="a-src", seq=seq) > 0
    await first.actor.stop()
    second = Harness(store, history_window=1)
    await second.start()
    mallory = await second.join("mallory")
    await second.actor.submit_from_peer(Submission([], 3, "a-src", 1, "mallory"), mallory)
    await mallory.wait_for(lambda p: p.of_type("error"))
    assert mallory.of_type("error")[0]["code"] == "bad_message"
    await second.actor.stop()


class CountsReleases(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()

    async def release_memory(self) -> None:
        self.released.set()


async def test_a_large_document_gives_its_memory_back_when_it_unloads() -> None:
    store = CountsReleases()
    await with_text(store, "x" * (2 << 20))
    registry = Registry(store, ActorConfig(idle_seconds=0), Metrics(), LocalPubSub())
    async with registry.lease("d") as actor:
        assert actor.held_bytes == 2 << 20
    await asyncio.wait_for(store.released.wait(), WAIT)
    assert actor.held_bytes == 0 and len(registry) == 0


async def test_a_backlog_of_stale_ops_lets_other_tasks_run() -> None:
    """Issue 17 #1 (fairness): past the rebase budget the actor commits what it has and yields
    to the event loop, so a backlog of far-behind ops cannot hold up other documents or
    /healthz for its whole length."""
    h = Harness(await with_text(MemoryStore(), "abc"), rebase_budget=10)
    await h.start()
    for seq in range(1, 6):  # a few revisions, so that ops made at revision 1 are stale
        await h.commit(["-"], h.actor.state.rev, src="typist", seq=seq)
    h.committed.clear()
    replies = [await h.actor.submit(Submission(["x"], 1, "stale", seq, "u"), None)
               for seq in range(1, 9)]  # all queued before the actor runs again
    turns: list[tuple[str, int]] = []

    async def probe() -> None:
        while not all(reply.done() for reply in replies):
            turns.append(("probe", len(h.committed)))
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(probe(), *replies), WAIT)
    assert len(h.committed) > 1  # the backlog was committed in several batches
    # ... and something else ran between them.
    assert any(0 < done < len(h.committed) for _, done in turns), turns
    assert await h.store.content_at("d", h.actor.state.rev) == h.actor.state.text
    await h.actor.stop()


async def test_an_op_too_far_behind_is_refused_with_bad_revision() -> None:
    h = Harness(await with_text(MemoryStore(), "abc"), max_rebase=3)
    await h.start()
    for seq in range(1, 5):
        await h.commit(["-"], h.actor.state.rev, src="typist", seq=seq)
    assert h.actor.state.rev == 5
    with pytest.raises(SubmitError, match="older than the history held") as refused:
        await h.commit(["x"], 1, src="late", seq=1)
    assert refused.value.code == ErrorCode.BAD_REVISION
    assert await h.commit(["x"], 2, src="late", seq=2) == 6  # 3 behind: within the bound
    await h.actor.stop()


async def test_a_stale_op_beside_a_pipeline_behind_the_window_refuses_only_itself() -> None:
    """The abuse scenario, small: a long document loaded from a snapshot at its head, a peer
    pipelining ops all made at that revision (the held window soon slides past it) and another
    peer sending ops made at revision 0, beyond the rebase distance, in the same inbox drain.
    Only the stale op is refused; the pipelined one is rebased over stored ops and acked."""
    store = await with_text(MemoryStore(), "")
    for rev in range(1, 11):
        assert await store.commit("d", rev - 1, [StoredOp(rev, [str(rev % 10)], "old", rev,
                                                          "old", T0)])
    await store.save_snapshot("d", 10, await store.content_at("d", 10), T0)
    h = Harness(store, history_window=2, max_rebase=6)
    await h.start()
    piper, stale = await h.join("piper"), await h.join("stale")
    for seq in range(1, 4):  # the pipeline's first ops: the window now starts after 10
        await h.actor.submit_from_peer(Submission(["p"], 10, "pipe", seq, "piper"), piper)
        await piper.wait_for(lambda p, seq=seq: any(a["seq"] == seq for a in p.of_type("ack")))
    assert (h.actor.state.rev, h.actor.state.first_held_rev) == (13, 11)
    # Queued together, before the actor runs again: one batch.
    await h.actor.submit_from_peer(Submission(["s"], 0, "stale", 1, "stale"), stale)
    await h.actor.submit_from_peer(Submission([10, "!"], 10, "pipe", 4, "piper"), piper)
    await piper.wait_for(lambda p: any(i.get("seq") == 4 for i in p.items()))
    await stale.wait_for(lambda p: p.of_type("error"))
    [refused] = stale.of_type("error")
    assert (refused["code"], refused["seq"]) == ("bad_revision", 1)
    assert piper.of_type("error") == []
    assert [a["rev"] for a in piper.of_type("ack") if a["seq"] == 4] == [14]
    assert h.actor.state.text == "ppp0987654321!" == await store.content_at("d", 14)
    await h.actor.stop()
