"""Pub/sub inside one process: what a single ``collab serve`` uses.

Every ``LocalPubSub`` joined to one ``LocalHub`` is a node; a message reaches the other nodes
subscribed to its document on a later turn of the event loop, in publishing order, as it would
through a broker. A server process has one node and so publishes to nobody; tests join several
nodes to one hub (each with its own registry over a shared ``MemoryStore`` database) to run the
multi-process protocol in one process.
"""

from __future__ import annotations

import asyncio
import secrets

from collab.pubsub.base import OnMessage, OnReconnect
from collab.pubsub.messages import Message


class LocalHub:
    def __init__(self) -> None:
        self.nodes: dict[str, LocalPubSub] = {}


class LocalPubSub:
    def __init__(self, hub: LocalHub | None = None) -> None:
        self.node_id = secrets.token_hex(6)
        self._hub = hub if hub is not None else LocalHub()
        self._hub.nodes[self.node_id] = self
        self._subscribed: set[str] = set()
        self._on_message: OnMessage | None = None

    @property
    def healthy(self) -> bool:
        return True

    def attach(self, on_message: OnMessage, on_reconnect: OnReconnect) -> None:
        self._on_message = on_message

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._hub.nodes.pop(self.node_id, None)

    async def subscribe(self, doc_id: str) -> None:
        self._subscribed.add(doc_id)

    async def unsubscribe(self, doc_id: str) -> None:
        self._subscribed.discard(doc_id)

    def publish(self, doc_id: str, message: Message) -> None:
        for node in self._hub.nodes.values():
            if node is not self and doc_id in node._subscribed:
                asyncio.get_running_loop().call_soon(node._receive, doc_id, self.node_id, message)

    def _receive(self, doc_id: str, sender: str, message: Message) -> None:
        if self._on_message is not None and doc_id in self._subscribed:
            self._on_message(doc_id, sender, message)

    def node_alive(self, node_id: str) -> bool:
        return node_id in self._hub.nodes
