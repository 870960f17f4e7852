"""One document's Y.Doc (pycrdt), whose text root is the OT document's text.

Both directions go through :class:`YjsDocument`:

- :meth:`~YjsDocument.apply_update` integrates a client's update and returns what the Doc itself
  emitted for it (the bytes to store and relay; nothing for an echo or an update still waiting
  for its dependencies) and the change to the text root as an OT op in code points;
- :meth:`~YjsDocument.apply_op` makes an OT op on the Y.Text as the server's own Yjs client and
  returns the update the Doc emitted for it.

Units: pycrdt's text indexes and deltas count UTF-8 bytes, OT counts code points (see
``units``). Embeds (non-text items a binding such as y-quill puts in a Y.Text) take one unit
in Yjs and have no OT view; formatting attributes stay in Yjs and never reach OT. A change
whose delta does not reproduce the new text exactly (which only an embed can cause) falls back
to the smallest single replacement between the old and the new text, so the OT text always
equals the Y.Text's string after every step.

The server's client id is chosen per loaded document and never one the stored state already
holds: a Yjs client id reused with fresh clocks would make peers drop its edits as duplicates.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pycrdt

from collab import ot
from collab.yjs.codec import DecodeError, Decoder
from collab.yjs.units import utf8_length

# Yjs client ids are random 32-bit numbers (yjs ``generateNewClientId``).
CLIENT_ID_BITS = 32
_EMBED = None  # a segment that is an embed, not text


@dataclass(frozen=True, slots=True)
class Applied:
    """What integrating one client update produced.

    ``update``: the bytes the Doc emitted (to store, then relay), ``None`` when it added
    nothing. ``op``: the change to the text root in code points, ``None`` when the text did not
    change (other roots, formatting, or nothing at all).
    """

    update: bytes | None
    op: ot.Op | None


def state_vector_clients(state_vector: bytes) -> dict[int, int]:
    """A state vector's ``client id -> clock`` (lib0: varUint n, n x (client, clock))."""
    decoder = Decoder(state_vector)
    count = decoder.var_uint()
    if count * 2 > decoder.remaining:
        raise DecodeError(f"a state vector announcing {count} clients in fewer bytes")
    clients = {}
    for _ in range(count):
        client = decoder.var_uint()
        clients[client] = decoder.var_uint()
    if decoder.remaining:
        raise DecodeError("bytes after the state vector")
    return clients


def _fresh_client_id(taken: Iterable[int]) -> int:
    taken = set(taken)
    while True:
        candidate = secrets.randbits(CLIENT_ID_BITS)
        if candidate not in taken:
            return candidate


def _decode_failure(error: BaseException) -> DecodeError:
    return DecodeError(f"a Yjs update that does not decode: {error}")


def _apply(doc: pycrdt.Doc[Any], update: bytes) -> None:
    try:
        doc.apply_update(update)
    except ValueError as error:
        raise _decode_failure(error) from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as error:
        # A Rust panic inside yrs surfaces as pyo3's PanicException, a BaseException.
        if type(error).__name__ != "PanicException":
            raise
        raise _decode_failure(error) from None


class YjsDocument:
    """A Y.Doc and the OT text it mirrors. Not thread-safe: one actor owns it."""

    __slots__ = ("_deltas", "_doc", "_emitted", "_has_embeds", "_mirror", "_text", "text_root")

    def __init__(self, text_root: str, updates: Sequence[bytes] = ()) -> None:
        """Builds the Doc from stored updates (a snapshot first, then the updates after it),
        with a server client id none of them uses."""
        self.text_root = text_root
        scratch: pycrdt.Doc[Any] = pycrdt.Doc(client_id=_fresh_client_id(()))
        for update in updates:
            _apply(scratch, update)
        taken = state_vector_clients(scratch.get_state())
        if scratch.client_id in taken:
            doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=_fresh_client_id(taken))
            _apply(doc, scratch.get_update())
        else:
            doc = scratch
        self._doc = doc
        self._text = doc.get(text_root, type=pycrdt.Text)
        self._emitted: list[bytes] = []
        self._deltas: list[list[dict[str, Any]]] = []
        doc.observe(lambda event: self._emitted.append(event.update))
        self._text.observe(lambda event: self._deltas.append(event.delta))
        self._has_embeds = any(not isinstance(chunk, str) for chunk, _ in self._text.diff())
        self._mirror = str(self._text)

    @property
    def client_id(self) -> int:
        return self._doc.client_id

    @property
    def text(self) -> str:
        """The text root's string: the OT document's text."""
        return self._mirror

    def state_vector(self) -> bytes:
        return self._doc.get_state()

    def snapshot(self) -> bytes:
        """The whole state as one update (``encodeStateAsUpdate``)."""
        return self._doc.get_update()

    def update_since(self, state_vector: bytes) -> bytes:
        """What a peer at ``state_vector`` lacks (sync step 2's payload)."""
        state_vector_clients(state_vector)  # refuse garbage before yrs sees it
        try:
            return self._doc.get_update(state_vector)
        except ValueError as error:
            raise DecodeError(f"a state vector that does not decode: {error}") from None

    def seed(self, text: str) -> bytes | None:
        """Writes ``text`` into an empty text root (the first Yjs join of an OT document);
        returns the update to store, or None for an empty text."""
        if self._mirror or len(self._text):
            raise ValueError("only an empty Y.Text is seeded")
        return self.apply_op([text] if text else [])

    # -- Yjs -> OT ------------------------------------------------------------------------

    def apply_update(self, update: bytes) -> Applied:
        before: list[str | None] = self._segments() if self._has_embeds else [self._mirror]
        old = self._mirror
        self._emitted.clear()
        self._deltas.clear()
        _apply(self._doc, update)
        emitted = self._take_emitted()
        if not self._deltas:
            return Applied(emitted, None)
        deltas, self._deltas = self._deltas, []
        if any(
            "insert" in d and not isinstance(d["insert"], str) for delta in deltas for d in delta
        ):
            self._has_embeds = True
        new = str(self._text)
        self._mirror = new
        op = _delta_op(before, deltas, old, new)
        return Applied(emitted, op or None)

    def _take_emitted(self) -> bytes | None:
        emitted, self._emitted = self._emitted, []
        if not emitted:
            return None
        return emitted[0] if len(emitted) == 1 else pycrdt.merge_updates(*emitted)

    def _segments(self) -> list[str | None]:
        return [chunk if isinstance(chunk, str) else _EMBED for chunk, _ in self._text.diff()]

    # -- OT -> Yjs ------------------------------------------------------------------------

    def apply_op(self, op: ot.Op) -> bytes | None:
        """Makes ``op`` (code points, against :attr:`text`) on the Y.Text as the server's
        client; returns the update the Doc emitted. Raises ``ot.InvalidOp`` if it does not fit."""
        old = self._mirror
        new = ot.apply(old, op)
        segments: list[str | None] = self._segments() if self._has_embeds else [old]
        offsets = _Offsets(segments)
        self._emitted.clear()
        with self._doc.transaction():
            # Left to right, so an earlier component's bytes shift the later positions by
            # ``moved``: pycrdt takes indexes into the text as it is at that moment.
            moved = 0
            position = 0
            for component in op:
                if isinstance(component, int):
                    position += component
                elif isinstance(component, str):
                    self._text.insert(offsets.at(position) + moved, component)
                    moved += utf8_length(component)
                else:
                    deleted = component["d"]
                    count = deleted if isinstance(deleted, int) else len(deleted)
                    start = offsets.at(position)
                    length = offsets.at(position + count) - start
                    del self._text[start + moved : start + moved + length]
                    moved -= length
                    position += count
        self._deltas.clear()
        self._mirror = new
        return self._take_emitted()


class _Offsets:
    """Code point positions in the text -> Yjs (pycrdt) offsets, counting embeds as one unit.

    An embed sitting at a position counts as after it, so an insert there lands before it.
    """

    __slots__ = ("_segments",)

    def __init__(self, segments: list[str | None]) -> None:
        self._segments = segments

    def at(self, position: int) -> int:
        offset = 0
        remaining = position
        for segment in self._segments:
            if segment is _EMBED:
                if remaining == 0:
                    return offset
                offset += 1
                continue
            if remaining <= len(segment):
                return offset + utf8_length(segment[:remaining])
            offset += utf8_length(segment)
            remaining -= len(segment)
        if remaining:
            raise ot.InvalidOp(f"position {position} is past the end of the text")
        return offset


class _Units:
    """Reads the text before a change in Yjs units (UTF-8 bytes; an embed is one unit)."""

    __slots__ = ("_index", "_offset", "_segments")

    def __init__(self, segments: list[str | None]) -> None:
        self._segments = [s.encode("utf-8") if isinstance(s, str) else s for s in segments]
        self._index = 0
        self._offset = 0

    def take(self, units: int) -> str:
        """The text in the next ``units`` units (embeds contribute nothing)."""
        parts = []
        while units > 0:
            if self._index >= len(self._segments):
                raise ValueError("a delta past the end of the text")
            segment = self._segments[self._index]
            if segment is None:
                units -= 1
                self._index += 1
                continue
            end = min(len(segment), self._offset + units)
            parts.append(segment[self._offset : end])
            units -= end - self._offset
            if end == len(segment):
                self._index += 1
                self._offset = 0
            else:
                self._offset = end
        return b"".join(parts).decode("utf-8")


def _delta_op(
    before: list[str | None], deltas: list[list[dict[str, Any]]], old: str, new: str
) -> ot.Op:
    if len(deltas) == 1:
        try:
            op = _convert(before, deltas[0])
            if ot.apply(old, op) == new:
                return op
        except (ValueError, ot.InvalidOp):
            pass
    return replacement(old, new)


def _convert(before: list[str | None], delta: list[dict[str, Any]]) -> ot.Op:
    units = _Units(before)
    op: ot.Op = []
    for item in delta:
        if "retain" in item:
            kept = units.take(item["retain"])
            if kept:
                op.append(len(kept))
        elif "delete" in item:
            gone = units.take(item["delete"])
            if gone:
                op.append({"d": len(gone)})
        elif "insert" in item and isinstance(item["insert"], str) and item["insert"]:
            op.append(item["insert"])
    return ot.normalize(op)


def replacement(old: str, new: str) -> ot.Op:
    """The op replacing the part between the longest common prefix and suffix."""
    limit = min(len(old), len(new))
    prefix = 0
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    op: ot.Op = [prefix] if prefix else []
    removed = len(old) - prefix - suffix
    if removed:
        op.append({"d": removed})
    inserted = new[prefix : len(new) - suffix]
    if inserted:
        op.append(inserted)
    return ot.normalize(op)
