"""lib0 varUint / varUint8Array / varString and y-websocket's messages: bytes in, bytes out."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab.errors import CloseCode
from collab.yjs import messages
from collab.yjs.codec import (
    MAX_SAFE_INTEGER,
    DecodeError,
    Decoder,
    var_string,
    var_uint,
    var_uint8_array,
)
from collab.yjs.messages import (
    AwarenessUpdate,
    PermissionDenied,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_frame,
)

# Golden bytes: what lib0's encoding.writeVarUint writes for these numbers.
GOLDEN_VAR_UINT = [
    (0, b"\x00"),
    (1, b"\x01"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (300, b"\xac\x02"),
    (16384, b"\x80\x80\x01"),
    (2**32 - 1, b"\xff\xff\xff\xff\x0f"),
    (MAX_SAFE_INTEGER, b"\xff\xff\xff\xff\xff\xff\xff\x0f"),
]


@pytest.mark.parametrize(("value", "encoded"), GOLDEN_VAR_UINT)
def test_var_uint_golden(value: int, encoded: bytes) -> None:
    assert var_uint(value) == encoded
    decoder = Decoder(encoded)
    assert decoder.var_uint() == value
    assert decoder.remaining == 0


@given(st.integers(min_value=0, max_value=MAX_SAFE_INTEGER))
def test_var_uint_round_trip(value: int) -> None:
    decoder = Decoder(var_uint(value) + b"rest")
    assert decoder.var_uint() == value
    assert decoder.remaining == 4


@given(st.binary(max_size=300), st.text(max_size=100))
def test_arrays_and_strings_round_trip(data: bytes, text: str) -> None:
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates are not UTF-8
    decoder = Decoder(var_uint8_array(data) + var_string(text))
    assert decoder.var_uint8_array() == data
    assert decoder.var_string() == text
    assert decoder.remaining == 0


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (b"\x80", "truncated"),
        (b"\xff\xff\xff", "truncated"),
        (b"\x80" * 8 + b"\x01", "longer than 8"),
        (b"\xff\xff\xff\xff\xff\xff\xff\x7f", r"larger than 2\*\*53"),
    ],
)
def test_bad_var_uints(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why) as caught:
        Decoder(data).var_uint()
    assert caught.value.close_code == CloseCode.BAD_MESSAGE


@given(st.integers(min_value=0, max_value=MAX_SAFE_INTEGER), st.data())
def test_every_truncation_of_a_var_uint_is_refused(value: int, data: st.DataObject) -> None:
    encoded = var_uint(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(DecodeError):
        Decoder(encoded[:cut]).var_uint()


def test_lengths_past_the_end_and_bad_utf8_are_refused() -> None:
    with pytest.raises(DecodeError, match="past the end"):
        Decoder(var_uint(10) + b"short").var_uint8_array()
    with pytest.raises(DecodeError, match="past the end"):
        Decoder(var_uint(MAX_SAFE_INTEGER)).var_uint8_array()
    with pytest.raises(DecodeError, match="not UTF-8"):
        Decoder(var_uint8_array(b"\xff\xfe")).var_string()


def test_var_uint_refuses_what_lib0_cannot_write() -> None:
    with pytest.raises(ValueError):
        var_uint(-1)
    with pytest.raises(ValueError):
        var_uint(MAX_SAFE_INTEGER + 1)


# -- messages ----------------------------------------------------------------------------------


def test_sync_messages_golden() -> None:
    # y-protocols: writeSyncStep1 / writeSyncStep2 / writeUpdate inside y-websocket's messageSync.
    assert messages.sync_step1(b"\x00") == b"\x00\x00\x01\x00"
    assert messages.sync_step2(b"\x00\x00") == b"\x00\x01\x02\x00\x00"
    assert messages.sync_update(b"\x01\x02\x03") == b"\x00\x02\x03\x01\x02\x03"
    assert messages.permission_denied("no") == b"\x02\x00\x02no"
    assert messages.query_awareness() == b"\x03"


def test_awareness_golden() -> None:
    # encodeAwarenessUpdate(awareness, [7]) for clock 2 and state {"a":1}
    entry = messages.awareness_entry(7, 2, '{"a":1}')
    assert entry == b"\x07\x02\x07" + b'{"a":1}'
    assert messages.awareness([entry]) == b"\x01" + bytes([1 + len(entry)]) + b"\x01" + entry


@given(st.binary(max_size=200))
def test_sync_messages_round_trip(payload: bytes) -> None:
    assert decode_frame(messages.sync_step1(payload)) == [SyncStep1(payload)]
    assert decode_frame(messages.sync_step2(payload)) == [SyncStep2(payload)]
    assert decode_frame(messages.sync_update(payload)) == [SyncUpdate(payload)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**40), json_values), max_size=5)
)
def test_awareness_round_trip(entries: list[tuple[int, int, object]]) -> None:
    encoded = [messages.awareness_entry(c, k, json.dumps(s)) for c, k, s in entries]
    [decoded] = decode_frame(messages.awareness(encoded))
    assert isinstance(decoded, AwarenessUpdate)
    assert [(e.client_id, e.clock, e.state) for e in decoded.entries] == entries
    assert [e.removed for e in decoded.entries] == [s is None for _, _, s in entries]


def test_several_messages_in_one_frame() -> None:
    frame = messages.sync_step1(b"\x00") + messages.query_awareness() + messages.sync_update(b"u")
    assert decode_frame(frame) == [SyncStep1(b"\x00"), QueryAwareness(), SyncUpdate(b"u")]
    assert decode_frame(messages.permission_denied("x")) == [PermissionDenied("x")]


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"", "empty frame"),
        (b"\x04", "unknown message type 4"),
        (b"\x00\x03\x00", "unknown sync message type 3"),
        (b"\x02\x01\x00", "unknown auth message type 1"),
        (b"\x00\x02\x05ab", "past the end"),
        (b"\x00\x02", "truncated varUint"),
        (b"\x00\x80", "truncated varUint"),
        (messages.sync_update(b"ok") + b"\x00", "truncated varUint"),
        (b"\x01\x02\x09\x00", "announcing 9 entries"),
        (messages.awareness([messages.awareness_entry(1, 1, "{oops")]), "not JSON"),
        (messages.awareness([messages.awareness_entry(1, 1, "NaN")]), "not JSON"),
        (b"\x01\x05\x00\x01\x02\x03\x04", "bytes after the awareness entries"),
    ],
)
def test_malformed_frames(frame: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode_frame(frame)


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_decode_error(frame: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_frame(frame)
