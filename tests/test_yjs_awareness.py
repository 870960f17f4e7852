"""Awareness bookkeeping (collab.yjs.awareness): newer clocks only, owners, leaving, coalescing."""

from __future__ import annotations

import json

import pytest

from collab.errors import CloseCode
from collab.yjs import messages
from collab.yjs.awareness import AwarenessOutbox, AwarenessRefused, AwarenessRoom
from collab.yjs.messages import AwarenessEntry, AwarenessUpdate, decode_frame


def entry(client_id: int, clock: int, state: object) -> AwarenessEntry:
    text = json.dumps(state)
    return AwarenessEntry(client_id, clock, text, state)


def room() -> AwarenessRoom[str]:
    return AwarenessRoom(max_state_bytes=200, max_clients_per_owner=2)


def decoded(message: bytes | None) -> list[tuple[int, int, object]]:
    assert message is not None
    [update] = decode_frame(message)
    assert isinstance(update, AwarenessUpdate)
    return [(e.client_id, e.clock, e.state) for e in update.entries]


def test_only_newer_clocks_are_relayed_so_echoes_die() -> None:
    r = room()
    cursor = {"user": {"name": "Ann"}, "cursor": 3}
    assert [c for c, _ in r.apply("a", [entry(1, 1, cursor)])] == [1]
    # Every provider sends back what it received: same clock, dropped.
    assert r.apply("b", [entry(1, 1, cursor)]) == []
    assert r.apply("a", [entry(1, 0, {"old": True})]) == []
    assert r.roster() == [(1, "Ann")]
    # y-protocols: an unknown client at clock 0 is not newer than nothing.
    assert r.apply("b", [entry(2, 0, {})]) == []


def test_removal_at_the_same_clock_counts_once() -> None:
    r = room()
    r.apply("a", [entry(1, 4, {"x": 1})])
    assert len(r.apply("a", [entry(1, 4, None)])) == 1
    assert r.apply("b", [entry(1, 4, None)]) == []
    assert r.everyone() is None
    # A stale state cannot bring the cursor back.
    assert r.apply("b", [entry(1, 3, {"x": 1})]) == []
    assert r.apply("a", [entry(1, 5, {"x": 2})]) != []


def test_leaving_nulls_what_the_connection_still_owns() -> None:
    r = room()
    r.apply("a", [entry(1, 2, {"n": 1})])
    r.apply("b", [entry(2, 7, {"n": 2})])
    # A reconnect announces client 1 from a new socket: it takes the id over.
    r.apply("c", [entry(1, 3, {"n": 1})])
    assert r.leave("a") == []
    left = r.leave("c")
    assert decoded(messages.awareness(e for _, e in left)) == [(1, 4, None)]
    assert decoded(r.everyone()) == [(2, 7, {"n": 2})]
    assert r.apply("c", [entry(1, 4, {"n": 1})]) == []  # the removal's clock is held
    assert r.owned_by("b") == frozenset({2})


def test_caps_refuse_the_whole_update() -> None:
    r = room()
    with pytest.raises(AwarenessRefused) as too_big:
        r.apply("a", [entry(1, 1, {"x": "y" * 300})])
    assert too_big.value.close_code == CloseCode.MESSAGE_TOO_LARGE
    r.apply("a", [entry(1, 1, {}), entry(2, 1, {})])
    with pytest.raises(AwarenessRefused) as too_many:
        r.apply("a", [entry(3, 1, {}), entry(1, 2, {})])
    assert too_many.value.close_code == CloseCode.BAD_MESSAGE
    assert len(r) == 2
    assert decoded(r.everyone()) == [(1, 1, {}), (2, 1, {})]


def test_echoes_of_other_clients_are_not_claims() -> None:
    """A provider sends back every state it receives: a room of more peers than one
    connection may own ids must not refuse those echoes."""
    r = room()  # two ids per connection
    for client in range(1, 6):
        r.apply(f"o{client}", [entry(client, 1, {"n": client})])
    echo = [entry(client, 1, {"n": client}) for client in range(1, 6)]
    assert r.apply("o1", echo) == []
    assert r.owned_by("o1") == frozenset({1})
    assert len(r) == 5


def test_removed_clients_are_forgotten_past_a_bound() -> None:
    r: AwarenessRoom[str] = AwarenessRoom(
        max_state_bytes=100, max_clients_per_owner=1, max_removed=2
    )
    for client in (1, 2, 3):
        r.apply(f"o{client}", [entry(client, 1, {})])
        r.leave(f"o{client}")
    # Client 1's removal was forgotten: its clock-1 state is news again; 3's is not.
    assert r.apply("x", [entry(1, 1, {})]) != []
    assert r.apply("y", [entry(3, 2, {})]) == []


def test_outbox_keeps_the_newest_entry_per_client() -> None:
    outbox = AwarenessOutbox()
    assert not outbox and outbox.take() is None
    for clock in (1, 2, 3):
        outbox.put(5, messages.awareness_entry(5, clock, json.dumps({"c": clock})))
    outbox.put(6, messages.awareness_entry(6, 1, "null"))
    assert len(outbox) == 2
    assert decoded(outbox.take()) == [(5, 3, {"c": 3}), (6, 1, None)]
    assert not outbox
