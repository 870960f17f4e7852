"""The pure sequencing core (``collab.document``): staging, accepting, rebasing, deduping."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from collab import ot
from collab.document import Batch, DocumentState, Submission
from collab.types import StoredOp

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def sub(op: ot.Op, rev: int, src: str = "s", seq: int = 1, user: str = "u") -> Submission:
    return Submission(op=op, base_rev=rev, src=src, seq=seq, user_id=user)


def commit(state: DocumentState, *submissions: Submission) -> Batch:
    batch = state.stage(list(submissions), NOW)
    state.accept(batch)
    return batch


def typed(state: DocumentState, text: str, src: str = "typist") -> list[StoredOp]:
    """Appends ``text`` one character per op, each based on the current revision."""
    ops: list[StoredOp] = []
    for char in text:
        seq = state.rev + 1
        batch = commit(state, sub([len(state.text), char] if state.text else [char],
                                  state.rev, src, seq))
        ops.extend(batch.ops)
    return ops


def test_extent_is_start_span_and_growth() -> None:
    assert ot.extent([3, "abc", {"d": 2}, 4, {"d": "xyz"}]) == (3, 2 + 4 + 3, 3 - 2 - 3)
    assert ot.extent(["😀"]) == (0, 0, 1)
    assert ot.extent([]) is None


def test_stage_changes_nothing_until_accept() -> None:
    state = DocumentState("d", "hello", 4)
    batch = state.stage([sub([5, " world"], 4)], NOW)
    assert batch.text == "hello world"
    assert batch.rev == 5
    assert [s.rev for s in batch.ops] == [5]
    assert batch.outcomes[0].rev == 5
    assert batch.outcomes[0].committed is batch.ops[0]
    # Not yet accepted: the state, its window and its dedupe table are untouched.
    assert (state.text, state.rev) == ("hello", 4)
    assert state.recent_ops(4) == []
    assert state.known_rev("s", 1) is None
    # A restage (after a lost commit) gives the same answer again.
    again = state.stage([sub([5, " world"], 4)], NOW)
    assert again.text == "hello world"
    assert [s.rev for s in again.ops] == [5]
    state.accept(batch)
    assert (state.text, state.rev) == ("hello world", 5)
    assert state.known_rev("s", 1) == 5
    assert state.recent_ops(4) == batch.ops


def test_accept_refuses_a_batch_staged_on_another_revision() -> None:
    state = DocumentState("d", "", 0)
    stale = state.stage([sub(["a"], 0, "x", 1)], NOW)
    commit(state, sub(["b"], 0, "y", 1))
    with pytest.raises(RuntimeError):
        state.accept(stale)
    assert (state.text, state.rev) == ("b", 1)


def test_stored_op_fields() -> None:
    state = DocumentState("d", "ab", 0)
    [stored] = commit(state, sub([1, "x", 1], 0, "editor", 9, "alice")).ops
    # Normal form: the trailing skip is dropped.
    assert stored == StoredOp(1, [1, "x"], "editor", 9, "alice", NOW)


def test_several_submissions_in_one_batch_are_sequenced() -> None:
    state = DocumentState("d", "", 0)
    batch = commit(state, sub(["A"], 0, "a", 1), sub(["B"], 0, "b", 1), sub([1, "C"], 1, "a", 2))
    assert [o.rev for o in batch.outcomes] == [1, 2, 3]
    # "B" was made at revision 0 too: on the tie, the incoming op's insert goes first (ShareDB).
    assert state.text == "BAC"
    assert [s.op for s in batch.ops] == [["A"], ["B"], [2, "C"]]


def test_stale_op_is_transformed() -> None:
    state = DocumentState("d", "hello", 0)
    commit(state, sub(["> "], 0, "a", 1))
    [stored] = commit(state, sub([5, "!"], 0, "b", 1)).ops
    assert stored.op == [7, "!"]
    assert state.text == "> hello!"


def test_concurrent_deletes_do_not_delete_twice() -> None:
    state = DocumentState("d", "abcdef", 0)
    commit(state, sub([1, {"d": "bcd"}], 0, "a", 1))
    batch = commit(state, sub([2, {"d": "cde"}], 0, "b", 1))
    assert state.text == "af"
    assert batch.ops[0].op == [1, {"d": "e"}]


def test_duplicate_of_accepted_op_answers_original_revision() -> None:
    state = DocumentState("d", "", 0)
    commit(state, sub(["x"], 0, "ed", 1))
    commit(state, sub([1, "y"], 1, "other", 1))
    batch = commit(state, sub(["x"], 0, "ed", 1))
    [outcome] = batch.outcomes
    assert outcome.duplicate
    assert outcome.rev == 1
    assert outcome.error is None
    assert batch.ops == []
    assert (state.text, state.rev) == ("xy", 2)


def test_duplicate_within_one_batch() -> None:
    state = DocumentState("d", "", 0)
    batch = commit(state, sub(["x"], 0, "ed", 1), sub(["x"], 0, "ed", 1))
    assert [o.rev for o in batch.outcomes] == [1, 1]
    assert batch.outcomes[1].duplicate
    assert len(batch.ops) == 1
    assert state.text == "x"


def test_needs_lookup_after_eviction() -> None:
    state = DocumentState("d", "", 0, window=2)
    commit(state, sub(["a"], 0, "ed", 1))
    assert not state.needs_lookup("ed", 1)  # held: answered from memory
    assert not state.needs_lookup("ed", 2)  # newer than anything seen from ed: cannot be stored
    typed(state, "bc", src="other")
    # ed/1 left the window: a resend may be in storage.
    assert state.known_rev("ed", 1) is None
    assert state.needs_lookup("ed", 1)
    assert state.needs_lookup("never-seen", 1)
    state.note_stored_rev("ed", 1, 1)
    assert not state.needs_lookup("ed", 1)
    [outcome] = state.stage([sub(["a"], 0, "ed", 1)], NOW).outcomes
    assert outcome.duplicate
    assert outcome.rev == 1


def test_future_revision_refused() -> None:
    state = DocumentState("d", "abc", 3)
    batch = state.stage([sub(["x"], 4)], NOW)
    [outcome] = batch.outcomes
    assert outcome.error is not None
    assert outcome.error.code == "bad_revision"
    assert "newer" in outcome.error.message
    assert batch.ops == []


def test_negative_revision_refused() -> None:
    state = DocumentState("d", "abc", 3)
    [outcome] = state.stage([sub(["x"], -1)], NOW).outcomes
    assert outcome.error is not None
    assert outcome.error.code == "bad_revision"


def test_revision_older_than_window_refused_without_older_ops() -> None:
    state = DocumentState("d", "", 0, window=3)
    typed(state, "abcdef")
    assert state.first_held_rev == 3
    [outcome] = state.stage([sub(["x"], 2)], NOW).outcomes
    assert outcome.error is not None
    assert outcome.error.code == "bad_revision"
    assert "older" in outcome.error.message
    # At the window's edge the op is still accepted.
    [ok] = state.stage([sub(["x"], 3)], NOW).outcomes
    assert ok.error is None


def test_revision_beyond_max_rebase_refused() -> None:
    state = DocumentState("d", "", 0, max_rebase=2)
    typed(state, "abc")
    [outcome] = state.stage([sub(["x"], 0)], NOW).outcomes
    assert outcome.error is not None
    assert outcome.error.code == "bad_revision"
    [ok] = state.stage([sub(["x"], 1)], NOW).outcomes
    assert ok.error is None


def test_rebase_with_older_ops_beyond_window() -> None:
    state = DocumentState("d", "", 0, window=3)
    history = typed(state, "abcdef")
    assert state.first_held_rev == 3
    assert state.recent_ops(2) is None
    # An op made at revision 1 ("a"): insert "X" after "a".
    submission = sub([1, "X"], 1, "late", 1)
    older = [s for s in history if s.rev <= 3]  # the store hands more than needed
    batch = state.stage([submission], NOW, older=older)
    [outcome] = batch.outcomes
    assert outcome.error is None, outcome.error
    expected: ot.Op = [1, "X"]
    for stored in history[1:]:
        expected = ot.transform(expected, stored.op, "left")
    assert batch.ops[0].op == expected
    assert batch.text == "aXbcdef"


def test_oldest_unheld_base_counts_only_bases_within_the_rebase_distance() -> None:
    """What the sequencer loads older ops for: a stale, negative or newer base in the batch
    must not hide the in-range base that the window no longer reaches."""
    state = DocumentState("d", "", 0, window=3, max_rebase=4)
    typed(state, "abcdef")
    assert (state.rev, state.first_held_rev) == (6, 3)
    assert state.oldest_unheld_base([sub(["x"], 1), sub(["x"], 2), sub(["x"], 6)]) == 2
    assert state.oldest_unheld_base([sub(["x"], -1), sub(["x"], 7), sub(["x"], 2)]) == 2
    assert state.oldest_unheld_base([sub(["x"], 3), sub(["x"], 5)]) is None  # all held
    assert state.oldest_unheld_base([sub(["x"], 1), sub(["x"], -1)]) is None  # all refused


def test_rebase_with_older_ops_missing_one_refused() -> None:
    state = DocumentState("d", "", 0, window=3)
    history = typed(state, "abcdef")
    gappy = [history[1]]  # revision 3 is missing
    [outcome] = state.stage([sub([1, "X"], 1)], NOW, older=gappy).outcomes
    assert outcome.error is not None
    assert outcome.error.code == "bad_revision"


def test_initial_recent_ops_seed_the_window() -> None:
    source = DocumentState("d", "", 0)
    history = typed(source, "abcde")
    state = DocumentState("d", source.text, source.rev, history, window=3)
    assert state.first_held_rev == 2
    assert state.recent_ops(2) == history[2:]
    assert state.known_rev("typist", 5) == 5
    assert state.known_rev("typist", 1) is None  # evicted
    assert state.needs_lookup("typist", 1)


@pytest.mark.parametrize(
    ("op", "fragment"),
    [
        ([10, "x"], "past the end"),
        ([{"d": 6}], "past the end"),
        ([2, {"d": 4}], "past the end"),
        ([0, "x"], "skip"),
        ([-1], "skip"),
        ([1.5], "skip"),
        ([True], "boolean"),
        ([""], "insert"),
        ([None], "expected"),
        ([["x"]], "expected"),
        ([{"d": 0}], "delete"),
        ([{"d": 1, "x": 1}], "key"),
        ([{"i": "x"}], "key"),
        (["\ud800"], "surrogate"),
        ([{"d": "xyz"}], "does not match"),
        ([1, {"d": "ELL"}], "does not match"),
    ],
)
def test_invalid_ops(op: ot.Op, fragment: str) -> None:
    state = DocumentState("d", "hello", 0)
    batch = state.stage([sub(op, 0), sub(["ok"], 0, "t", 1)], NOW)
    bad, good = batch.outcomes
    assert bad.error is not None
    assert bad.error.code == "invalid_op"
    assert fragment in bad.error.message
    # One bad op does not spoil the others staged with it.
    assert good.error is None
    assert good.rev == 1
    assert batch.text == "okhello"


def test_op_checked_against_its_base_revision_length() -> None:
    state = DocumentState("d", "", 0)
    typed(state, "abcdef")
    # 4 characters existed at revision 4: skipping 5 there is invalid, though the text is longer.
    [outcome] = state.stage([sub([5, "x"], 4)], NOW).outcomes
    assert outcome.error is not None
    assert outcome.error.code == "invalid_op"
    assert "document length is 4" in outcome.error.message
    [ok] = state.stage([sub([4, "x"], 4)], NOW).outcomes
    assert ok.error is None


def test_op_older_than_the_window_checked_against_its_base_revision_length() -> None:
    state = DocumentState("d", "", 0, window=2)
    older = typed(state, "abcdef")
    [outcome] = state.stage([sub([4, "x"], 3)], NOW, older=older).outcomes
    assert outcome.error is not None
    assert "document length is 3" in outcome.error.message
    [ok] = state.stage([sub([3, "x"], 3)], NOW, older=older).outcomes
    assert ok.error is None
    assert ok.committed is not None and ok.committed.op == [3, "x"]  # ties: ours first


def test_recent_ops_bounds() -> None:
    state = DocumentState("d", "", 0, window=3)
    history = typed(state, "abcd")
    assert state.recent_ops(4) == []
    assert state.recent_ops(5) is None
    assert state.recent_ops(1) == history[1:]
    assert state.recent_ops(0) is None


def test_apply_committed_catches_up_and_refuses_gaps() -> None:
    writer = DocumentState("d", "", 0)
    history = typed(writer, "abc")
    follower = DocumentState("d", "", 0)
    follower.apply_committed(history[:2])
    follower.apply_committed(history)  # already-seen ops are skipped
    assert (follower.text, follower.rev) == ("abc", 3)
    assert follower.known_rev("typist", 2) == 2
    with pytest.raises(RuntimeError, match="gap"):
        follower.apply_committed([StoredOp(5, ["z"], "x", 1, "u", NOW)])
    assert follower.rev == 3


def test_transform_cursor() -> None:
    state = DocumentState("d", "hello world", 0, window=2)
    commit(state, sub(["> "], 0, "a", 1))                # rev 1: "> hello world"
    commit(state, sub([8, {"d": "world"}], 1, "a", 2))  # rev 2: "> hello "
    assert state.transform_cursor(6, 0) == 8            # after "hello", shifted by "> "
    assert state.transform_cursor(9, 0) == 8            # inside the deleted word
    assert state.transform_cursor(0, 2) == 0
    assert state.transform_cursor(100, 2) == len(state.text)  # clamped to the text
    commit(state, sub(["!"], 2, "a", 3))
    assert state.transform_cursor(3, 0) is None         # revision 1 is no longer held
    assert state.transform_cursor(3, 1) == 4


@pytest.mark.parametrize("window", [400, 7])
def test_random_stale_submissions_converge_to_replay(window: int) -> None:
    """Stale ops in batches of one to three, rebased from the window, the batch, and (window
    7, bases up to 20 behind) stored ops older than the window; text deletes check that each
    op lands on the text its base revision had."""
    rng = random.Random(1234)
    state = DocumentState("d", "seed", 0, window=window)
    texts = ["seed"]
    stored: list[StoredOp] = []
    seq = 0
    while state.rev < 300:
        submissions = []
        for _ in range(rng.randint(1, 3)):
            seq += 1
            base = rng.randint(max(0, state.rev - 20), state.rev)
            base_text = texts[base]
            pos = rng.randint(0, len(base_text))
            if base_text and rng.random() < 0.3:
                length = rng.randint(1, min(3, len(base_text) - pos) or 1)
                if pos + length > len(base_text):
                    pos = len(base_text) - length
                deleted = base_text[pos:pos + length]
                op: ot.Op = ot.normalize([pos, {"d": deleted}] if pos else [{"d": deleted}])
            else:
                op = ot.normalize([pos, rng.choice("xyz")] if pos else [rng.choice("xyz")])
            submissions.append(sub(op, base, "r", seq))
        batch = state.stage(submissions, NOW, older=stored)
        assert all(o.error is None for o in batch.outcomes), batch.outcomes
        state.accept(batch)
        replay = texts[-1]
        for op_stored in batch.ops:
            replay = ot.apply(replay, op_stored.op)
            texts.append(replay)
        stored.extend(batch.ops)
    assert texts[-1] == state.text
    replay = "seed"
    for op_stored in stored:
        replay = ot.apply(replay, op_stored.op)
    assert replay == state.text
    assert [s.rev for s in stored] == list(range(1, state.rev + 1))


def test_growth_past_max_bytes_is_refused_in_utf8_bytes() -> None:
    state = DocumentState("d", "", 0, max_bytes=10)
    ok = state.stage([sub(["😀😀"], 0, seq=1)], NOW)  # 8 bytes in 2 code points
    assert ok.ops and ok.outcomes[0].error is None
    state.accept(ok)
    too_big = state.stage([sub([2, "éé"], 1, seq=2), sub([2, "a"], 1, seq=3)], NOW)
    [refused, accepted] = too_big.outcomes
    assert refused.error is not None and refused.error.code == "document_too_large"
    assert accepted.error is None and accepted.rev == 2  # 9 bytes: still fits
