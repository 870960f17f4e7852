"""WebSocket frames (SPEC §4): decoding what clients send, encoding what the server sends.

Pure: no I/O. Incoming frames are validated by pydantic models forming one discriminated union;
outgoing frames are built as plain dicts and encoded once with orjson, since a broadcast frame is
shared by every peer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError

from collab import ot
from collab.types import StoredOp

# A cursor as the server relays it: {"anchor": …, "head": …}.
CursorDict = dict[str, int]

# Revisions and seqs are stored in 32-bit integer columns.
MAX_INT = 2**31 - 1

ErrorCode = Literal[
    "bad_json", "bad_message", "invalid_op", "bad_revision", "read_only", "rate_limited"
]


class ProtocolError(Exception):
    """A frame refused with an ``error`` frame; the connection stays open."""

    def __init__(self, code: ErrorCode, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.seq = seq


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Cursor(_Frame):
    anchor: Annotated[StrictInt, Field(ge=0, le=MAX_INT)]
    head: Annotated[StrictInt, Field(ge=0, le=MAX_INT)]


class OpFrame(_Frame):
    type: Literal["op"]
    rev: Annotated[StrictInt, Field(ge=0, le=MAX_INT)]
    op: list[Any]
    src: Annotated[str, Field(min_length=1, max_length=64)]
    seq: Annotated[StrictInt, Field(ge=1, le=MAX_INT)]


class PresenceFrame(_Frame):
    type: Literal["presence"]
    cursor: Cursor | None
    rev: Annotated[StrictInt, Field(ge=0, le=MAX_INT)]


ClientFrame = Annotated[OpFrame | PresenceFrame, Field(discriminator="type")]
_client_frame: TypeAdapter[OpFrame | PresenceFrame] = TypeAdapter(ClientFrame)
_KNOWN_TYPES = ("op", "presence")


def decode_client_frame(data: str | bytes) -> OpFrame | PresenceFrame:
    """Parses one client frame, raising ProtocolError with the code SPEC §4 gives."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ProtocolError("bad_json", f"not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("bad_message", "a frame is a JSON object with a 'type'")
    kind = raw.get("type")
    if kind not in _KNOWN_TYPES:
        raise ProtocolError("bad_message", f"unknown frame type {kind!r}")
    try:
        return _client_frame.validate_python(raw)
    except ValidationError as error:
        seq = raw.get("seq") if kind == "op" and _is_int(raw.get("seq")) else None
        raise ProtocolError("bad_message", _describe(error), seq) from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        # The first part is the union's tag; "op" is also a field name, so drop by position.
        loc = item["loc"][1:] if item["loc"] and item["loc"][0] in _KNOWN_TYPES else item["loc"]
        where = ".".join(str(part) for part in loc)
        problems.append(f"{where or 'frame'}: {item['msg']}")
    return "; ".join(problems)


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def op_frame(rev: int, op: ot.Op, src: str, seq: int, user: str) -> dict[str, Any]:
    return {"type": "op", "rev": rev, "op": op, "src": src, "seq": seq, "user": user}


def init_frame(
    doc_id: str,
    rev: int,
    content: str,
    client: str,
    user: tuple[str, str],
    access: str,
    peers: Sequence[dict[str, Any]],
    ops: Sequence[StoredOp] | None,
) -> bytes:
    """The first frame of a connection: the document at ``rev``, who is here, and (on a
    reconnect with ``since``) the ops missed, when the server still has them."""
    frame: dict[str, Any] = {
        "type": "init",
        "doc": doc_id,
        "rev": rev,
        "content": content,
        "client": client,
        "user": {"id": user[0], "name": user[1]},
        "access": access,
        "peers": peers,
    }
    if ops is not None:
        frame["ops"] = [{"rev": s.rev, "op": s.op, "src": s.src, "seq": s.seq} for s in ops]
    return encode(frame)


def peer_entry(client: str, user: str, name: str, cursor: CursorDict | None) -> dict[str, Any]:
    """One element of an ``init`` frame's ``peers``."""
    return {"client": client, "user": user, "name": name, "cursor": cursor}


def join_frame(client: str, user: str, name: str) -> bytes:
    return encode({"type": "join", "client": client, "user": user, "name": name})


def leave_frame(client: str, user: str, name: str) -> bytes:
    return encode({"type": "leave", "client": client, "user": user, "name": name})


def presence_frame(client: str, user: str, name: str, cursor: CursorDict | None, rev: int) -> bytes:
    return encode(
        {
            "type": "presence",
            "client": client,
            "user": user,
            "name": name,
            "cursor": cursor,
            "rev": rev,
        }
    )


def committed_op_frame(stored: StoredOp) -> bytes:
    """The ``op`` frame of a committed op, as peers receive it."""
    return encode(op_frame(stored.rev, stored.op, stored.src, stored.seq, stored.user_id))


def ack_frame(seq: int, rev: int) -> bytes:
    return b'{"type":"ack","seq":%d,"rev":%d}' % (seq, rev)


def error_frame(code: str, message: str, seq: int | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if seq is not None:
        frame["seq"] = seq
    return encode(frame)


def batch_frame(items: list[bytes]) -> bytes:
    """An ``ops`` frame from already-encoded ``op``/``ack`` frames, without re-encoding them."""
    if len(items) == 1:
        return items[0]
    return b'{"type":"ops","items":[' + b",".join(items) + b"]}"


class SharedBatch:
    """One delivery tick's items, encoded once for every peer.

    Peers that authored none of the items all get the same frame. An author gets a copy with
    acks in place of its own ops, cut from the shared payload around them, so each copy costs
    a few slices of bytes instead of a walk over every item. An item may be None: something
    only its author hears (the ack of a resent op), placed in order all the same.
    """

    def __init__(self, items: Sequence[bytes | None]) -> None:
        present = [item for item in items if item is not None]
        self._items = items
        self._count = len(present)
        self._payload = b",".join(present)
        self._starts: list[int] = []  # where each item starts (None: where the next one does)
        offset = 0
        for item in items:
            self._starts.append(offset)
            if item is not None:
                offset += len(item) + 1

    def shared(self) -> bytes | None:
        """The frame for a peer that authored nothing here; None if there is nothing."""
        if self._count == 0:
            return None
        if self._count == 1:
            return self._payload
        return b'{"type":"ops","items":[' + self._payload + b"]}"

    def with_acks(self, acks: Sequence[tuple[int, bytes]]) -> bytes:
        """The frame for an author: ``acks`` are (index of its item, ack), in index order."""
        payload = self._payload
        segments: list[bytes] = []
        count = self._count
        cursor = 0  # start of the payload not yet copied
        for index, ack in acks:
            start = self._starts[index]
            if start > cursor:
                segments.append(payload[cursor : start - 1])  # up to the comma before it
            item = self._items[index]
            if item is None:
                cursor = max(cursor, start)
                count += 1
            else:
                cursor = start + len(item) + 1
            segments.append(ack)
        if cursor < len(payload):
            segments.append(payload[cursor:])
        if count == 1:
            return segments[0]
        return b'{"type":"ops","items":[' + b",".join(segments) + b"]}"
