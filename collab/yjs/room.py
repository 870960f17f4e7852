"""The Yjs side of one document's room: its Yjs peers, the join handshake, relay, awareness.

Pure: it sends through the peers' ``send``/``send_awareness`` (which only queue) and never
touches a socket or the database. The document's actor owns one, builds it on the first Yjs
join, and calls it from its own task, so every method here is one atomic step: a peer that
joins gets sync step 2, the server's step 1 and the room's awareness before anything else
relayed can reach it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Hashable, Iterable
from typing import Protocol

from collab.yjs import messages
from collab.yjs.awareness import AwarenessRefused, AwarenessRoom, Relayed
from collab.yjs.bridge import YjsDocument
from collab.yjs.messages import AwarenessEntry


class YjsPeer(Protocol):
    """A Yjs connection as the room sees it. ``send`` and ``send_awareness`` only queue."""

    src: str  # names the connection (and the ops its text changes become)
    user_id: str
    name: str

    def __hash__(self) -> int: ...

    def send(self, frame: bytes) -> None: ...

    def send_awareness(self, client_id: int, entry: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class YjsRoom:
    def __init__(
        self, doc: YjsDocument, *, max_awareness_bytes: int, max_awareness_clients: int
    ) -> None:
        self.doc = doc
        self.peers: list[YjsPeer] = []
        # Owners: Yjs peers, and the OT clients shown to Yjs editors (keyed by their client id).
        self.awareness: AwarenessRoom[Hashable] = AwarenessRoom(
            max_state_bytes=max_awareness_bytes, max_clients_per_owner=max_awareness_clients
        )

    def join(self, peer: YjsPeer, state_vector: bytes) -> None:
        """Adds ``peer``: sync step 2 against its state vector, the server's step 1, then every
        awareness state. Raises DecodeError (nothing changed) for a state vector that does
        not decode."""
        missing = self.doc.update_since(state_vector)
        self.peers.append(peer)
        peer.send(messages.sync_step2(missing))
        peer.send(messages.sync_step1(self.doc.state_vector()))
        everyone = self.awareness.everyone()
        if everyone is not None:
            peer.send(everyone)

    def leave(self, peer: YjsPeer) -> None:
        if peer in self.peers:
            self.peers.remove(peer)
        self._relay_awareness(self.awareness.leave(peer), None)

    def answer_step1(self, peer: YjsPeer, state_vector: bytes) -> None:
        peer.send(messages.sync_step2(self.doc.update_since(state_vector)))

    def relay(self, update: bytes, origin: YjsPeer | None) -> None:
        """Sends a committed update to every peer but its origin."""
        frame = messages.sync_update(update)
        for peer in self.peers:
            if peer is not origin:
                peer.send(frame)

    def update_awareness(self, peer: YjsPeer, entries: Iterable[AwarenessEntry]) -> None:
        """Applies ``peer``'s awareness and relays what changed to the others; closes ``peer``
        with the refusal's code if the room refuses it."""
        try:
            changed = self.awareness.apply(peer, entries)
        except AwarenessRefused as refused:
            peer.close(refused.close_code, refused.message)
            return
        self._relay_awareness(changed, peer)

    def query_awareness(self, peer: YjsPeer) -> None:
        everyone = self.awareness.everyone()
        peer.send(everyone if everyone is not None else messages.awareness(()))

    def _relay_awareness(self, changed: list[Relayed], origin: YjsPeer | None) -> None:
        if not changed:
            return
        for peer in self.peers:
            if peer is not origin:
                for client_id, entry in changed:
                    peer.send_awareness(client_id, entry)

    def close_all(self, code: int, reason: str) -> None:
        peers, self.peers = self.peers, []
        for peer in peers:
            peer.close(code, reason)

    def roster(self) -> list[tuple[int, str | None]]:
        return self.awareness.roster()

    def show_ot_client(self, client: str, name: str) -> None:
        """Shows an OT client to the Yjs editors as an awareness state of its own
        (``{"user": {"name": …}, "collab": "ot"}``) under a client id the room does not hold."""
        taken = {client_id for client_id, _ in self.awareness.roster()}
        client_id = secrets.randbits(32)
        while client_id in taken:
            client_id = secrets.randbits(32)
        state = {"user": {"name": name}, "collab": "ot"}
        entry = AwarenessEntry(client_id, 1, json.dumps(state), state)
        self._relay_awareness(self.awareness.apply(("ot", client), [entry]), None)

    def hide_ot_client(self, client: str) -> None:
        self._relay_awareness(self.awareness.leave(("ot", client)), None)
