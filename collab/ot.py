"""Operational transformation for plain text, with the semantics of npm ``ot-text-unicode`` v4.

An operation is a JSON list of components that walks over the document from its start:

* ``n`` (an int > 0) skips ``n`` characters,
* ``"text"`` (a non-empty str) inserts that text at the current position,
* ``{"d": n}`` deletes ``n`` characters, ``{"d": "text"}`` deletes exactly that text.

Why this shape: it is the wire format of ``ot-text-unicode``, so editor frontends that already
speak it (ShareDB and friends) can send and receive our ops unchanged, and every function here
returns what the npm package returns, component for component, for inputs in normal form.

Why code points: the npm package counts Unicode code points rather than JavaScript's UTF-16
units, so positions mean the same thing in every language. Python ``str`` indexing counts code
points too, so positions here are plain string indices. An astral character such as "😀" is
one character; "e\\u0301" (e + combining acute) is two. Lone surrogates cannot be counted
consistently across languages and are rejected.

Why text deletes: ``{"d": "text"}`` says what is being removed, which makes the op invertible
(undo) and lets :func:`apply` refuse an op that was aimed at a different document. A counted
delete carries no such information; when the two kinds meet (e.g. merged by normalization),
the result is a counted delete, exactly as in ``ot-text-unicode``.

Why a normal form: one edit can be spelled many ways (``[1, 2, "a"]`` or ``[3, "a"]``,
``["a", "b"]`` or ``["ab"]``). Normal form merges neighbours of one kind and drops a trailing
skip (an op need not mention the end of the document). Storing and sending only normal-form ops
keeps them canonical and comparable, and the transform tie-break looks at a single insert
component, so it is only convergent on normal-form ops: :func:`transform` and :func:`compose`
therefore normalize their inputs first. Normal form does not reorder an insert and a delete at
the same position; ``[{"d": 1}, "x"]`` and ``["x", {"d": 1}]`` are both normal.

Validation: :func:`check` accepts any structurally valid op, normal form or not (the server
normalizes what it receives). Components are validated strictly: booleans are not numbers,
floats are not skips, a delete dict has exactly the key ``"d"``. Errors are :class:`InvalidOp`
with a message naming the component (0-based index into the op) and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Final, Literal, TypeAlias, cast

__all__ = [
    "Component",
    "Delete",
    "InvalidOp",
    "Op",
    "Side",
    "apply",
    "check",
    "compose",
    "normalize",
    "transform",
    "transform_normal",
    "transform_position",
]

Delete: TypeAlias = dict[str, int | str]
Component: TypeAlias = int | str | dict[str, int | str]
Op: TypeAlias = list[Component]
Side: TypeAlias = Literal["left", "right"]

_Kind: TypeAlias = Literal["skip", "insert", "delete"]

_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SHOWN_CHARS: Final = 40


class InvalidOp(ValueError):
    """An operation is malformed, or does not fit the document it is applied to."""


# --------------------------------------------------------------------------- validation


def _shorten(text: str) -> str:
    """Repr of ``text`` cut short: documents and inserts can be megabytes long."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return repr(text[:_SHOWN_CHARS]) + "..."


def _check_text(index: int, what: str, text: str) -> None:
    match = _LONE_SURROGATE.search(text)
    if match is not None:
        raise InvalidOp(
            f"component {index}: {what} contains a lone surrogate "
            f"U+{ord(match.group()):04X} at offset {match.start()}"
        )


def _check_component(index: int, c: object) -> int:
    """Validate the structure of one component; return how many document characters it uses."""
    if isinstance(c, bool):
        raise InvalidOp(f"component {index}: skip must be a positive integer, got boolean {c!r}")
    if isinstance(c, int | float):
        if not isinstance(c, int) or c <= 0:
            raise InvalidOp(f"component {index}: skip must be a positive integer, got {c!r}")
        return c
    if isinstance(c, str):
        if not c:
            raise InvalidOp(f"component {index}: insert must be a non-empty string")
        _check_text(index, "insert", c)
        return 0
    if isinstance(c, dict):
        if list(c) != ["d"]:
            keys = ", ".join(repr(k) for k in c)
            raise InvalidOp(
                f"component {index}: delete must have exactly the key 'd', got keys [{keys}]"
            )
        d = c["d"]
        if isinstance(d, str):
            if not d:
                raise InvalidOp(f"component {index}: delete text must not be empty")
            _check_text(index, "delete text", d)
            return len(d)
        if isinstance(d, bool):
            raise InvalidOp(
                f"component {index}: delete must be a positive integer or a non-empty string, "
                f"got boolean {d!r}"
            )
        if not isinstance(d, int) or d <= 0:
            raise InvalidOp(
                f"component {index}: delete must be a positive integer or a non-empty string, "
                f"got {d!r}"
            )
        return d
    raise InvalidOp(
        f"component {index}: expected a skip (int), an insert (str) or a delete "
        f"({{'d': ...}}), got {type(c).__name__}"
    )


def check(op: object, doc_len: int | None = None, *, doc: str | None = None) -> None:
    """Raise :class:`InvalidOp` unless ``op`` is a structurally valid operation.

    Non-normal ops (adjacent components of one kind, a trailing skip) are valid.
    With ``doc_len``, skips and deletes must also stay within a document of that length.
    With ``doc`` (which implies ``doc_len=len(doc)``), text deletes must also match it.
    """
    if doc is not None:
        if doc_len is not None and doc_len != len(doc):
            raise ValueError(f"doc_len={doc_len} contradicts len(doc)={len(doc)}")
        doc_len = len(doc)
    if doc_len is not None and (
        isinstance(doc_len, bool) or not isinstance(doc_len, int) or doc_len < 0
    ):
        raise ValueError(f"doc_len must be a non-negative integer, got {doc_len!r}")
    if not isinstance(op, list):
        raise InvalidOp(f"op must be a list of components, got {type(op).__name__}")

    pos = 0  # position in the original document
    for index, c in enumerate(op):
        # The common, valid components are recognised by their exact type first (the checks
        # below run on every op the server and the clients handle); anything else goes through
        # _check_component, which names the problem.
        exact = type(c)
        if exact is int and c > 0:
            used = c
        elif exact is str and c and _no_lone_surrogate(c):
            continue
        elif exact is dict and len(c) == 1 and type(c.get("d")) is int and c["d"] > 0:
            used = c["d"]
        else:
            used = _check_component(index, c)
            if used == 0:
                continue
        end = pos + used
        if doc_len is not None and end > doc_len:
            kind = "skip" if isinstance(c, int) else "delete"
            raise InvalidOp(
                f"component {index}: {kind} past the end of the document "
                f"(reaches {end}, document length is {doc_len})"
            )
        if doc is not None and isinstance(c, dict):
            text = c["d"]
            if isinstance(text, str) and not doc.startswith(text, pos):
                found = doc[pos : min(end, pos + _SHOWN_CHARS + 1)]
                raise InvalidOp(
                    f"component {index}: text delete does not match the document at position "
                    f"{pos}: the op deletes {_shorten(text)}, the document has {_shorten(found)}"
                )
        pos = end


# --------------------------------------------------------------------------- component helpers


def _kind(c: Component) -> _Kind:
    if isinstance(c, int):
        return "skip"
    if isinstance(c, str):
        return "insert"
    return "delete"


def _delete_len(d: int | str) -> int:
    return d if isinstance(d, int) else len(d)


def _length(c: Component) -> int:
    """Characters a component spans: in the old document for skips and deletes, new for inserts."""
    if isinstance(c, int):
        return c
    if isinstance(c, str):
        return len(c)
    return _delete_len(c["d"])


def _slice_delete(d: int | str, start: int, end: int | None) -> int | str:
    """Characters ``start:end`` of a delete, keeping its kind (text or count)."""
    if isinstance(d, str):
        return d[start:end]
    return (d if end is None else min(d, end)) - start


def _slice(c: Component, start: int, end: int | None) -> Component:
    """Characters ``start:end`` of a component, as a component of the same kind."""
    if isinstance(c, int):
        return (c if end is None else min(c, end)) - start
    if isinstance(c, str):
        return c[start:end]
    return {"d": _slice_delete(c["d"], start, end)}


class _OpReader:
    """Reads an op piece by piece, splitting components where the caller needs.

    Past its last component an op reads as an endless skip: ops need not mention the tail of
    the document.
    """

    def __init__(self, op: Op) -> None:
        self._op = op
        self._index = 0  # next component
        self._offset = 0  # characters of that component already taken

    def peek(self) -> Component | None:
        """The next component (whole, even if partly taken), or None at the end."""
        return self._op[self._index] if self._index < len(self._op) else None

    def take(self, limit: int, keep_whole: Literal["insert", "delete"]) -> Component:
        """Take at most ``limit`` characters of the next component.

        Components of the ``keep_whole`` kind are never split: they come out whole, whatever
        their length. At the end of the op this returns a skip of ``limit``.
        """
        if self._index == len(self._op):
            return limit
        c = self._op[self._index]
        if _length(c) - self._offset <= limit or _kind(c) == keep_whole:
            return self._take_remainder()
        piece = _slice(c, self._offset, self._offset + limit)
        self._offset += limit
        return piece

    def take_component(self) -> Component | None:
        """Take what is left of the next component, or None at the end of the op."""
        if self._index == len(self._op):
            return None
        return self._take_remainder()

    def take_rest(self) -> Iterator[Component]:
        """Take everything that is left."""
        while (c := self.take_component()) is not None:
            yield c

    def _take_remainder(self) -> Component:
        piece = _slice(self._op[self._index], self._offset, None)
        self._index += 1
        self._offset = 0
        return piece


class _OpWriter:
    """Builds an op in normal form: merges neighbours of one kind, drops a trailing skip.

    Pieces of the current run are collected and joined once, so merging many small inserts
    stays linear. A run of deletes stays a text delete only if every piece was a text delete;
    otherwise it becomes a counted delete of the total length (as in ``ot-text-unicode``).
    """

    def __init__(self) -> None:
        self._op: Op = []
        self._kind: _Kind | None = None
        self._skip = 0
        self._texts: list[str] = []
        self._delete_len = 0
        self._delete_counted = False

    def append(self, c: Component) -> None:
        if _length(c) == 0:
            return  # a no-op piece
        kind = _kind(c)
        if kind != self._kind:
            self._flush()
            self._kind = kind
        if isinstance(c, int):
            self._skip += c
        elif isinstance(c, str):
            self._texts.append(c)
        else:
            d = c["d"]
            self._delete_len += _delete_len(d)
            if isinstance(d, str):
                self._texts.append(d)
            else:
                self._delete_counted = True

    def finish(self) -> Op:
        if self._kind != "skip":  # a trailing skip is dropped
            self._flush()
        self._kind = None
        return self._op

    def _flush(self) -> None:
        if self._kind == "skip":
            self._op.append(self._skip)
        elif self._kind == "insert":
            self._op.append("".join(self._texts))
        elif self._kind == "delete":
            d = self._delete_len if self._delete_counted else "".join(self._texts)
            self._op.append({"d": d})
        self._skip = 0
        self._texts = []
        self._delete_len = 0
        self._delete_counted = False


# --------------------------------------------------------------------------- the OT type


def normalize(op: Op) -> Op:
    """Return ``op`` in normal form (a new list; ``op`` is not modified).

    Neighbours of one kind are merged: skips add up, inserts concatenate, text deletes
    concatenate, and a run of deletes holding any counted delete becomes one counted delete.
    A trailing skip is dropped.
    """
    normal = _as_normal(op)
    if normal is not op:
        return normal
    # Already normal, as nearly every op on the wire is: a copy, no rewriting.
    return [{"d": c["d"]} if isinstance(c, dict) else c for c in op]


def _as_normal(op: Op) -> Op:
    """``op`` itself if it is in normal form, else its normal form (a new list); raises
    :class:`InvalidOp` if it is not an op. For callers that only read the result."""
    check(op)
    if _is_normal(op):
        return op
    writer = _OpWriter()
    for c in op:
        writer.append(c)
    return writer.finish()


def _is_normal(op: Op) -> bool:
    """Whether a valid op is in normal form: no two neighbours of one kind, no trailing skip.

    A run of deletes is normal only as one delete, so neighbouring deletes of either kind fail.
    """
    previous: type | None = None
    for c in op:
        kind = type(c)
        if kind is previous:
            return False
        previous = kind
    return previous is not int


def apply(doc: str, op: Op) -> str:
    """Apply ``op`` to ``doc``.

    Raises :class:`InvalidOp` if the op is malformed, skips or deletes past the end of
    ``doc``, or holds a text delete that does not match ``doc``. The document is sliced into a
    list and joined once, so a small op on a large document costs about two copies of it.
    """
    if type(op) is not list:
        check(op, doc=doc)  # raises: not an op
    parts: list[str] = []
    pos = 0
    size = len(doc)
    # Checked while applied, one pass: the common valid components by their exact type; on
    # anything else check() names the problem, or (an unusual but valid op) the slow path runs.
    for c in op:
        if type(c) is int:
            if c <= 0 or pos + c > size:
                return _apply_checked(doc, op)
            parts.append(doc[pos : pos + c])
            pos += c
        elif type(c) is str:
            if not c or not _no_lone_surrogate(c):
                return _apply_checked(doc, op)
            parts.append(c)
        elif type(c) is dict and len(c) == 1 and "d" in c:
            d = c["d"]
            if type(d) is int and d > 0 and pos + d <= size:
                pos += d
            elif type(d) is str and d and doc.startswith(d, pos) and _no_lone_surrogate(d):
                pos += len(d)
            else:
                return _apply_checked(doc, op)
        else:
            return _apply_checked(doc, op)
    parts.append(doc[pos:])
    return "".join(parts)


def _no_lone_surrogate(text: str) -> bool:
    return text.isascii() or _LONE_SURROGATE.search(text) is None


def _apply_checked(doc: str, op: Op) -> str:
    """:func:`apply` the plain way: check everything (raising on a bad op), then slice."""
    check(op, doc=doc)
    parts: list[str] = []
    pos = 0
    for c in op:
        if isinstance(c, int):
            parts.append(doc[pos : pos + c])
            pos += c
        elif isinstance(c, str):
            parts.append(c)
        else:
            pos += _delete_len(c["d"])
    parts.append(doc[pos:])
    return "".join(parts)


def transform(op: Op, other: Op, side: Side) -> Op:
    """Transform ``op`` so it applies after ``other`` (both made against the same document).

    ``side`` says which op wins ties: when both insert at the same position, the insert of
    the ``"left"`` op ends up first. Transforming the two ops against each other with opposite
    sides makes them converge::

        apply(apply(doc, a), transform(b, a, "left"))
            == apply(apply(doc, b), transform(a, b, "right"))

    Inserts of ``op`` inside text deleted by ``other`` survive; deletes of text that ``other``
    already deleted disappear.
    """
    if side not in ("left", "right"):
        raise InvalidOp(f"side must be 'left' or 'right', got {side!r}")
    return transform_normal(_as_normal(op), _as_normal(other), side)


def _merge_into(out: Op, c: Component) -> None:
    """Appends a non-empty piece to ``out``, merging it with a last piece of its kind."""
    if out:
        last = out[-1]
        kind = type(c)
        if kind is type(last):
            if kind is dict:
                assert isinstance(last, dict) and isinstance(c, dict)
                a, b = last["d"], c["d"]
                if type(a) is str and type(b) is str:
                    out[-1] = {"d": a + b}
                else:
                    out[-1] = {"d": _delete_len(a) + _delete_len(b)}
            else:
                out[-1] = cast(Any, last) + c
            return
    out.append(c)


Extent: TypeAlias = tuple[int, int, int]


def extent(op: Op) -> Extent | None:
    """Where ``op`` edits: (start, span, growth), or None for the empty op.

    ``start`` is its leading skip, ``span`` the characters of the document it covers after
    that (skips and deletes up to its last component) and ``growth`` how many characters it
    adds (inserts minus deletes). Two ops whose spans don't touch commute trivially.
    """
    if not op:
        return None
    start = span = growth = 0
    for index, c in enumerate(op):
        if isinstance(c, int):
            if index:
                span += c
            else:
                start = c
        elif isinstance(c, str):
            growth += len(c)
        else:
            d = c["d"]
            deleted = d if isinstance(d, int) else len(d)
            span += deleted
            growth -= deleted
    return start, span, growth


def transform_normal(op: Op, other: Op, side: Side) -> Op:
    """:func:`transform` for inputs known to be valid and in normal form (not checked).

    Validating ops the server already normalized would cost more than transforming them; this
    is one step of :func:`transform_past`, which the server's rebase uses for a whole run.
    """
    moved = transform_past(op, ((other, extent(other)),), side)
    return list(moved) if moved is op else moved


def transform_past(op: Op, others: Iterable[tuple[Op, Extent | None]], side: Side) -> Op:
    """``op`` transformed past each of ``others`` in turn (normal-form inputs, not checked).

    Each of ``others`` comes with its :func:`extent`, so a caller that keeps many ops computes
    it once. An other op that doesn't touch ``op``'s span only moves it; the moves are summed
    and written into the op once, not one new list per op. Only ops that touch are walked.
    Returns ``op`` itself when nothing changes it.
    """
    mine = extent(op)
    shift = 0  # how far op's start moved since op was last written out
    for other, theirs in others:
        if mine is not None and theirs is not None:
            start, span, growth = mine
            other_start, other_span, other_growth = theirs
            if other_start + other_span < start:
                mine = (start + other_growth, span, growth)
                shift += other_growth
                continue
            if other_start > start + span:
                continue
        if shift:
            # Only an op that starts with a skip can have moved (it was after another op).
            op = [cast(int, op[0]) + shift, *op[1:]]
            shift = 0
        op = _transform_walk(op, other, side)
        mine = extent(op)
    if shift:
        op = [cast(int, op[0]) + shift, *op[1:]]
    return op


def _transform_walk(op: Op, other: Op, side: Side) -> Op:
    """The general transform: walks ``other``, taking pieces of ``op`` as it goes."""
    left = side == "left"
    out: Op = []
    count = len(op)
    index = 0  # next component of op
    offset = 0  # characters of op[index] already taken (inserts are never split)

    def take(limit: int) -> Component:
        """At most ``limit`` characters of op's next component; an insert comes whole."""
        nonlocal index, offset
        if index == count:
            return limit  # past its end an op reads as an endless skip
        c = op[index]
        if isinstance(c, str):
            index += 1
            return c
        if isinstance(c, int):
            rest = c - offset
            if rest <= limit:
                index += 1
                offset = 0
                return rest
            offset += limit
            return limit
        d = c["d"]
        rest = (d if isinstance(d, int) else len(d)) - offset
        if rest <= limit:
            piece: int | str = (d - offset) if isinstance(d, int) else d[offset:]
            index += 1
            offset = 0
            return {"d": piece}
        piece = limit if isinstance(d, int) else d[offset : offset + limit]
        offset += limit
        return {"d": piece}

    for c in other:
        if isinstance(c, int):
            # Keep op's components over the skipped range; its inserts don't use up the skip.
            remaining = c
            while remaining > 0:
                piece = take(remaining)
                _merge_into(out, piece)
                if type(piece) is not str:
                    remaining -= _length(piece)
        elif isinstance(c, str):
            # An insert of op at the same spot goes first if op is on the left.
            if left and index < count and type(op[index]) is str:
                _merge_into(out, take(0))
            _merge_into(out, len(c))  # step over other's inserted text
        else:
            # Text other deleted is gone: drop op's skips and deletes there, keep its inserts.
            d = c["d"]
            remaining = d if isinstance(d, int) else len(d)
            while remaining > 0:
                piece = take(remaining)
                if type(piece) is str:
                    _merge_into(out, piece)
                else:
                    remaining -= _length(piece)
    if index < count and offset:
        _merge_into(out, take(1 << 62))  # the rest of a component the walk split
    for c in op[index:]:
        _merge_into(out, c)
    if out and type(out[-1]) is int:
        out.pop()
    return out


def compose(a: Op, b: Op) -> Op:
    """Return one op with the effect of ``a`` followed by ``b``.

    ``apply(doc, compose(a, b)) == apply(apply(doc, a), b)``. Text ``b`` deletes from what
    ``a`` inserted cancels out; text ``b`` deletes from the original document becomes a delete
    of the same kind (text or count) as ``b``'s.
    """
    a = normalize(a)
    b = normalize(b)
    reader = _OpReader(a)
    out = _OpWriter()
    for c in b:
        if isinstance(c, int):
            # b keeps these characters of a's result; a's deletes there use up none of them.
            remaining = c
            while remaining > 0:
                piece = reader.take(remaining, keep_whole="delete")
                out.append(piece)
                if not isinstance(piece, dict):
                    remaining -= _length(piece)
        elif isinstance(c, str):
            out.append(c)
        else:
            deleted = c["d"]
            total = _delete_len(deleted)
            done = 0
            while done < total:
                piece = reader.take(total - done, keep_whole="delete")
                if isinstance(piece, int):
                    # b deletes original text that a skipped.
                    out.append({"d": _slice_delete(deleted, done, done + piece)})
                    done += piece
                elif isinstance(piece, str):
                    done += len(piece)  # b deletes text a inserted: both vanish
                else:
                    out.append(piece)  # a's own delete, untouched by b
    for piece in reader.take_rest():
        out.append(piece)
    return out.finish()


def transform_position(pos: int, op: Op) -> int:
    """Where the cursor at ``pos`` ends up after ``op`` (``transformPosition`` in the npm type).

    Inserts before the cursor push it right; an insert exactly at the cursor does not move it
    (the text appears after the cursor). A cursor inside deleted text moves to where the
    deleted text was.
    """
    if isinstance(pos, bool) or not isinstance(pos, int) or pos < 0:
        raise InvalidOp(f"position must be a non-negative integer, got {pos!r}")
    check(op)
    cursor = pos
    scanned = 0  # characters of the new document the op has gone past
    for c in op:
        if cursor <= scanned:
            break
        if isinstance(c, int):
            scanned += c
        elif isinstance(c, str):
            scanned += len(c)
            cursor += len(c)
        else:
            cursor -= min(_delete_len(c["d"]), cursor - scanned)
    return cursor
