"""Pub/sub through Redis (SPEC §6): every committed op, cursor, join and leave is published on
a per-document channel, and each process forwards what other processes published to its own
clients.

The database stays the single source of truth (``collab.pubsub.messages``): an actor that sees
a gap, or that was cut off from Redis, reads the missing ops from the database. Redis itself is
imported only when this module is, which the app does only when ``COLLAB_REDIS_URL`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from collab.pubsub.base import OnMessage, OnReconnect
from collab.pubsub.messages import Message, from_wire, to_wire

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
NODE_TIMEOUT_SECONDS = 10.0


def _ignore_message(doc_id: str, node: str, message: Message) -> None:
    pass


def _ignore_reconnect() -> None:
    pass


class RedisPubSub:
    """One subscriber connection and one publisher task per process.

    ``on_message`` (set by ``attach``) receives other nodes' messages; ``on_reconnect`` runs
    after Redis comes back, so actors can read what they missed from the database.
    """

    def __init__(self, url: str, prefix: str) -> None:
        from redis.asyncio import Redis

        self.node_id = secrets.token_hex(6)
        self._prefix = prefix
        self._redis: Redis = Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=5
        )
        self._on_message: OnMessage = _ignore_message
        self._on_reconnect: OnReconnect = _ignore_reconnect
        self._channels: set[str] = set()
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=100_000)
        self._healthy = False
        self._nodes_seen: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: PubSub | None = None
        self._subscribed = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------

    def attach(self, on_message: OnMessage, on_reconnect: OnReconnect) -> None:
        self._on_message = on_message
        self._on_reconnect = on_reconnect

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="fanout:listen"),
            asyncio.create_task(self._publish_loop(), name="fanout:publish"),
            asyncio.create_task(self._heartbeat(), name="fanout:heartbeat"),
        ]
        # Serve even if Redis is down at start: actors poll the database until it is back.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._subscribed.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def redis(self) -> Redis:
        """The shared client, for other per-process state kept in Redis (tickets)."""
        return self._redis

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2):
                return bool(await self._redis.ping())
        except Exception:
            return False

    # -- channels ---------------------------------------------------------------------------

    def _channel(self, doc_id: str) -> str:
        return f"{self._prefix}doc:{doc_id}"

    def _nodes_channel(self) -> str:
        return f"{self._prefix}nodes"

    async def subscribe(self, doc_id: str) -> None:
        channel = self._channel(doc_id)
        self._channels.add(channel)
        if self._pubsub is not None and self._healthy:
            try:
                await self._pubsub.subscribe(channel)
            except Exception as error:
                self._lost(error)

    async def unsubscribe(self, doc_id: str) -> None:
        channel = self._channel(doc_id)
        self._channels.discard(channel)
        if self._pubsub is not None and self._healthy:
            try:
                await self._pubsub.unsubscribe(channel)
            except Exception as error:
                self._lost(error)

    def publish(self, doc_id: str, message: Message) -> None:
        """Queues a message; it is published in order, after a reconnect if need be."""
        data = orjson.dumps(to_wire(message, self.node_id))
        try:
            self._outbox.put_nowait((self._channel(doc_id), data))
        except asyncio.QueueFull:
            # Peers catch up from the database on the next message or resync.
            log.warning("fan-out queue full; dropping a message for %s", doc_id)

    def node_alive(self, node_id: str) -> bool:
        seen = self._nodes_seen.get(node_id)
        return seen is not None and time.monotonic() - seen < NODE_TIMEOUT_SECONDS

    # -- tasks ------------------------------------------------------------------------------

    def _lost(self, error: BaseException) -> None:
        if self._healthy:
            log.warning(
                "Redis unreachable (%s); serving local clients, polling the database", error
            )
        self._healthy = False

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(self._nodes_channel(), *self._channels)
                was_down = not self._healthy
                self._healthy = True
                self._subscribed.set()
                delay = 0.1
                if was_down:
                    log.info("Redis reachable; resynchronising documents from the database")
                    self._on_reconnect()
                async for raw in self._pubsub.listen():
                    self._dispatch(raw)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._lost(error)
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                    self._pubsub = None
                await asyncio.sleep(delay)  # reconnect backoff
                delay = min(delay * 2, 2.0)

    def _dispatch(self, raw: dict[str, Any]) -> None:
        if raw.get("type") != "message":
            return
        channel = raw["channel"].decode() if isinstance(raw["channel"], bytes) else raw["channel"]
        try:
            wire = orjson.loads(raw["data"])
        except orjson.JSONDecodeError:
            return
        node = wire.get("node") if isinstance(wire, dict) else None
        if not isinstance(node, str):
            return
        self._nodes_seen[node] = time.monotonic()
        if node == self.node_id or channel == self._nodes_channel():
            return
        doc_id = channel[len(self._prefix) + len("doc:") :]
        message = from_wire(wire)
        if message is None:
            log.warning("unreadable fan-out message for %s", doc_id)
            return
        try:
            self._on_message(doc_id, node, message)
        except Exception:
            log.exception("fan-out message for %s failed", doc_id)

    async def _publish_loop(self) -> None:
        while True:
            channel, data = await self._outbox.get()
            while True:
                try:
                    await self._redis.publish(channel, data)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self._lost(error)
                    await asyncio.sleep(0.2)  # retry until Redis is back; order is kept

    async def _heartbeat(self) -> None:
        beat = orjson.dumps({"node": self.node_id})
        while True:
            with contextlib.suppress(Exception):
                await self._redis.publish(self._nodes_channel(), beat)
            await asyncio.sleep(HEARTBEAT_SECONDS)
