"""The pub/sub interface between server processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from collab.pubsub.messages import Message

# (document id, the publishing node's id, the message)
OnMessage = Callable[[str, str, Message], None]
OnReconnect = Callable[[], None]


class PubSub(Protocol):
    """Per-document channels shared by every process serving the same database.

    A node never hears its own messages. ``healthy`` is False while messages may be lost (the
    broker is unreachable); actors then poll the database until it is True again, and
    ``on_reconnect`` tells them to catch up once.
    """

    node_id: str

    @property
    def healthy(self) -> bool: ...

    def attach(self, on_message: OnMessage, on_reconnect: OnReconnect) -> None:
        """Where this node's incoming messages go (the registry), set once before ``start``."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, doc_id: str) -> None: ...

    async def unsubscribe(self, doc_id: str) -> None: ...

    def publish(self, doc_id: str, message: Message) -> None:
        """Queues ``message`` for the other nodes subscribed to ``doc_id``, in order."""
        ...

    def node_alive(self, node_id: str) -> bool:
        """Whether ``node_id`` is still running (its peers are forgotten once it is not)."""
        ...
