"""WebSocket frames (SPEC §4): decoding client frames and encoding server frames, no sockets."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.protocol import (
    MAX_INT,
    OpFrame,
    PresenceFrame,
    ProtocolError,
    SharedBatch,
    ack_frame,
    batch_frame,
    decode_client_frame,
    encode,
    error_frame,
    op_frame,
)


def _decode_error(data: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode_client_frame(data)
    return caught.value


def _op(**fields: Any) -> str:
    frame: dict[str, Any] = {"type": "op", "rev": 3, "op": [1, "x"], "src": "ed-1", "seq": 7}
    frame.update(fields)
    return json.dumps({k: v for k, v in frame.items() if v is not _MISSING})


_MISSING: Any = object()


def test_op_frame_decodes() -> None:
    frame = decode_client_frame(_op())
    assert isinstance(frame, OpFrame)
    assert (frame.rev, frame.op, frame.src, frame.seq) == (3, [1, "x"], "ed-1", 7)


def test_bytes_and_unicode_decode() -> None:
    frame = decode_client_frame(_op(op=["😀é"]).encode())
    assert isinstance(frame, OpFrame)
    assert frame.op == ["😀é"]


def test_presence_frame_decodes() -> None:
    frame = decode_client_frame('{"type":"presence","cursor":{"anchor":1,"head":4},"rev":2}')
    assert isinstance(frame, PresenceFrame)
    assert frame.cursor is not None
    assert (frame.cursor.anchor, frame.cursor.head, frame.rev) == (1, 4, 2)


def test_presence_with_null_cursor() -> None:
    frame = decode_client_frame('{"type":"presence","cursor":null,"rev":0}')
    assert isinstance(frame, PresenceFrame)
    assert frame.cursor is None


def test_unknown_fields_are_ignored() -> None:
    # Forward compatibility: newer clients may add fields.
    frame = decode_client_frame(_op(extra={"x": 1}))
    assert isinstance(frame, OpFrame)


@pytest.mark.parametrize("data", ["", "{", "not json", '{"type": "op",}', b"\xff\xfe", "[1,"])
def test_bad_json(data: str | bytes) -> None:
    error = _decode_error(data)
    assert error.code == "bad_json"
    assert error.seq is None


@pytest.mark.parametrize("data", ["[]", "[1, 2]", "1", '"op"', "null", "true"])
def test_non_object(data: str) -> None:
    assert _decode_error(data).code == "bad_message"


@pytest.mark.parametrize(
    "data",
    ['{"type":"ack","seq":1,"rev":1}', '{"type":"OP"}', "{}", '{"type":null}', '{"type":1}',
     '{"type":["op"]}', '{"kind":"op"}'],
)
def test_unknown_type(data: str) -> None:
    error = _decode_error(data)
    assert error.code == "bad_message"
    assert "type" in error.message


@pytest.mark.parametrize("missing", ["rev", "op", "src", "seq"])
def test_op_missing_field(missing: str) -> None:
    error = _decode_error(_op(**{missing: _MISSING}))
    assert error.code == "bad_message"
    assert missing in error.message
    # An op whose seq is readable is answered with that seq, so the client can match it.
    assert error.seq == (None if missing == "seq" else 7)


@pytest.mark.parametrize("missing", ["cursor", "rev"])
def test_presence_missing_field(missing: str) -> None:
    frame: dict[str, Any] = {"type": "presence", "cursor": None, "rev": 0}
    del frame[missing]
    error = _decode_error(json.dumps(frame))
    assert error.code == "bad_message"
    assert missing in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rev", "3"),
        ("rev", 3.0),
        ("rev", 3.5),
        ("rev", -1),
        ("rev", None),
        ("op", "x"),
        ("op", {"d": 1}),
        ("op", None),
        ("src", 5),
        ("src", ""),
        ("src", "s" * 65),
        ("src", None),
        ("seq", "7"),
        ("seq", 0),
        ("seq", -3),
        ("seq", 1.5),
    ],
)
def test_op_wrong_types(field: str, value: Any) -> None:
    error = _decode_error(_op(**{field: value}))
    assert error.code == "bad_message"
    assert field in error.message


@pytest.mark.parametrize("field", ["rev", "seq"])
def test_bool_is_not_an_int(field: str) -> None:
    error = _decode_error(_op(**{field: True}))
    assert error.code == "bad_message"
    assert field in error.message
    if field == "seq":
        assert error.seq is None  # True is not a seq to echo


def test_presence_bool_and_wrong_types() -> None:
    for frame in (
        {"type": "presence", "cursor": {"anchor": True, "head": 1}, "rev": 0},
        {"type": "presence", "cursor": {"anchor": 1, "head": 1}, "rev": False},
        {"type": "presence", "cursor": {"anchor": 1}, "rev": 0},
        {"type": "presence", "cursor": {"anchor": -1, "head": 1}, "rev": 0},
        {"type": "presence", "cursor": [1, 2], "rev": 0},
        {"type": "presence", "cursor": {"anchor": "1", "head": 1}, "rev": 0},
    ):
        assert _decode_error(json.dumps(frame)).code == "bad_message", frame


@pytest.mark.parametrize("field", ["rev", "seq"])
@pytest.mark.parametrize("value", [MAX_INT + 1, 2**63, 2**64 + 5, 10**30])
def test_huge_numbers(field: str, value: int) -> None:
    data = _op(**{field: value})
    error = _decode_error(data)
    assert error.code in {"bad_message", "bad_json"}  # orjson refuses beyond 64 bits
    if error.code == "bad_message":
        assert field in error.message


def test_largest_revision_accepted() -> None:
    frame = decode_client_frame(_op(rev=MAX_INT, seq=MAX_INT))
    assert isinstance(frame, OpFrame)
    assert frame.rev == frame.seq == MAX_INT


def test_huge_cursor() -> None:
    frame = {"type": "presence", "cursor": {"anchor": 2**40, "head": 0}, "rev": 0}
    assert _decode_error(json.dumps(frame)).code == "bad_message"


def test_op_components_are_not_validated_here() -> None:
    # The op's content is the document's business (invalid_op, with the document's length).
    frame = decode_client_frame(_op(op=[-1, True, {"x": 2}]))
    assert isinstance(frame, OpFrame)


def test_error_message_names_every_problem() -> None:
    error = _decode_error('{"type":"op","rev":"a","op":[],"src":"","seq":1}')
    assert "rev" in error.message
    assert "src" in error.message


def test_ack_frame() -> None:
    assert orjson.loads(ack_frame(4, 17)) == {"type": "ack", "seq": 4, "rev": 17}


def test_op_frame_encoding() -> None:
    frame = orjson.loads(encode(op_frame(5, [2, "é😀", {"d": "ab"}], "src", 9, "alice")))
    assert frame == {"type": "op", "rev": 5, "op": [2, "é😀", {"d": "ab"}], "src": "src",
                     "seq": 9, "user": "alice"}


def test_error_frame() -> None:
    assert orjson.loads(error_frame("invalid_op", "nope", 3)) == {
        "type": "error", "code": "invalid_op", "message": "nope", "seq": 3
    }
    assert orjson.loads(error_frame("bad_json", "nope")) == {
        "type": "error", "code": "bad_json", "message": "nope"
    }


def test_error_frame_escapes_message() -> None:
    message = 'quote " backslash \\ newline \n'
    assert orjson.loads(error_frame("bad_message", message))["message"] == message


def test_batch_of_one_is_the_frame_itself() -> None:
    single = ack_frame(1, 1)
    assert batch_frame([single]) == single


def test_batch_frame_keeps_order() -> None:
    items = [encode(op_frame(1, ["a"], "s", 1, "u")), ack_frame(2, 2),
             encode(op_frame(3, [1, "b"], "t", 1, "v"))]
    frame = orjson.loads(batch_frame(items))
    assert frame["type"] == "ops"
    assert frame["items"] == [orjson.loads(item) for item in items]
    assert [item["rev"] for item in frame["items"]] == [1, 2, 3]


@settings(max_examples=500)
@given(st.data())
def test_shared_batch_gives_authors_their_acks_in_place(data: st.DataObject) -> None:
    """SharedBatch's cut-and-splice frames equal building each peer's item list outright."""
    count = data.draw(st.integers(0, 8))
    items: list[bytes | None] = [
        None if data.draw(st.integers(0, 4)) == 0 else b'{"type":"op","rev":%d}' % i
        for i in range(count)
    ]
    # An author's indexes: its ops, and maybe None items (acks only it hears).
    mine = sorted(data.draw(st.sets(st.integers(0, count - 1)))) if count else []
    acks = [(i, b'{"type":"ack","rev":%d}' % i) for i in mine]
    batch = SharedBatch(items)
    present = [item for item in items if item is not None]
    assert batch.shared() == (batch_frame(present) if present else None)
    if acks:
        ack_of = dict(acks)
        expected = [ack_of.get(i, item) for i, item in enumerate(items)]
        assert batch.with_acks(acks) == batch_frame([x for x in expected if x is not None])
