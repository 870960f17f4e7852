"""The benchmark clients' text OT: ``collab.ot``'s algorithms without re-validation.

A client of the hot document transforms its pending op over every op it receives, so with 50
clients the load generator does twice as many transforms as the server. ``collab.ot`` checks and
normalizes both inputs on every call; here the inputs are already in normal form (the server
sends only normal-form ops, and the clients build theirs in normal form), so these functions
skip that and run the same walk inline. :func:`self_check` compares them with ``collab.ot`` on
random ops before every benchmark run, so the clients cannot silently diverge from the server.
"""

from __future__ import annotations

import random
from typing import Any

from collab import ot
from collab.ot import compose

__all__ = ["apply", "compose", "self_check", "transform", "transform_position"]

Op = list[Any]


def apply(doc: str, op: Op) -> str:
    parts: list[str] = []
    pos = 0
    for c in op:
        kind = c.__class__
        if kind is int:
            parts.append(doc[pos : pos + c])
            pos += c
        elif kind is str:
            parts.append(c)
        else:
            d = c["d"]
            pos += d if d.__class__ is int else len(d)
    if pos > len(doc):
        raise ValueError(f"op reaches past the end of the document ({pos} > {len(doc)})")
    parts.append(doc[pos:])
    return "".join(parts)


def _push(out: Op, c: Any) -> None:
    """Appends a piece in normal form: merges it into a neighbour of the same kind."""
    if out:
        last = out[-1]
        kind = c.__class__
        if kind is last.__class__:
            if kind is dict:
                a, b = last["d"], c["d"]
                if a.__class__ is str and b.__class__ is str:
                    out[-1] = {"d": a + b}
                else:
                    out[-1] = {"d": (a if a.__class__ is int else len(a))
                               + (b if b.__class__ is int else len(b))}
            else:
                out[-1] = last + c
            return
    out.append(c)


def transform(op: Op, other: Op, side: str) -> Op:
    """``collab.ot.transform`` for normal-form inputs."""
    left = side == "left"
    out: Op = []
    n = len(op)
    i = 0  # next component of op
    off = 0  # characters of op[i] already taken (never an insert: inserts go whole)

    def take(limit: int) -> Any:
        nonlocal i, off
        if i == n:
            return limit
        c = op[i]
        kind = c.__class__
        if kind is str:
            i += 1
            return c
        if kind is int:
            rest = c - off
            if rest <= limit:
                i += 1
                off = 0
                return rest
            off += limit
            return limit
        d = c["d"]
        if d.__class__ is int:
            rest = d - off
            if rest <= limit:
                i += 1
                off = 0
                return {"d": rest}
            off += limit
            return {"d": limit}
        rest = len(d) - off
        if rest <= limit:
            piece = d[off:]
            i += 1
            off = 0
            return {"d": piece}
        piece = d[off : off + limit]
        off += limit
        return {"d": piece}

    for c in other:
        kind = c.__class__
        if kind is int:
            remaining = c
            while remaining > 0:
                piece = take(remaining)
                _push(out, piece)
                pk = piece.__class__
                if pk is int:
                    remaining -= piece
                elif pk is dict:
                    d = piece["d"]
                    remaining -= d if d.__class__ is int else len(d)
        elif kind is str:
            if left and i < n and op[i].__class__ is str:
                _push(out, take(len(op[i])))
            _push(out, len(c))
        else:
            d = c["d"]
            remaining = d if d.__class__ is int else len(d)
            while remaining > 0:
                piece = take(remaining)
                pk = piece.__class__
                if pk is str:
                    _push(out, piece)
                elif pk is int:
                    remaining -= piece
                else:
                    d = piece["d"]
                    remaining -= d if d.__class__ is int else len(d)
    if i < n and off:
        _push(out, take(1 << 62))  # the rest of a component the loop split
    for c in op[i:]:
        _push(out, c)
    if out and out[-1].__class__ is int:
        out.pop()
    return out


def transform_position(pos: int, op: Op) -> int:
    cursor = pos
    scanned = 0
    for c in op:
        if cursor <= scanned:
            break
        kind = c.__class__
        if kind is int:
            scanned += c
        elif kind is str:
            scanned += len(c)
            cursor += len(c)
        else:
            d = c["d"]
            cursor -= min(d if d.__class__ is int else len(d), cursor - scanned)
    return cursor


def _random_op(rng: random.Random, length: int) -> Op:
    op: Op = []
    pos = 0
    while pos < length and rng.random() < 0.8:
        roll = rng.random()
        if roll < 0.4:
            n = rng.randint(1, max(1, min(5, length - pos)))
            op.append(n)
            pos += n
        elif roll < 0.7:
            op.append(rng.choice(["a", "[12]", "xyz", "😀"]))
        else:
            n = rng.randint(1, max(1, min(4, length - pos)))
            op.append({"d": n} if rng.random() < 0.7 else {"d": "q" * n})
            pos += n
    if rng.random() < 0.3:
        op.append(rng.choice(["b", "[9]"]))
    return ot.normalize(op)


def self_check(cases: int = 3000, seed: int = 5) -> None:
    """Raises AssertionError unless these functions agree with ``collab.ot`` on random ops."""
    rng = random.Random(seed)
    for _ in range(cases):
        length = rng.randint(0, 12)
        doc = "q" * length
        a, b = _random_op(rng, length), _random_op(rng, length)
        for side in ("left", "right"):
            expected = ot.transform(a, b, side)
            got = transform(a, b, side)
            assert got == expected, (a, b, side, got, expected)
        assert apply(doc, a) == ot.apply(doc, a), (doc, a)
        position = rng.randint(0, length)
        assert transform_position(position, a) == ot.transform_position(position, a), (
            position, a)
