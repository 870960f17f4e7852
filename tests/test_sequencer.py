"""One batch's life (``collab.sequencer``): commit, lost races, retries and their cap.

Driven by a ``MemoryStore`` on which a rival writer (another server process) commits first.
"""

from __future__ import annotations

from datetime import UTC, datetime

from collab import ot
from collab.document import DocumentState, Submission
from collab.errors import CloseCode, ErrorCode
from collab.sequencer import Sequencer
from collab.types import StoredOp
from tests.fakes import RacingStore

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def sub(op: ot.Op, rev: int, src: str = "ed", seq: int = 1) -> Submission:
    return Submission(op=op, base_rev=rev, src=src, seq=seq, user_id="ed")


async def document(store: RacingStore, text_ops: list[ot.Op], window: int) -> DocumentState:
    """A stored document built from ``text_ops`` and its state as an actor would load it."""
    await store.create_document("d", "", "", T0)
    for rev, op in enumerate(text_ops, start=1):
        assert await store.commit("d", rev - 1, [StoredOp(rev, op, "old", rev, "old", T0)])
    loaded = await store.load_document("d")
    assert loaded is not None
    text = loaded.snapshot_content
    for stored in loaded.ops:
        text = ot.apply(text, stored.op)
    return DocumentState("d", text, loaded.info.rev, loaded.ops[-window:], window=window)


async def test_a_lost_race_catches_up_and_rebases() -> None:
    store = RacingStore()
    state = await document(store, [["abc"]], window=10)
    store.rivals = [["X"]]  # commits "X" at revision 2 just before our commit
    result = await Sequencer("d", state, store, max_retries=3).sequence([sub([3, "!"], 1)])
    assert result.failure is None and result.batch is not None
    assert result.attempts == 2
    assert [s.op for s in result.caught_up] == [["X"]]
    assert [(s.rev, s.op) for s in result.batch.ops] == [(3, [4, "!"])]
    assert state.text == "Xabc!" == await store.content_at("d", 3)


async def test_retries_reload_older_ops_when_the_window_slides_past_the_base() -> None:
    """Issue 17 #6: the op's base is before the held window; each lost race slides the window
    forward, so the older ops loaded for the first attempt no longer reach it."""
    store = RacingStore()
    state = await document(store, [["a"], [1, "b"], [2, "c"], [3, "d"], [4, "e"]], window=2)
    assert (state.rev, state.first_held_rev) == (5, 3)
    store.rivals = [["1"], ["2"], ["3"]]
    result = await Sequencer("d", state, store, max_retries=5).sequence([sub([2, "^"], 2)])
    assert result.failure is None and result.batch is not None, result.failure
    assert result.attempts == 4
    assert state.first_held_rev == 7  # well past the base (2) the op was made at
    assert state.text == "321ab^cde"
    assert await store.content_at("d", state.rev) == state.text


async def test_retries_are_capped_with_a_clear_reason() -> None:
    store = RacingStore()
    state = await document(store, [["abc"]], window=10)
    store.endless_rival = True
    result = await Sequencer("d", state, store, max_retries=4).sequence([sub(["x"], 1)])
    assert result.batch is None and result.failure is not None
    assert result.failure.close_code == CloseCode.TRY_AGAIN
    assert "lost 5 commit races" in result.failure.reason
    assert store.commits == 1 + 5  # the document's first op, then five attempts
    # Nothing of ours was stored; the state followed every rival op.
    assert [s.src for s in await store.load_ops("d", after=1)] == ["rival"] * 5
    assert state.rev == 6


async def test_a_missing_document_fails_without_retrying() -> None:
    store = RacingStore()
    state = await document(store, [["abc"]], window=10)
    await store.delete_document("d")
    result = await Sequencer("d", state, store, max_retries=4).sequence([sub(["x"], 1)])
    assert result.failure is not None and result.failure.reason == "the document is gone"
    assert result.attempts == 1


async def test_resends_are_found_in_storage_and_not_stored_again() -> None:
    store = RacingStore()
    state = await document(store, [["abc"]], window=10)
    first = await Sequencer("d", state, store, max_retries=1).sequence([sub([3, "!"], 1)])
    assert first.batch is not None and first.batch.rev == 2
    reloaded = await document_again(store, window=1)
    again = await Sequencer("d", reloaded, store, max_retries=1).sequence([sub([3, "!"], 1)])
    assert again.batch is not None and again.batch.ops == []
    [outcome] = again.batch.outcomes
    assert (outcome.rev, outcome.duplicate) == (2, True)
    assert len(await store.load_ops("d", after=0)) == 2


async def test_a_refused_op_is_an_outcome_not_a_failure() -> None:
    store = RacingStore()
    state = await document(store, [["abc"]], window=10)
    result = await Sequencer("d", state, store, max_retries=1).sequence([sub(["x"], 7)])
    assert result.failure is None and result.batch is not None
    [outcome] = result.batch.outcomes
    assert outcome.error is not None and outcome.error.code == ErrorCode.BAD_REVISION


async def document_again(store: RacingStore, window: int) -> DocumentState:
    loaded = await store.load_document("d")
    assert loaded is not None
    text = loaded.snapshot_content
    for stored in loaded.ops:
        text = ot.apply(text, stored.op)
    # A window of 1 after a reload: the earlier (src, seq) is only in storage.
    return DocumentState("d", text, loaded.info.rev, [], window=window)
