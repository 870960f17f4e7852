"""Who is connected to a document, and where their cursors are.

The roster holds this process's peers (``Peer``, the actor's view of a connection) and the
peers other processes announced (``RemotePeer``). A cursor is stored with the revision it is
valid at and moved over the ops since whenever it is shown, so a newcomer sees every cursor at
the revision its ``init`` frame carries. Pure: the actor sends what these methods return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from collab import protocol
from collab.document import DocumentState
from collab.protocol import CursorDict
from collab.pubsub.messages import PeerSeen


class Peer(Protocol):
    """A connected client, as the actor sees it: it never awaits one, it hands it bytes."""

    client_id: str
    user_id: str
    name: str
    cursor: CursorDict | None

    def send(self, frame: bytes) -> None: ...

    def send_presence(self, client_id: str, frame: bytes) -> None:
        """Sends a presence frame, replacing the one of ``client_id`` not yet written."""
        ...

    def close(self, code: int, reason: str) -> None: ...


@dataclass(slots=True)
class RemotePeer:
    """A client connected to another server process."""

    client: str
    user: str
    name: str
    cursor: CursorDict | None
    rev: int | None  # the revision ``cursor`` is valid at
    node: str


def move_cursor(
    state: DocumentState, cursor: CursorDict | None, rev: int | None
) -> CursorDict | None:
    """A cursor valid at ``rev``, moved to the current revision (None if no longer held)."""
    if cursor is None or rev is None or rev >= state.rev:
        return cursor
    anchor = state.transform_cursor(cursor["anchor"], rev)
    head = state.transform_cursor(cursor["head"], rev)
    return None if anchor is None or head is None else {"anchor": anchor, "head": head}


class Roster:
    def __init__(self) -> None:
        self._local: dict[str, Peer] = {}
        self._cursor_revs: dict[str, int] = {}  # local client -> revision its cursor is valid at
        self._remote: dict[str, RemotePeer] = {}

    def __len__(self) -> int:
        return len(self._local)

    def __iter__(self) -> Iterator[Peer]:
        return iter(self._local.values())

    def __contains__(self, peer: Peer) -> bool:
        return self._local.get(peer.client_id) is peer

    @property
    def has_remote(self) -> bool:
        return bool(self._remote)

    def add(self, peer: Peer) -> None:
        self._local[peer.client_id] = peer

    def remove(self, peer: Peer) -> bool:
        """Takes ``peer`` off the roster; False if it was not on it."""
        if self._local.get(peer.client_id) is not peer:
            return False
        del self._local[peer.client_id]
        self._cursor_revs.pop(peer.client_id, None)
        return True

    def clear(self) -> list[Peer]:
        """Empties the local roster, returning who was on it."""
        peers = list(self._local.values())
        self._local.clear()
        self._cursor_revs.clear()
        return peers

    def entries(self, state: DocumentState) -> list[dict[str, Any]]:
        """Everyone connected, local and remote, with cursors at ``state.rev`` (an ``init``)."""
        local = [
            protocol.peer_entry(p.client_id, p.user_id, p.name, self.cursor_of(p, state))
            for p in self._local.values()
        ]
        remote = [
            protocol.peer_entry(r.client, r.user, r.name, move_cursor(state, r.cursor, r.rev))
            for r in self._remote.values()
        ]
        return local + remote

    def cursor_of(self, peer: Peer, state: DocumentState) -> CursorDict | None:
        return move_cursor(state, peer.cursor, self._cursor_revs.get(peer.client_id))

    def set_cursor(
        self, peer: Peer, cursor: CursorDict | None, rev: int, state: DocumentState
    ) -> CursorDict | None:
        """Records ``peer``'s cursor, sent at ``rev``, moved to ``state.rev``; returns it."""
        if cursor is not None:
            # Clamped to the text even at the current revision: a client may send anything.
            anchor = state.transform_cursor(cursor["anchor"], rev) if rev <= state.rev else None
            head = state.transform_cursor(cursor["head"], rev) if rev <= state.rev else None
            cursor = None if anchor is None or head is None else {"anchor": anchor, "head": head}
        peer.cursor = cursor
        self._cursor_revs[peer.client_id] = state.rev
        return cursor

    def remote_seen(self, seen: PeerSeen, node: str) -> bool:
        """Records a remote peer's join or cursor; True if it was not known before."""
        known = seen.client in self._remote
        self._remote[seen.client] = RemotePeer(
            seen.client, seen.user, seen.name, seen.cursor, seen.rev, node
        )
        return not known

    def remote_left(self, client: str) -> RemotePeer | None:
        return self._remote.pop(client, None)

    def prune(self, alive: Callable[[str], bool]) -> list[RemotePeer]:
        """Forgets the peers of processes that stopped beating (killed, not shut down)."""
        gone = [r for r in self._remote.values() if not alive(r.node)]
        for remote in gone:
            del self._remote[remote.client]
        return gone
