"""One batch's life (``collab.sequencer``): commit, lost races, retries and their cap.

Driven by a ``MemoryStore`` on which a rival writer (another server process) commits first.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

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


async def test_a_stale_op_in_the_batch_does_not_starve_in_range_ops_of_older_ops() -> None:
    """The abuse scenario's refusals: a pipelined op based just before the held window shares a
    batch with an op based far beyond the rebase distance. The older ops loaded for the batch
    must reach the in-range base; only the stale op is refused."""
    store = RacingStore()
    ops: list[ot.Op] = [["a"], [1, "b"], [2, "c"], [3, "d"], [4, "e"], [5, "f"]]
    state = await document(store, ops, window=2)
    state.max_rebase = 4
    assert (state.rev, state.first_held_rev) == (6, 4)
    stale = sub(["s"], 0, src="stale", seq=1)  # 6 revisions behind: beyond the distance
    in_range = sub([3, "^"], 3, src="pipe", seq=1)  # behind the window, within the distance
    result = await Sequencer("d", state, store, max_retries=1).sequence([stale, in_range])
    assert result.batch is not None, result.failure
    refused, accepted = result.batch.outcomes
    assert refused.error is not None and refused.error.code == ErrorCode.BAD_REVISION
    assert accepted.error is None, accepted.error
    assert state.text == "abc^def" == await store.content_at("d", state.rev)


def op_at(data: st.DataObject, text: str, label: str) -> ot.Op:
    """An insert of ``label`` or a delete naming the text it removes, valid on ``text``: a
    rebase from the wrong revision makes the delete fail or land on other characters."""
    pos = data.draw(st.integers(0, len(text)))
    skip: ot.Op = [pos] if pos else []
    if pos < len(text) and data.draw(st.booleans()):
        end = data.draw(st.integers(pos + 1, min(len(text), pos + 3)))
        return [*skip, {"d": text[pos:end]}]
    return [*skip, label]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_op_within_the_rebase_distance_is_accepted_whatever_the_window(
    data: st.DataObject,
) -> None:
    """Property: in any batch, an op whose base is within ``max_rebase`` of the head it is
    staged on is transformed and accepted, and one beyond it (or negative, or newer than the
    head) is refused with bad_revision, whatever the held window: smaller than the distance,
    not yet full after a load, slid forward by lost races. Stale ops share batches with
    in-range ones. The stored history replays to the state's text."""
    window = data.draw(st.integers(1, 6), label="window")
    max_rebase = data.draw(st.integers(1, 12), label="max_rebase")
    history = data.draw(st.integers(0, 15), label="history")
    held = data.draw(st.integers(0, min(window, history)), label="held after load")

    async def scenario() -> None:
        store = RacingStore()
        await store.create_document("d", "", "", T0)
        texts = [""]
        for rev in range(1, history + 1):
            op = op_at(data, texts[-1], chr(0x3B1 + rev % 20))
            assert await store.commit("d", rev - 1, [StoredOp(rev, op, "old", rev, "old", T0)])
            texts.append(ot.apply(texts[-1], op))
        # As if loaded from a snapshot ``held`` ops back: the window is not full yet.
        recent = (await store.load_ops("d", after=history - held)) if held else []
        state = DocumentState(
            "d", texts[-1], history, recent, window=window, max_rebase=max_rebase
        )
        sequencer = Sequencer("d", state, store, max_retries=3)
        seq = 0
        for _ in range(data.draw(st.integers(1, 6), label="batches")):
            store.rivals = [[str(i)] for i in range(data.draw(st.integers(0, 2)))]
            submissions = []
            for _ in range(data.draw(st.integers(1, 4))):
                seq += 1
                base = data.draw(st.integers(-1, state.rev + 1))
                text = texts[base] if 0 <= base < len(texts) else ""
                submissions.append(sub(op_at(data, text, str(seq % 10)), base, "p", seq))
            result = await sequencer.sequence(submissions)
            assert result.batch is not None, result.failure
            for rival in result.caught_up:
                texts.append(ot.apply(texts[-1], rival.op))
            head = result.batch.base_rev
            for outcome in result.batch.outcomes:
                base = outcome.submission.base_rev
                if 0 <= base <= head and head - base <= max_rebase:
                    assert outcome.error is None, (base, head, state.first_held_rev, outcome)
                    assert outcome.committed is not None
                    head += 1
                    texts.append(ot.apply(texts[-1], outcome.committed.op))
                else:
                    assert outcome.error is not None, (base, head, outcome)
                    assert outcome.error.code == ErrorCode.BAD_REVISION
        assert state.text == texts[-1] == await store.content_at("d", state.rev)
        assert len(texts) == state.rev + 1

    asyncio.run(scenario())
