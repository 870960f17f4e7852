"""Pub/sub through Redis (SPEC §6): every committed op, cursor, join and leave is published on
a per-document channel, and each process forwards what other processes published to its own
clients.

The database stays the single source of truth (``collab.pubsub.messages``): an actor that sees
a gap, or that was cut off from Redis, reads the missing ops from the database. Redis itself is
imported only when this module is, which the app does only when ``COLLAB_REDIS_URL`` is set.

Subscribing and publishing go through two lean connections of our own (``collab.pubsub.resp``);
redis-py serves the rest (tickets, readiness, heartbeats). Redis echoes every message to its
publisher: the wire form starts with the publishing node (``{"node":"<id>",…``), so our own
messages are dropped by a prefix test, before any JSON is parsed.
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
from collab.pubsub.resp import (
    RedisError,
    RespConnection,
    encode_command,
    encode_publishes,
    parse_redis_url,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
NODE_TIMEOUT_SECONDS = 10.0
PUBLISH_BATCH = 512  # messages per pipelined round trip at most
PUBLISH_SECONDS = 5.0  # a batch's replies not in by then: the connection is taken as lost
# Our own heartbeat comes back every HEARTBEAT_SECONDS: a subscriber that has heard nothing for
# this long pings, and one silent for SILENCE_SECONDS is taken as lost (a dead peer or route
# that never resets the TCP connection).
QUIET_SECONDS = 3.0
SILENCE_SECONDS = 8.0

_PING = encode_command("PING")


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
        self._own = b'{"node":"%b"' % self.node_id.encode()
        self._prefix = prefix
        self._doc_prefix = f"{prefix}doc:".encode()
        self._nodes = f"{prefix}nodes".encode()
        self._address = parse_redis_url(url)  # refuses what the lean connections cannot do
        self._redis: Redis = Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=5
        )
        self._on_message: OnMessage = _ignore_message
        self._on_reconnect: OnReconnect = _ignore_reconnect
        self._channels: set[bytes] = set()
        self._outbox: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue(maxsize=100_000)
        self._healthy = False
        self._nodes_seen: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriber: RespConnection | None = None
        self._confirmed = False  # the subscriber's first PONG: every SUBSCRIBE before it holds
        self._publisher: RespConnection | None = None
        self._subscribed = asyncio.Event()
        self.silence_seconds = SILENCE_SECONDS

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
        for connection in (self._subscriber, self._publisher):
            if connection is not None:
                await connection.close()
        self._subscriber = self._publisher = None
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

    def _channel(self, doc_id: str) -> bytes:
        return self._doc_prefix + doc_id.encode()

    async def subscribe(self, doc_id: str) -> None:
        channel = self._channel(doc_id)
        self._channels.add(channel)
        self._tell_subscriber(encode_command(b"SUBSCRIBE", channel))

    async def unsubscribe(self, doc_id: str) -> None:
        channel = self._channel(doc_id)
        self._channels.discard(channel)
        self._tell_subscriber(encode_command(b"UNSUBSCRIBE", channel))

    def _tell_subscriber(self, command: bytes) -> None:
        # Without a connection the channel set is enough: the next one subscribes to all of it.
        connection = self._subscriber
        if connection is None or connection.is_closing:
            return
        try:
            connection.send(command)
        except RedisError as error:
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
        if node_id == self.node_id:  # our own heartbeats are dropped unread
            return True
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
            connection: RespConnection | None = None
            try:
                connection = await RespConnection.open(self._address, self._push)
                self._confirmed = False
                self._subscriber = connection
                # Redis answers in order: the PING's reply means every subscription is in place.
                channels = (self._nodes, *self._channels)
                connection.send(encode_command(b"SUBSCRIBE", *channels) + _PING)
                await self._watch(connection)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._lost(error)
                self._subscriber = None
                if connection is not None:
                    connection.abort()
                if self._confirmed:  # it worked until now: the backoff starts again
                    delay = 0.1
                self._confirmed = False
                await asyncio.sleep(delay)  # reconnect backoff
                delay = min(delay * 2, 2.0)

    async def _watch(self, connection: RespConnection) -> None:
        """Returns never; raises once the subscriber connection is lost or has gone silent."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await connection.wait_closed()
            if connection.is_closing:
                raise connection.error or RedisError("Redis closed the connection")
            if self._confirmed and not self._healthy:
                # A publish failed: something may be lost, so subscribe afresh and resync.
                raise RedisError("publishing failed; subscribing again")
            silent = time.monotonic() - connection.last_read
            if silent > self.silence_seconds:
                raise RedisError(f"no word from Redis for {silent:.0f} s")
            if silent > min(QUIET_SECONDS, self.silence_seconds / 2):
                connection.send(_PING)

    def _push(self, push: list[Any]) -> None:
        kind = push[0]
        if kind == b"message":
            self._dispatch(push[1], push[2])
        elif kind == b"pong" and not self._confirmed:
            self._confirmed = True
            was_down = not self._healthy
            self._healthy = True
            self._subscribed.set()
            if was_down:
                log.info("Redis reachable; resynchronising documents from the database")
                self._on_reconnect()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if data.startswith(self._own):  # Redis echoes what we published
            return
        try:
            wire = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        node = wire.get("node") if isinstance(wire, dict) else None
        if not isinstance(node, str):
            return
        self._nodes_seen[node] = time.monotonic()
        if not channel.startswith(self._doc_prefix):
            return  # a heartbeat
        doc_id = channel[len(self._doc_prefix) :].decode()
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
            waiting = [await self._outbox.get()]
            while len(waiting) < PUBLISH_BATCH and not self._outbox.empty():
                waiting.append(self._outbox.get_nowait())
            while True:
                try:
                    await self._publish_all(waiting)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self._lost(error)
                    await asyncio.sleep(0.2)  # retry until Redis is back; order is kept

    async def _publish_all(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Every message queued meanwhile in one write and one round trip: one ``PUBLISH`` a
        round trip was most of a second process's extra CPU per op (docs/benchmarks.md)."""
        connection = self._publisher
        if connection is None or connection.is_closing:
            connection = await RespConnection.open(self._address)
            self._publisher = connection
        try:
            async with asyncio.timeout(PUBLISH_SECONDS):
                await connection.execute(encode_publishes(messages), len(messages))
        except BaseException:
            # Replies still due would be read as the next batch's: the next batch opens a new
            # connection (``close`` still waits for this one to be released).
            connection.abort()
            raise

    async def _heartbeat(self) -> None:
        beat = orjson.dumps({"node": self.node_id})
        while True:
            with contextlib.suppress(Exception):
                await self._redis.publish(self._nodes, beat)
            await asyncio.sleep(HEARTBEAT_SECONDS)
