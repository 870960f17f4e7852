"""What server processes tell each other about a document (SPEC §6), typed, and its JSON form.

Pure: the local pub/sub hands these objects over as they are; Redis sends ``to_wire``'s dict.
A message only says what exists ("revisions a..b were committed", "this client is here"): an
actor that sees a gap reads the database, so a lost message costs latency, never an op.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from collab.types import StoredOp

Cursor = dict[str, int]


@dataclass(frozen=True, slots=True)
class Committed:
    """Ops another process committed, in revision order."""

    ops: tuple[StoredOp, ...]


@dataclass(frozen=True, slots=True)
class PeerSeen:
    """A client of another process joined, or moved its cursor (valid at ``rev``)."""

    kind: Literal["join", "presence"]
    client: str
    user: str
    name: str
    cursor: Cursor | None
    rev: int | None


@dataclass(frozen=True, slots=True)
class PeerLeft:
    client: str
    user: str
    name: str


@dataclass(frozen=True, slots=True)
class Who:
    """A process that just loaded the document asks who is connected elsewhere."""


@dataclass(frozen=True, slots=True)
class YjsUpdates:
    """Yjs updates another process committed that go with no op (other roots, formatting, a
    seed). Those that go with ops are read from the database with the ops' batch."""

    updates: tuple[bytes, ...]


Message = Committed | PeerSeen | PeerLeft | Who | YjsUpdates


def _wire_op(stored: StoredOp) -> dict[str, Any]:
    return {
        "rev": stored.rev,
        "op": stored.op,
        "src": stored.src,
        "seq": stored.seq,
        "user": stored.user_id,
        "at": stored.created_at.isoformat(),
    }


def _unwire_op(item: dict[str, Any]) -> StoredOp:
    return StoredOp(
        item["rev"],
        item["op"],
        item["src"],
        item["seq"],
        item["user"],
        datetime.fromisoformat(item["at"]),
    )


def to_wire(message: Message, node: str) -> dict[str, Any]:
    """The message as a dict whose first key is ``node``: its JSON starts ``{"node":"<id>",``,
    which is how a process tells its own messages (Redis echoes them) without parsing them."""
    match message:
        case Committed(ops):
            return {"node": node, "kind": "ops", "ops": [_wire_op(s) for s in ops]}
        case PeerSeen(kind, client, user, name, cursor, rev):
            return {
                "node": node,
                "kind": kind,
                "client": client,
                "user": user,
                "name": name,
                "cursor": cursor,
                "rev": rev,
            }
        case PeerLeft(client, user, name):
            return {"node": node, "kind": "leave", "client": client, "user": user, "name": name}
        case Who():
            return {"node": node, "kind": "who"}
        case YjsUpdates(updates):
            encoded = [base64.b64encode(u).decode() for u in updates]
            return {"node": node, "kind": "yjs", "updates": encoded}


def from_wire(raw: dict[str, Any]) -> Message | None:
    """The message in a decoded JSON object, or None if it is not one of ours."""
    try:
        kind = raw["kind"]
        if kind == "ops":
            return Committed(tuple(_unwire_op(item) for item in raw["ops"]))
        if kind in ("join", "presence"):
            return PeerSeen(
                kind, raw["client"], raw["user"], raw["name"], raw.get("cursor"), raw.get("rev")
            )
        if kind == "leave":
            return PeerLeft(raw["client"], raw["user"], raw["name"])
        if kind == "who":
            return Who()
        if kind == "yjs":
            return YjsUpdates(tuple(base64.b64decode(u, validate=True) for u in raw["updates"]))
    except (KeyError, TypeError, ValueError):
        return None
    return None
