"""The bridge between a Y.Doc's text root and the OT text (collab.yjs.bridge).

The Yjs clients here are plain pycrdt Docs: their updates are the same bytes a JavaScript Yjs
client sends for the same edit (the Node tests check that against the real ``yjs`` package).
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab import ot
from collab.yjs import bridge
from collab.yjs.bridge import YjsDocument, replacement, state_vector_clients
from collab.yjs.codec import DecodeError

ROOT = "content"
ALPHABET = ["a", "b", "é", "中", "😀", "👍", "🏽", "𝄞", "\n"]


class Client:
    """A Yjs peer: a pycrdt Doc whose updates are collected."""

    def __init__(self, client_id: int, root: str = ROOT) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.text = self.doc.get(root, type=pycrdt.Text)
        self.updates: list[bytes] = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def take(self) -> bytes:
        """Everything this client did since the last take, as one update."""
        updates, self.updates = self.updates, []
        return pycrdt.merge_updates(*updates) if len(updates) > 1 else updates[0]

    def receive(self, update: bytes | None) -> None:
        if update is not None:
            pending = len(self.updates)
            self.doc.apply_update(update)
            del self.updates[pending:]  # what it received is not its own edit

    def insert(self, position: int, value: str) -> None:
        """Inserts at a code point position (converted to pycrdt's UTF-8 offset)."""
        text = str(self.text)
        self.text.insert(len(text[:position].encode()), value)

    def delete(self, position: int, count: int) -> None:
        text = str(self.text)
        start = len(text[:position].encode())
        del self.text[start : start + len(text[position : position + count].encode())]


def joined(server: YjsDocument, client_id: int) -> Client:
    client = Client(client_id)
    client.receive(server.update_since(client.doc.get_state()))
    return client


def test_an_edit_inside_astral_text_becomes_the_op_in_code_points() -> None:
    server = YjsDocument(ROOT)
    server.seed("a😀b")
    client = joined(server, 1)
    client.insert(2, "X")  # after the emoji: code point 2, UTF-8 offset 5, UTF-16 index 3
    applied = server.apply_update(client.take())
    assert applied.op == [2, "X"]
    assert server.text == str(client.text) == "a😀Xb"
    client.delete(0, 2)
    assert server.apply_update(client.take()).op == [{"d": 2}]
    assert server.text == "Xb"


def test_the_op_keeps_the_clients_position_among_equal_characters() -> None:
    server = YjsDocument(ROOT)
    server.seed("aaaa")
    client = joined(server, 1)
    client.insert(1, "a")
    # A diff would say [4, "a"] or ["a"]; the delta says where the client typed.
    assert server.apply_update(client.take()).op == [1, "a"]


def test_an_ot_op_reaches_a_yjs_client_with_astral_characters() -> None:
    server = YjsDocument(ROOT)
    server.seed("👍🏽 ok 𝄞")
    client = joined(server, 1)
    update = server.apply_op([2, "中", 3, {"d": 1}, "😀"])
    client.receive(update)
    assert str(client.text) == server.text == "👍🏽中 ok😀𝄞"
    assert ot.apply("👍🏽 ok 𝄞", [2, "中", 3, {"d": 1}, "😀"]) == server.text


def test_echoes_and_known_state_add_nothing() -> None:
    server = YjsDocument(ROOT)
    client = Client(1)
    client.insert(0, "hi")
    update = client.take()
    first = server.apply_update(update)
    assert first.update is not None and first.op == ["hi"]
    assert server.apply_update(update) == bridge.Applied(None, None)
    assert server.apply_update(client.doc.get_update()) == bridge.Applied(None, None)


def test_an_update_waits_for_its_dependencies_then_is_emitted_whole() -> None:
    server = YjsDocument(ROOT)
    client = Client(1)
    client.insert(0, "hello")
    first = client.take()
    client.insert(5, " world")
    second = client.take()
    assert server.apply_update(second) == bridge.Applied(None, None)
    assert server.text == ""
    applied = server.apply_update(first)
    assert applied.op == ["hello world"]
    assert applied.update is not None
    late = Client(2)
    late.receive(applied.update)
    assert str(late.text) == "hello world"


def test_updates_that_do_not_decode_change_nothing() -> None:
    server = YjsDocument(ROOT)
    server.seed("keep")
    before = server.snapshot()
    for garbage in (b"", b"\xff\xff\xff", b"\x01\x01\x01", b"\x00\x01\x05"):
        with pytest.raises(DecodeError):
            server.apply_update(garbage)
    assert server.snapshot() == before
    assert server.text == "keep"
    with pytest.raises(DecodeError):
        server.update_since(b"\x05\x01")


def test_other_roots_and_formatting_have_no_op() -> None:
    server = YjsDocument(ROOT)
    server.seed("bold")
    client = joined(server, 1)
    fragment = client.doc.get("prosemirror", type=pycrdt.XmlFragment)
    fragment.children.append(pycrdt.XmlElement("p", {}, [pycrdt.XmlText("para")]))
    applied = server.apply_update(client.take())
    assert applied.update is not None and applied.op is None
    client.text.format(0, 2, {"bold": True})
    applied = server.apply_update(client.take())
    assert applied.update is not None and applied.op is None
    assert server.text == "bold"
    restored = YjsDocument(ROOT, [server.snapshot()])
    other = Client(3)
    other.receive(restored.snapshot())
    assert str(other.doc.get("prosemirror", type=pycrdt.XmlFragment)) == "<p>para</p>"


def test_embeds_have_no_ot_view_and_keep_positions_right() -> None:
    server = YjsDocument(ROOT)
    server.seed("ab😀cd")
    client = joined(server, 1)
    client.text.insert_embed(2, {"image": "x.png"})  # UTF-8 offset 2: after "ab"
    assert server.apply_update(client.take()).op is None
    assert server.text == "ab😀cd"
    client.text.insert(len(client.text), "!")  # the end, one unit past the text's bytes
    assert server.apply_update(client.take()).op == [5, "!"]
    client.receive(server.apply_op([3, "Z"]))  # after the emoji, past the embed
    assert str(client.text) == server.text == "ab😀Zcd!"
    client.receive(server.apply_op([2, "Y"]))  # at the embed: lands before it
    assert client.text.diff()[0] == ("abY", None)
    assert str(client.text) == server.text == "abY😀Zcd!"


def test_the_server_never_takes_a_client_id_the_state_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = Client(1234)
    client.insert(0, "x")
    stored = [client.take()]
    draws = iter([1234, 1234, 99])
    monkeypatch.setattr(bridge.secrets, "randbits", lambda bits: next(draws))
    server = YjsDocument(ROOT, stored)
    assert server.client_id == 99
    assert server.text == "x"
    assert state_vector_clients(server.state_vector()) == {1234: 1}


def test_seeding_is_once_and_only_for_an_empty_text() -> None:
    server = YjsDocument(ROOT)
    assert server.seed("") is None
    update = server.seed("seeded")
    assert update is not None
    with pytest.raises(ValueError):
        server.seed("again")
    restored = YjsDocument(ROOT, [update])
    assert restored.text == "seeded"
    assert restored.client_id != server.client_id


@pytest.mark.parametrize(
    ("old", "new", "op"),
    [
        ("", "", []),
        ("abc", "abc", []),
        ("abc", "abXc", [2, "X"]),
        ("a😀c", "ac", [1, {"d": 1}]),
        ("aaa", "aa", [2, {"d": 1}]),
        ("abc", "xyz", [{"d": 3}, "xyz"]),
    ],
)
def test_replacement(old: str, new: str, op: ot.Op) -> None:
    assert replacement(old, new) == op
    assert ot.apply(old, op) == new


edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "ot"]),
        st.floats(0, 1),
        st.integers(1, 4),
        st.text(alphabet=st.sampled_from(ALPHABET), min_size=1, max_size=3),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(ALPHABET), max_size=8), edits, edits)
def test_concurrent_yjs_and_ot_edits_converge(
    seed: str, first: list[Any], second: list[Any]
) -> None:
    """Two Yjs clients and OT ops edit at once; after the exchange every Y.Text and the OT text
    (rebuilt from the ops the bridge produced) are equal."""
    server = YjsDocument(ROOT)
    server.seed(seed)
    ot_text = seed
    clients = [joined(server, 1), joined(server, 2)]
    for edit_a, edit_b in zip(first, second, strict=False):
        for client, (kind, where, count, value) in zip(clients, (edit_a, edit_b), strict=True):
            text = str(client.text)
            position = int(where * len(text))
            if kind == "insert":
                client.insert(position, value)
            elif kind == "delete" and text:
                client.delete(min(position, len(text) - 1), count)
            elif kind == "ot":
                skip = int(where * len(server.text))
                op: ot.Op = [skip, value] if skip else [value]
                update = server.apply_op(op)
                ot_text = ot.apply(ot_text, op)
                for other in clients:
                    other.receive(update)
        # Both clients' edits reach the server (concurrently made), then everyone else.
        for client in clients:
            if client.updates:
                update = client.take()
                applied = server.apply_update(update)
                if applied.op is not None:
                    ot_text = ot.apply(ot_text, applied.op)
                assert ot_text == server.text
                for other in clients:
                    if other is not client:
                        other.receive(applied.update)
    for client in clients:
        client.receive(server.update_since(client.doc.get_state()))
        assert str(client.text) == server.text == ot_text
    assert YjsDocument(ROOT, [server.snapshot()]).text == ot_text
