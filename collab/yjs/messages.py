"""y-websocket's messages: one binary WebSocket frame holds one message (lib0-encoded).

    message                         bytes
    sync step 1                     0, 0, varUint8Array(state vector)
    sync step 2                     0, 1, varUint8Array(update)
    sync update                     0, 2, varUint8Array(update)
    awareness                       1, varUint8Array(varUint(n), n x (varUint client id,
                                       varUint clock, varString JSON state))
    auth: permission denied         2, 0, varString(reason)
    query awareness                 3

(y-protocols ``sync.js``, ``awareness.js``, ``auth.js``; y-websocket ``messageSync`` …
``messageQueryAwareness``.) :func:`decode_frame` reads every message in a frame, so a client
that packs several into one frame (as later y-websocket releases may) is understood too; any
byte that does not fit raises :class:`~collab.yjs.codec.DecodeError`. An awareness state is
JSON checked here: a state another client's ``JSON.parse`` would choke on is never relayed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from collab.yjs.codec import DecodeError, Decoder, var_string, var_uint, var_uint8_array


class MessageType(enum.IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(enum.IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


PERMISSION_DENIED = 0


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness: ``state_json`` is the JSON text as sent (``"null"``: gone)."""

    client_id: int
    clock: int
    state_json: str
    state: Any

    @property
    def removed(self) -> bool:
        return self.state is None


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    entries: tuple[AwarenessEntry, ...]


@dataclass(frozen=True, slots=True)
class PermissionDenied:
    reason: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


Message: TypeAlias = (
    SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate | PermissionDenied | QueryAwareness
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_state(text: str) -> Any:
    """The awareness state, as strict JSON (no NaN or Infinity, which JSON.parse refuses)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise DecodeError("an awareness state that is not JSON") from None


def _awareness(payload: bytes) -> AwarenessUpdate:
    decoder = Decoder(payload)
    count = decoder.var_uint()
    # Each entry takes at least 3 bytes: refuse a count no payload of this size can hold.
    if count * 3 > decoder.remaining:
        raise DecodeError(f"an awareness update announcing {count} entries in fewer bytes")
    entries = []
    for _ in range(count):
        client_id = decoder.var_uint()
        clock = decoder.var_uint()
        state_json = decoder.var_string()
        entries.append(AwarenessEntry(client_id, clock, state_json, parse_state(state_json)))
    if decoder.remaining:
        raise DecodeError("bytes after the awareness entries")
    return AwarenessUpdate(tuple(entries))


def _message(decoder: Decoder) -> Message:
    kind = decoder.var_uint()
    if kind == MessageType.SYNC:
        step = decoder.var_uint()
        payload = decoder.var_uint8_array()
        if step == SyncType.STEP1:
            return SyncStep1(payload)
        if step == SyncType.STEP2:
            return SyncStep2(payload)
        if step == SyncType.UPDATE:
            return SyncUpdate(payload)
        raise DecodeError(f"unknown sync message type {step}")
    if kind == MessageType.AWARENESS:
        return _awareness(decoder.var_uint8_array())
    if kind == MessageType.AUTH:
        auth = decoder.var_uint()
        if auth != PERMISSION_DENIED:
            raise DecodeError(f"unknown auth message type {auth}")
        return PermissionDenied(decoder.var_string())
    if kind == MessageType.QUERY_AWARENESS:
        return QueryAwareness()
    raise DecodeError(f"unknown message type {kind}")


def decode_frame(data: bytes) -> list[Message]:
    """Every message in one binary frame, in order; an empty frame is an error."""
    if not data:
        raise DecodeError("an empty frame")
    decoder = Decoder(data)
    messages = [_message(decoder)]
    while decoder.remaining:
        messages.append(_message(decoder))
    return messages


# -- encoding ---------------------------------------------------------------------------------

_SYNC_STEP1 = bytes((MessageType.SYNC, SyncType.STEP1))
_SYNC_STEP2 = bytes((MessageType.SYNC, SyncType.STEP2))
_SYNC_UPDATE = bytes((MessageType.SYNC, SyncType.UPDATE))


def sync_step1(state_vector: bytes) -> bytes:
    return _SYNC_STEP1 + var_uint8_array(state_vector)


def sync_step2(update: bytes) -> bytes:
    return _SYNC_STEP2 + var_uint8_array(update)


def sync_update(update: bytes) -> bytes:
    return _SYNC_UPDATE + var_uint8_array(update)


def awareness_entry(client_id: int, clock: int, state_json: str) -> bytes:
    """One encoded entry; :func:`awareness` joins entries into a message."""
    return var_uint(client_id) + var_uint(clock) + var_string(state_json)


def awareness(entries: Iterable[bytes]) -> bytes:
    """An awareness message from entries encoded by :func:`awareness_entry`."""
    items = list(entries)
    payload = var_uint(len(items)) + b"".join(items)
    return bytes((MessageType.AWARENESS,)) + var_uint8_array(payload)


def permission_denied(reason: str) -> bytes:
    return bytes((MessageType.AUTH, PERMISSION_DENIED)) + var_string(reason)


def query_awareness() -> bytes:
    return bytes((MessageType.QUERY_AWARENESS,))
