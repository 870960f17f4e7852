"""The client's OT state machine, with no I/O: frames in, frames out, text checked.

The property at the end runs two clients against a simulated server (the real sequencing core,
:class:`collab.document.DocumentState`) over FIFO channels, with random edits, deliveries and
dropped connections, and checks they all converge on the server's text.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab import ot
from collab.client import ClientError, Effects, OTClientState
from collab.document import DocumentState, Submission

Frame = dict[str, Any]


def init(content: str = "", rev: int = 0, **extra: Any) -> Frame:
    return {"type": "init", "doc": "d", "rev": rev, "content": content, "client": "me",
            "user": {"id": "u", "name": "U"}, "access": "write", "peers": [], **extra}


def remote(rev: int, op: ot.Op, src: str = "other", seq: int = 1) -> Frame:
    return {"type": "op", "rev": rev, "op": op, "src": src, "seq": seq, "user": "bob"}


def ack(seq: int, rev: int) -> Frame:
    return {"type": "ack", "seq": seq, "rev": rev}


def loaded(content: str = "", rev: int = 0) -> OTClientState:
    state = OTClientState("src-a")
    state.receive(init(content, rev))
    return state


def phase(state: OTClientState) -> str:
    """The OT state, read through a call so the type checker does not narrow it."""
    return state.state


def kinds(fx: Effects) -> list[str]:
    return [event.kind for event in fx.events]


def test_init_loads_text_and_revision() -> None:
    state = OTClientState("src-a")
    fx = state.receive(init("hello", 7))
    assert (state.text, state.confirmed, state.rev, state.client_id) == ("hello", "hello", 7, "me")
    assert state.state == "synchronised"
    assert fx.send == []
    assert kinds(fx) == ["reset"]


def test_submit_before_init_is_refused() -> None:
    with pytest.raises(ClientError):
        OTClientState("src-a").submit(["x"])


def test_read_only_access_refuses_edits() -> None:
    state = OTClientState("src-a")
    state.receive(init("abc", access="read"))
    with pytest.raises(ClientError):
        state.submit(["x"])


def test_invalid_op_changes_nothing() -> None:
    state = loaded("abc")
    with pytest.raises(ot.InvalidOp):
        state.submit([5, "x"])
    assert (state.text, state.state) == ("abc", "synchronised")


def test_first_op_is_sent_later_ones_are_buffered_and_sent_on_ack() -> None:
    state = loaded("abc", 4)
    assert state.submit([3, "d"]) == [
        {"type": "op", "rev": 4, "op": [3, "d"], "src": "src-a", "seq": 1}
    ]
    assert state.state == "awaiting"
    assert state.submit([4, "e"]) == []
    assert state.submit([{"d": "a"}]) == []
    assert phase(state) == "awaiting_with_buffer"
    assert state.text == "bcde"
    assert state.buffer == [{"d": "a"}, 3, "e"]

    fx = state.receive(ack(1, 5))
    assert (state.rev, state.confirmed) == (5, "abcd")
    assert fx.send == [{"type": "op", "rev": 5, "op": [{"d": "a"}, 3, "e"], "src": "src-a",
                        "seq": 2}]
    assert state.state == "awaiting"
    assert kinds(fx) == ["ack"]

    fx = state.receive(ack(2, 6))
    assert (state.state, state.rev, state.confirmed, state.text) == (
        "synchronised", 6, "bcde", "bcde")
    assert fx.send == []


def test_noop_is_not_sent() -> None:
    state = loaded("abc")
    assert state.submit([2]) == []
    assert state.state == "synchronised"


def test_remote_op_while_synchronised_is_applied() -> None:
    state = loaded("abc", 1)
    fx = state.receive(remote(2, [1, "X"]))
    assert (state.text, state.rev) == ("aXbc", 2)
    assert fx.events[0].kind == "op"
    assert fx.events[0].data["applied"] == [1, "X"]


def test_remote_op_transforms_pending_and_buffer_with_sharedb_sides() -> None:
    state = loaded("abc", 0)
    state.submit([1, "P"])  # pending
    state.submit([2, "B"])  # buffer: "aPBbc"
    # A remote insert at the same spot as ours: ours is "left" on the server, so goes first.
    fx = state.receive(remote(1, [1, "S"]))
    assert state.pending is not None
    assert state.pending.op == ot.transform([1, "P"], [1, "S"], "left") == [1, "P"]
    assert fx.events[0].data["applied"] == [3, "S"]
    assert state.buffer == [2, "B"]
    assert state.text == "aPBSbc"
    assert state.confirmed == "aSbc"
    # The server applies our pending op after S, then our buffer: the same text.
    server = ot.apply(ot.apply("aSbc", state.pending.op), state.buffer)
    assert server == state.text


def test_remote_delete_over_pending_insert() -> None:
    state = loaded("abcdef", 0)
    state.submit([3, "X"])
    state.receive(remote(1, [1, {"d": "bcde"}]))
    assert state.text == "aXf"
    assert state.pending is not None and state.pending.op == [1, "X"]
    assert state.confirmed == "af"


def test_ops_batch_is_handled_item_by_item() -> None:
    state = loaded("", 0)
    state.submit(["me"])
    fx = state.receive({"type": "ops", "items": [remote(1, ["A"]), ack(1, 2), remote(3, ["B"])]})
    assert kinds(fx) == ["op", "ack", "op"]
    assert (state.rev, state.state) == (3, "synchronised")
    assert state.text == state.confirmed == "BmeA"  # ours was "left" of A


def test_old_or_duplicate_frames_are_ignored() -> None:
    state = loaded("ab", 3)
    fx = state.receive(remote(3, ["zzz"]))
    fx = state.receive(ack(9, 4), fx)
    assert (state.text, state.rev, fx.events, fx.reconnect) == ("ab", 3, [], False)


def test_a_gap_in_revisions_asks_for_a_reconnect() -> None:
    state = loaded("ab", 3)
    fx = state.receive(remote(5, ["x"]))
    assert fx.reconnect
    assert state.rev == 3 and state.text == "ab"
    state.submit(["y"])
    assert state.receive(ack(1, 6)).reconnect


def test_own_op_echoed_as_op_frame_counts_as_ack() -> None:
    state = loaded("", 0)
    state.submit(["a"])
    fx = state.receive(remote(1, ["a"], src="src-a", seq=1))
    assert kinds(fx) == ["ack"]
    assert (state.rev, state.state, state.confirmed) == (1, "synchronised", "a")
    # The server's answer to our resend comes later and changes nothing.
    fx = state.receive(ack(1, 1))
    assert fx.events == [] and state.rev == 1


def test_reconnect_init_lists_our_pending_op_so_it_counts_as_acked() -> None:
    state = loaded("abc", 2)
    state.submit([3, "!"])  # seq 1, sent at rev 2, then the socket drops
    state.submit(["<"])  # buffered
    fx = state.receive(init("Zabc!", 4, ops=[
        {"rev": 3, "op": ["Z"], "src": "other", "seq": 1},
        {"rev": 4, "op": [4, "!"], "src": "src-a", "seq": 1},
    ]))
    assert kinds(fx)[:2] == ["op", "ack"]
    # Acked by the init: the buffer becomes the in-flight op (seq 2), sent once.
    assert fx.send == [{"type": "op", "rev": 4, "op": ["<"], "src": "src-a", "seq": 2}]
    assert (state.rev, state.confirmed, state.text) == (4, "Zabc!", "<Zabc!")


def test_reconnect_init_without_our_op_rebases_and_resends_same_seq() -> None:
    state = loaded("abc", 2)
    state.submit([3, "!"])
    fx = state.receive(init("Zabc", 3, ops=[{"rev": 3, "op": ["Z"], "src": "o", "seq": 4}]))
    assert fx.send == [{"type": "op", "rev": 3, "op": [4, "!"], "src": "src-a", "seq": 1}]
    assert (state.text, state.confirmed) == ("Zabc!", "Zabc")


def test_reconnect_without_ops_at_same_revision_resends() -> None:
    state = loaded("abc", 2)
    state.submit(["x"])
    fx = state.receive(init("abc", 2, ops=[]))
    assert fx.send == [{"type": "op", "rev": 2, "op": ["x"], "src": "src-a", "seq": 1}]
    assert state.text == "xabc"


def test_reconnect_that_cannot_rebase_takes_the_server_text() -> None:
    state = loaded("abc", 2)
    state.submit(["x"])
    fx = state.receive(init("server text", 9))  # no ops: the history was too far back
    assert [e.data.get("code") for e in fx.events if e.kind == "error"] == ["resync"]
    assert (state.text, state.rev, state.state, fx.send) == ("server text", 9, "synchronised", [])


def test_reconnect_whose_rebase_disagrees_with_the_content_takes_the_server_text() -> None:
    state = loaded("abc", 2)
    fx = state.receive(init("abcX", 3, ops=[{"rev": 3, "op": ["Y"], "src": "o", "seq": 1}]))
    assert "error" in kinds(fx)
    assert (state.text, state.rev) == ("abcX", 3)


def test_error_answering_the_pending_op_drops_it_and_the_buffer() -> None:
    state = loaded("abc", 2)
    state.submit(["x"])
    state.submit(["y"])
    error = {"type": "error", "code": "invalid_op", "message": "no", "seq": 1}
    fx = state.receive(error)
    assert kinds(fx) == ["error", "reset"]
    assert (state.text, state.state, fx.send) == ("abc", "synchronised", [])
    # A later edit gets a new seq: the server never saw seq 1 applied.
    assert state.submit(["z"])[0]["seq"] == 2


def test_rate_limited_pending_op_is_retried_with_the_same_seq() -> None:
    state = loaded("abc", 2)
    state.submit(["x"])
    fx = state.receive({"type": "error", "code": "rate_limited", "message": "slow", "seq": 1})
    assert fx.retry == {"type": "op", "rev": 2, "op": ["x"], "src": "src-a", "seq": 1}
    assert state.text == "xabc"


def test_error_without_seq_is_only_reported() -> None:
    state = loaded("abc")
    state.submit(["x"])
    fx = state.receive({"type": "error", "code": "bad_json", "message": "?"})
    assert kinds(fx) == ["error"]
    assert state.state == "awaiting"


def test_peers_from_init_join_presence_and_leave() -> None:
    state = OTClientState("src-a")
    fx = state.receive(init(peers=[
        {"client": "p1", "user": "bob", "name": "Bob", "cursor": {"anchor": 0, "head": 0}},
        {"client": "me", "user": "u", "name": "U", "cursor": None},
    ]))
    assert list(state.peers) == ["p1"]
    assert "join" in kinds(fx)
    state.receive({"type": "join", "client": "p2", "user": "carol", "name": "Carol"})
    state.receive({"type": "presence", "client": "p2", "user": "carol", "name": "Carol",
                   "cursor": {"anchor": 1, "head": 2}, "rev": 0})
    assert state.peers["p2"].cursor == {"anchor": 1, "head": 2}
    fx = state.receive({"type": "leave", "client": "p1", "user": "bob", "name": "Bob"})
    assert list(state.peers) == ["p2"] and kinds(fx) == ["leave"]
    # A reconnect's init replaces the list, reporting who left meanwhile.
    fx = state.receive(init(ops=[], peers=[]))
    assert state.peers == {} and kinds(fx) == ["leave"]


def test_cursor_is_sent_only_when_synchronised_and_follows_edits() -> None:
    state = loaded("abcdef", 3)
    assert state.set_cursor({"anchor": 2, "head": 4}) == [
        {"type": "presence", "cursor": {"anchor": 2, "head": 4}, "rev": 3}
    ]
    state.submit(["xy"])
    assert state.set_cursor({"anchor": 5, "head": 5}) == []
    state.receive(remote(4, ["Q"]))
    assert state.cursor == {"anchor": 6, "head": 6}
    fx = state.receive(ack(1, 5))
    assert fx.send == [{"type": "presence", "cursor": {"anchor": 6, "head": 6}, "rev": 5}]


# -- convergence: two clients, a simulated server, random interleavings ------------------------

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class SimServer:
    """The real sequencing core behind perfect FIFO channels, one pair per client."""

    def __init__(self, clients: int) -> None:
        self.doc = DocumentState("d", "", 0)
        self.up: list[deque[Frame]] = [deque() for _ in range(clients)]
        self.down: list[deque[Frame]] = [deque() for _ in range(clients)]

    def init(self, who: int, since: int | None) -> Frame:
        frame = init(self.doc.text, self.doc.rev)
        frame["client"] = f"c{who}"
        if since is not None:
            held = self.doc.recent_ops(since)
            assert held is not None
            frame["ops"] = [{"rev": s.rev, "op": s.op, "src": s.src, "seq": s.seq} for s in held]
        return frame

    def receive(self, who: int) -> None:
        frame = self.up[who].popleft()
        submission = Submission(frame["op"], frame["rev"], frame["src"], frame["seq"], "u")
        batch = self.doc.stage([submission], NOW)
        outcome = batch.outcomes[0]
        assert outcome.error is None, outcome.error
        self.doc.accept(batch)
        if outcome.committed is None:  # a resend: acked again, with its original revision
            self.down[who].append(ack(frame["seq"], outcome.rev))
            return
        stored = outcome.committed
        for other, queue in enumerate(self.down):
            if other == who:
                queue.append(ack(stored.seq, stored.rev))
            else:
                queue.append(remote(stored.rev, stored.op, stored.src, stored.seq))


def run_client(server: SimServer, states: list[OTClientState], who: int, fx: Effects) -> None:
    assert not fx.reconnect, fx.events
    server.up[who].extend(frame for frame in fx.send if frame["type"] == "op")


def edit_op(text: str, where: int, what: str, delete: bool) -> ot.Op:
    pos = where % (len(text) + 1)
    skip: ot.Op = [pos] if pos else []
    if delete and pos < len(text):
        return [*skip, {"d": text[pos : pos + 1 + where % 3]}]
    return [*skip, what or "x"]


step = st.tuples(
    st.sampled_from(["edit", "up", "down", "down_batch", "drop", "drop_after_up"]),
    st.integers(0, 1),
    st.integers(0, 50),
    st.text("abcé😀", max_size=3),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
def test_clients_and_server_converge(steps: list[tuple[str, int, int, str, bool]]) -> None:
    server = SimServer(2)
    states = [OTClientState(f"src-{i}") for i in range(2)]
    for who, state in enumerate(states):
        run_client(server, states, who, state.receive(server.init(who, None)))

    for action, who, where, what, delete in steps:
        state = states[who]
        if action == "edit":
            op = edit_op(state.text, where, what, delete)
            before = state.text
            sent = state.submit(op)
            assert state.text == ot.apply(before, op)
            run_client(server, states, who, Effects(send=sent))
        elif action == "up" and server.up[who]:
            server.receive(who)
        elif action in ("down", "down_batch") and server.down[who]:
            count = len(server.down[who]) if action == "down_batch" else 1
            items = [server.down[who].popleft() for _ in range(count)]
            frame = items[0] if count == 1 else {"type": "ops", "items": items}
            run_client(server, states, who, state.receive(frame))
        elif action in ("drop", "drop_after_up"):
            # The socket breaks: frames on their way to the server are lost, or (after_up) were
            # read just before; frames on their way to the client are lost.
            while action == "drop_after_up" and server.up[who]:
                server.receive(who)
            server.up[who].clear()
            server.down[who].clear()
            run_client(server, states, who, state.receive(server.init(who, state.rev)))

    while any(server.up) or any(server.down):
        for who, state in enumerate(states):
            while server.up[who]:
                server.receive(who)
            while server.down[who]:
                run_client(server, states, who, state.receive(server.down[who].popleft()))

    for state in states:
        assert state.state == "synchronised"
        assert (state.text, state.rev) == (server.doc.text, server.doc.rev)
    # Every edit reached the server once: each src's seqs rise without repeats (a buffer that
    # composed to nothing was sent empty and acked without a revision, leaving a gap).
    for state in states:
        seqs = [s.seq for s in server.doc.recent_ops(0) or [] if s.src == state.src]
        assert seqs == sorted(set(seqs))
