"""The client's OT state machine, with no I/O: frames in, frames out, text checked.

The property at the end runs two clients against a simulated server (the real sequencing core,
:class:`collab.document.DocumentState`) over FIFO channels, with random edits, deliveries and
dropped connections, and checks they all converge on the server's text.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from collab import errors, ot
from collab.client import (
    ClientError,
    ClientEvent,
    CollabClient,
    Effects,
    HistoryRequest,
    OTClientState,
    text_diff,
)
from collab.document import DocumentState, Submission
from tests.support import ServerProcess, auth, recv_json, token

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


def test_reconnect_without_ops_past_our_revision_fetches_the_history_and_rebases() -> None:
    state = loaded("abc", 2)
    state.submit([3, "!"])  # seq 1, in flight
    state.submit(["<"])  # buffered
    fx = state.receive(init("XYabc", 4))  # no ops: too far back for the server to list
    assert fx.history == HistoryRequest(2, 4)
    assert fx.send == [] and state.text == "<abc!"  # nothing changes until the ops are in
    fx = state.receive_history([{"rev": 3, "op": ["X"], "src": "o", "seq": 1},
                                {"rev": 4, "op": [1, "Y"], "src": "o", "seq": 2}])
    assert "error" not in kinds(fx)
    assert fx.send == [{"type": "op", "rev": 4, "op": [5, "!"], "src": "src-a", "seq": 1}]
    assert (state.text, state.confirmed, state.rev) == ("<XYabc!", "XYabc", 4)


def test_fetched_history_holding_our_op_counts_as_its_ack() -> None:
    state = loaded("abc", 2)
    state.submit([3, "!"])
    state.submit(["<"])
    state.receive(init("abc!", 3))
    fx = state.receive_history([{"rev": 3, "op": [3, "!"], "src": "src-a", "seq": 1}])
    assert fx.send == [{"type": "op", "rev": 3, "op": ["<"], "src": "src-a", "seq": 2}]
    assert (state.text, state.confirmed) == ("<abc!", "abc!")


def test_history_unavailable_keeps_the_edits_rebased_over_the_text_diff() -> None:
    state = loaded("abc", 2)
    state.submit([3, "!"])
    state.submit(["<"])
    state.receive(init("abZc", 9))
    fx = state.history_unavailable("HTTP 404")
    assert [e.data.get("code") for e in fx.events if e.kind == "error"] == ["resync"]
    assert (state.text, state.confirmed, state.rev) == ("<abZc!", "abZc", 9)
    # The in-flight op keeps its seq, so the server can tell if it had it already.
    assert fx.send == [{"type": "op", "rev": 9, "op": [4, "!"], "src": "src-a", "seq": 1}]


def test_a_passing_history_failure_reconnects_instead_of_guessing() -> None:
    state = loaded("abc", 2)
    state.submit(["x"])
    state.receive(init("abcdef", 9))
    fx = state.history_unavailable("connection refused", final=False)
    assert fx.reconnect and (state.text, state.rev) == ("xabc", 2)


def test_ack_at_a_revision_we_hold_takes_our_op_out_and_keeps_the_buffer() -> None:
    """The server says our op is in its text already (e.g. after a diff resync): the second
    copy goes, the buffer stays, and the client reconnects to check instead of looping."""
    state = loaded("abc", 2)
    state.submit([3, "!"])  # seq 1
    state.receive(remote(3, [3, "!"], src="o"))  # what the server has, as another op
    state.submit(["<"])
    assert state.text == "<abc!!"
    fx = state.receive(ack(1, 3))
    assert [e.data["code"] for e in fx.events if e.kind == "error"] == ["resync"]
    assert fx.reconnect
    assert (state.text, state.confirmed) == ("<abc!", "abc!")
    assert fx.send == [{"type": "op", "rev": 3, "op": ["<"], "src": "src-a", "seq": 2}]


def test_bad_revision_for_our_op_fetches_the_history_and_resends_it() -> None:
    state = loaded("abc", 2)
    state.submit([3, "!"])
    state.receive(remote(3, ["X"]))
    error = {"type": "error", "code": "bad_revision", "message": "too old", "seq": 1}
    fx = state.receive(error)
    assert fx.history == HistoryRequest(3, None) and fx.send == []
    assert state.text == "Xabc!"  # never dropped
    fx = state.receive_history([{"rev": 3, "op": ["X"], "src": "o", "seq": 1},
                                {"rev": 4, "op": ["Y"], "src": "o", "seq": 2}])
    assert fx.send == [{"type": "op", "rev": 4, "op": [5, "!"], "src": "src-a", "seq": 1}]
    assert (state.text, state.confirmed) == ("YXabc!", "YXabc")


def test_reconnect_whose_rebase_disagrees_with_the_content_takes_the_server_text() -> None:
    state = loaded("abc", 2)
    state.submit(["x"])
    fx = state.receive(init("abcX", 3, ops=[{"rev": 3, "op": ["Y"], "src": "o", "seq": 1}]))
    assert "error" in kinds(fx)
    assert (state.text, state.rev, state.confirmed) == ("xabcX", 3, "abcX")


def test_a_final_refusal_of_the_pending_op_drops_it_and_the_buffer() -> None:
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
    st.sampled_from(["edit", "up", "down", "down_batch", "drop", "drop_after_up", "drop_unlisted"]),
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
        elif action == "drop_unlisted":
            # As above, but the init lists no ops (history too far back for the server): the
            # client asks for them, as from GET /history, and rebases over them.
            server.up[who].clear()
            server.down[who].clear()
            frame = server.init(who, None)
            fx = state.receive(frame)
            if fx.history is not None:
                assert fx.history == HistoryRequest(state.rev, frame["rev"])
                held = server.doc.recent_ops(state.rev) or []
                listed = [{"rev": s.rev, "op": s.op, "src": s.src, "seq": s.seq} for s in held]
                fx = state.receive_history(listed)
            assert not [e for e in fx.events if e.kind == "error"], fx.events
            run_client(server, states, who, fx)

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


@given(st.text("ab😀", max_size=8), st.text("ab😀", max_size=8))
def test_text_diff_turns_one_text_into_the_other(old: str, new: str) -> None:
    op = text_diff(old, new)
    assert ot.apply(old, op) == new
    assert op == ot.normalize(op)


# -- against a real server, behind a network that fails -----------------------------------------


class Proxy:
    """A TCP proxy in front of a server: a network that can be cut, or stall one way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._listener: asyncio.Server | None = None
        self._links: list[asyncio.StreamWriter] = []
        self._upstream = asyncio.Event()
        self._upstream.set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._listener = await asyncio.start_server(
            self._link, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Drops every connection and refuses new ones (until :meth:`start`)."""
        assert self._listener is not None
        self._listener.close()
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    def stall_upstream(self) -> None:
        self._upstream.clear()

    def resume_upstream(self) -> None:
        self._upstream.set()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._links += [writer, server_writer]
        await asyncio.gather(
            self._pipe(reader, server_writer, self._upstream),
            self._pipe(server_reader, writer, None),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[Proxy]:
    proxy = Proxy(server.port)
    await proxy.start()
    yield proxy
    proxy.cut()


async def server_text(server: ServerProcess, doc: str) -> str:
    async with httpx.AsyncClient(base_url=server.base_url, headers=auth()) as http:
        response = await http.get(f"/documents/{doc}")
        content: str = response.json()["content"]
        return content


async def type_many(server: ServerProcess, doc: str, count: int) -> None:
    """``count`` ops from another editor, pipelined on one raw socket at the right revisions."""
    headers = {"Authorization": f"Bearer {token('bob')}"}
    async with connect(server.ws_url(doc), additional_headers=headers, max_size=None) as ws:
        rev = (await recv_json(ws))["rev"]

        async def read_acks() -> None:
            while True:
                frame = json.loads(await ws.recv())
                items = frame["items"] if frame["type"] == "ops" else [frame]
                assert all(item["type"] != "error" for item in items), items
                if any(item["type"] == "ack" and item["seq"] == count for item in items):
                    return

        reader = asyncio.create_task(read_acks())
        for i in range(count):
            await ws.send(json.dumps({"type": "op", "rev": rev + i, "op": ["b"], "src": "bob",
                                      "seq": i + 1}))
        async with asyncio.timeout(120):
            await reader


async def errors_of(events: asyncio.Queue[ClientEvent]) -> list[str]:
    codes = []
    while not events.empty():
        event = events.get_nowait()
        if event.kind == "error":
            codes.append(event.data["code"])
    return codes


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(COLLAB_OPS_PER_SECOND="1000000", COLLAB_OPS_BURST="1000000",
                          COLLAB_SEND_QUEUE_LIMIT="100000", COLLAB_MAX_REBASE_DISTANCE="2",
                          COLLAB_USER_OPS_PER_SECOND="1000000", COLLAB_USER_OPS_BURST="1000000")


async def test_reconnect_whose_init_lists_no_ops_rebases_over_the_fetched_history(
    server: ServerProcess, proxy: Proxy
) -> None:
    doc = "far-behind"
    alice = await CollabClient.connect(proxy.base_url, doc, token("alice"))
    alice.min_delay, alice.max_delay = 0.02, 0.2
    try:
        alice.insert(0, "one two")
        await alice.wait_synced()
        since = alice.rev
        events = alice.subscribe()
        proxy.cut()
        async with asyncio.timeout(10):
            while alice.status == "online":
                await events.get()
        alice.insert(0, "<")  # in flight when the socket went (never reached the server)
        alice.insert(len(alice.text), ">")  # buffered
        await type_many(server, doc, 10_001)
        # The premise: the server no longer lists the ops since alice's revision in its init.
        headers = {"Authorization": f"Bearer {token('carol')}"}
        async with connect(server.ws_url(doc, since=since), additional_headers=headers) as ws:
            assert "ops" not in await recv_json(ws)

        await proxy.start()
        await alice.wait_synced(timeout=60)
        expected = "<" + "b" * 10_001 + "one two>"
        assert alice.text == expected
        assert await server_text(server, doc) == expected
        assert alice.rev == since + 10_003
        assert "resync" not in await errors_of(events)
    finally:
        await alice.close()


async def test_bad_revision_for_the_pending_op_rebases_it_and_sends_it_again(
    server: ServerProcess, proxy: Proxy
) -> None:
    """COLLAB_MAX_REBASE_DISTANCE=2: an op that reaches the server 3 revisions late is refused."""
    doc = "late-op"
    alice = await CollabClient.connect(proxy.base_url, doc, token("alice"))
    try:
        alice.insert(0, "abc")
        await alice.wait_synced()
        events = alice.subscribe()
        proxy.stall_upstream()
        alice.insert(3, "!")  # sent at rev 1, held by the network
        async with httpx.AsyncClient(base_url=server.base_url, headers=auth("bob")) as http:
            for rev in (1, 2, 3):
                response = await http.post(f"/documents/{doc}/ops", json={"rev": rev, "op": ["x"]})
                assert response.status_code == 200, response.text
        await alice.wait_rev(4)
        proxy.resume_upstream()
        await alice.wait_synced()
        assert alice.text == await server_text(server, doc) == "xxxabc!"
        assert "bad_revision" in await errors_of(events)
    finally:
        await alice.close()


async def test_the_server_serves_the_js_client_and_every_module_it_imports(
    app_client: httpx.AsyncClient,
) -> None:
    """collab-client.js imports ot-text.js and the generated collab-codes.js by relative URL."""
    client_js = await app_client.get("/static/collab-client.js")
    assert client_js.status_code == 200
    imported = re.findall(r'^import .* from "\./([\w.-]+)";$', client_js.text, re.MULTILINE)
    assert sorted(imported) == ["collab-codes.js", "ot-text.js"]
    for name in imported:
        response = await app_client.get(f"/static/{name}")
        assert response.status_code == 200
        assert "javascript" in response.headers["content-type"]
    codes = await app_client.get("/static/collab-codes.js")
    assert codes.text == errors.js_module()
