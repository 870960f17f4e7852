"""The Yjs room (collab.yjs.room) with hand-written peers: the join step, relay, awareness."""

from __future__ import annotations

import json

import pycrdt

from collab.errors import CloseCode
from collab.yjs import messages
from collab.yjs.bridge import YjsDocument
from collab.yjs.messages import AwarenessEntry, AwarenessUpdate, SyncStep1, SyncStep2, SyncUpdate
from collab.yjs.room import YjsRoom


class FakePeer:
    def __init__(self, name: str) -> None:
        self.src = f"yjs:{name}"
        self.user_id = name
        self.name = name
        self.frames: list[bytes] = []
        self.awareness: dict[int, bytes] = {}
        self.closed: tuple[int, str] | None = None

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def send_awareness(self, client_id: int, entry: bytes) -> None:
        self.awareness[client_id] = entry

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def decoded(self) -> list[messages.Message]:
        return [m for frame in self.frames for m in messages.decode_frame(frame)]


def entry(client_id: int, clock: int, state: object) -> AwarenessEntry:
    return AwarenessEntry(client_id, clock, json.dumps(state), state)


def new_room() -> YjsRoom:
    doc = YjsDocument("content")
    doc.seed("hello 😀")
    return YjsRoom(doc, max_awareness_bytes=1000, max_awareness_clients=2)


def test_a_join_gets_step2_then_step1_then_awareness_in_one_step() -> None:
    room = new_room()
    first = FakePeer("a")
    room.join(first, b"\x00")
    room.update_awareness(first, [entry(11, 1, {"user": {"name": "a"}})])
    second = FakePeer("b")
    room.join(second, b"\x00")
    step2, step1, awareness = second.decoded()
    assert isinstance(step2, SyncStep2) and isinstance(step1, SyncStep1)
    assert step1.state_vector == room.doc.state_vector()
    client = pycrdt.Doc()
    client.apply_update(step2.update)
    assert str(client.get("content", type=pycrdt.Text)) == "hello 😀"
    assert isinstance(awareness, AwarenessUpdate)
    assert [e.client_id for e in awareness.entries] == [11]
    assert first.awareness == {}  # a newcomer's join is not news to the others


def test_relay_skips_the_origin_and_leaving_nulls_its_awareness() -> None:
    room = new_room()
    a, b = FakePeer("a"), FakePeer("b")
    room.join(a, b"\x00")
    room.join(b, b"\x00")
    a.frames.clear()
    b.frames.clear()
    room.relay(b"update", a)
    assert a.frames == [] and b.decoded() == [SyncUpdate(b"update")]
    room.update_awareness(a, [entry(5, 3, {})])
    assert list(b.awareness) == [5]
    room.leave(a)
    [removed] = messages.decode_frame(messages.awareness([b.awareness[5]]))
    assert isinstance(removed, AwarenessUpdate)
    assert (removed.entries[0].clock, removed.entries[0].removed) == (4, True)
    assert room.peers == [b]


def test_refused_awareness_closes_the_sender_only() -> None:
    room = new_room()
    a, b = FakePeer("a"), FakePeer("b")
    room.join(a, b"\x00")
    room.join(b, b"\x00")
    room.update_awareness(a, [entry(1, 1, {"x": "y" * 2000})])
    assert a.closed is not None and a.closed[0] == CloseCode.MESSAGE_TOO_LARGE
    assert b.closed is None and b.awareness == {}


def test_ot_clients_are_shown_and_hidden_as_awareness() -> None:
    room = new_room()
    a = FakePeer("a")
    room.join(a, b"\x00")
    room.show_ot_client("ot-1", "Otto")
    [(client_id, shown)] = a.awareness.items()
    assert room.roster() == [(client_id, "Otto")]
    room.hide_ot_client("ot-1")
    [hidden] = messages.decode_frame(messages.awareness([a.awareness[client_id]]))
    assert isinstance(hidden, AwarenessUpdate) and hidden.entries[0].removed
    assert shown != a.awareness[client_id]
    assert room.roster() == []
