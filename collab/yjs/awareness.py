"""Awareness bookkeeping for one room: who is here, their cursors and names. Relayed, never stored.

Per client id the room keeps ``(clock, state)`` and applies y-protocols' rule: an entry counts
only when its clock is newer than the one held, or equal with a null state for a client still
present (a removal). That rule is what drops the echo every ``WebsocketProvider`` sends back
for each state it receives. A connection owns the client ids it announces (the newest sender of
an id owns it, so a reconnect takes its id over from the socket it replaces); when it leaves,
:meth:`AwarenessRoom.leave` produces the null states its peers need to remove its cursors.

:class:`AwarenessOutbox` coalesces what waits for one receiver: the newest entry per client id,
sent as one message, as presence does on the OT socket.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from collab.errors import CloseCode, CollabError
from collab.yjs import messages
from collab.yjs.messages import AwarenessEntry

Owner = TypeVar("Owner", bound=Hashable)  # a connection: hashed by identity

NULL_STATE = "null"

# A client id and its entry, encoded for an awareness message.
Relayed: TypeAlias = tuple[int, bytes]


class AwarenessRefused(CollabError):
    """An awareness update a room will not take; ``close_code`` ends the sender's socket."""

    code = "bad_message"

    def __init__(self, message: str, close_code: CloseCode) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(slots=True)
class _Client(Generic[Owner]):
    clock: int
    state_json: str
    name: str | None
    owner: Owner | None


def display_name(state: Any) -> str | None:
    """The name bindings put in awareness (``{"user": {"name": …}}``, y-codemirror, Tiptap)."""
    if isinstance(state, dict):
        user = state.get("user")
        if isinstance(user, dict):
            name = user.get("name")
            if isinstance(name, str):
                return name[:256]
    return None


class AwarenessRoom(Generic[Owner]):
    """The awareness of one document's room, keyed by Yjs client id."""

    def __init__(
        self, *, max_state_bytes: int, max_clients_per_owner: int, max_removed: int = 4096
    ) -> None:
        self._max_state_bytes = max_state_bytes
        self._max_clients_per_owner = max_clients_per_owner
        # Present clients and, separately, the clocks of removed ones (so a stale update cannot
        # bring a cursor back), the oldest forgotten past ``max_removed``.
        self._present: dict[int, _Client[Owner]] = {}
        self._removed: OrderedDict[int, int] = OrderedDict()
        self._max_removed = max_removed
        self._owned: dict[Owner, set[int]] = {}

    def __len__(self) -> int:
        return len(self._present)

    def apply(self, owner: Owner, entries: Iterable[AwarenessEntry]) -> list[Relayed]:
        """Takes ``owner``'s entries; returns the ones that changed something, encoded, which
        are what to relay. Raises :class:`AwarenessRefused` for a state over the size cap or
        more client ids than one connection may announce; nothing is applied then."""
        # Only news counts: every provider sends back each state it receives (same clock),
        # so a connection routinely carries other clients' ids, which are not claims.
        entries = [e for e in entries if self._is_news(e)]
        owned = self._owned.get(owner, set())
        claimed = {e.client_id for e in entries if not e.removed} - owned
        for entry in entries:
            if len(entry.state_json.encode("utf-8")) > self._max_state_bytes:
                raise AwarenessRefused(
                    f"awareness state larger than {self._max_state_bytes} bytes",
                    CloseCode.MESSAGE_TOO_LARGE,
                )
        if len(owned) + len(claimed) > self._max_clients_per_owner:
            raise AwarenessRefused(
                f"more than {self._max_clients_per_owner} awareness client ids on one connection",
                CloseCode.BAD_MESSAGE,
            )
        return [
            (e.client_id, messages.awareness_entry(e.client_id, e.clock, e.state_json))
            for e in entries
            if self._take(owner, e)
        ]

    def _is_news(self, entry: AwarenessEntry) -> bool:
        """y-protocols' rule: a newer clock, or the same clock removing a present client."""
        held = self._present.get(entry.client_id)
        current = held.clock if held is not None else self._removed.get(entry.client_id, 0)
        return current < entry.clock or (
            held is not None and current == entry.clock and entry.removed
        )

    def _take(self, owner: Owner, entry: AwarenessEntry) -> bool:
        if not self._is_news(entry):
            return False
        client_id = entry.client_id
        held = self._present.get(client_id)
        if entry.removed:
            if held is not None:
                self._disown(held.owner, client_id)
                del self._present[client_id]
            self._forget_later(client_id, entry.clock)
            return True
        self._removed.pop(client_id, None)
        if held is None:
            held = self._present[client_id] = _Client(entry.clock, entry.state_json, None, None)
        else:
            held.clock = entry.clock
            held.state_json = entry.state_json
        held.name = display_name(entry.state)
        if held.owner != owner:
            self._disown(held.owner, client_id)
            held.owner = owner
            self._owned.setdefault(owner, set()).add(client_id)
        return True

    def _disown(self, owner: Owner | None, client_id: int) -> None:
        if owner is None:
            return
        ids = self._owned.get(owner)
        if ids is not None:
            ids.discard(client_id)
            if not ids:
                del self._owned[owner]

    def _forget_later(self, client_id: int, clock: int) -> None:
        self._removed[client_id] = clock
        self._removed.move_to_end(client_id)
        while len(self._removed) > self._max_removed:
            self._removed.popitem(last=False)

    def leave(self, owner: Owner) -> list[Relayed]:
        """Removes the client ids ``owner`` still owns; returns their null entries to relay."""
        relay = []
        for client_id in sorted(self._owned.pop(owner, ())):
            held = self._present.pop(client_id)
            clock = held.clock + 1
            self._forget_later(client_id, clock)
            relay.append((client_id, messages.awareness_entry(client_id, clock, NULL_STATE)))
        return relay

    def everyone(self) -> bytes | None:
        """One awareness message with every present state (for a joiner, or query-awareness)."""
        if not self._present:
            return None
        return messages.awareness(
            messages.awareness_entry(client_id, held.clock, held.state_json)
            for client_id, held in self._present.items()
        )

    def roster(self) -> list[tuple[int, str | None]]:
        """Present client ids with the names their states carry."""
        return [(client_id, held.name) for client_id, held in self._present.items()]

    def owned_by(self, owner: Owner) -> frozenset[int]:
        return frozenset(self._owned.get(owner, ()))


class AwarenessOutbox:
    """What waits for one receiver: the newest encoded entry per client id."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[int, bytes] = {}

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, client_id: int, entry: bytes) -> None:
        self._entries[client_id] = entry

    def clear(self) -> None:
        self._entries.clear()

    def take(self) -> bytes | None:
        """One awareness message with everything waiting, or None; the outbox is then empty."""
        if not self._entries:
            return None
        entries, self._entries = self._entries, {}
        return messages.awareness(entries.values())
