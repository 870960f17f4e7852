"""A lean Redis connection for the fan-out's hot path: RESP bytes out, ``hiredis`` replies in.

redis-py's PubSub and pipelines cost about 20-30 µs of CPU per message in their Python layers
(dicts per message, retries, timeouts, locks); ``hiredis.Reader`` parses a message in about
1 µs. ``RedisPubSub`` uses this connection to subscribe and to publish, and keeps redis-py for
everything else (tickets, readiness).

A connection is in one of two modes, fixed when it is opened:

- **replies** (``on_push`` is None): each reply answers the oldest command still waiting,
  which is how ``PUBLISH`` batches are read back (one write, one round trip, order kept);
- **pushes** (``on_push`` is set, after ``AUTH``): every reply is handed to ``on_push`` as it
  is parsed, which is what a subscribed connection receives (``message``, ``subscribe``,
  ``unsubscribe`` and ``pong`` pushes).

Supported URLs (:func:`parse_redis_url`): ``redis://[[user]:password@]host[:port][/db]`` and
``rediss://`` (TLS, verified with the system's CAs). ``unix://`` and query options are refused.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis

DEFAULT_PORT = 6379
CONNECT_SECONDS = 2.0

Push = list[Any]
OnPush = Callable[[Push], None]


class RedisError(ConnectionError):
    """Redis refused a command, or the connection broke; either way the caller reconnects."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_redis_url(url: str) -> RedisAddress:
    """Where to connect, as redis-py reads the same URL for what collab supports.

    The database number is accepted and ignored: pub/sub channels are global to the server,
    whatever database a connection has selected.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"COLLAB_REDIS_URL: the {parts.scheme or 'missing'}:// scheme is not supported "
            "for pub/sub; use redis:// or rediss:// (TLS)"
        )
    if parts.query:
        raise ValueError(
            "COLLAB_REDIS_URL: query options (?…) are not supported for pub/sub; "
            "rediss:// always verifies the server's certificate"
        )
    if not parts.hostname:
        raise ValueError("COLLAB_REDIS_URL: no host")
    return RedisAddress(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORT,
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _bulk(value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_command(*args: bytes | str) -> bytes:
    """One command as a RESP array of bulk strings, ready to write."""
    return b"*%d\r\n" % len(args) + b"".join(_bulk(arg) for arg in args)


def encode_publishes(messages: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``PUBLISH channel data`` for each message, in order, as one buffer."""
    return b"".join(
        b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
        % (len(channel), channel, len(data), data)
        for channel, data in messages
    )


class _Batch:
    """Replies a write is waiting for."""

    __slots__ = ("future", "replies", "want")

    def __init__(self, future: asyncio.Future[list[Any]], want: int) -> None:
        self.future = future
        self.want = want
        self.replies: list[Any] = []


class RespConnection(asyncio.Protocol):
    """One TCP (or TLS) connection to Redis; open it with :meth:`open`."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[_Batch] = deque()
        self._on_push: OnPush | None = None
        self._closed: asyncio.Future[None] = loop.create_future()
        self._error: BaseException | None = None
        self.last_read = time.monotonic()

    @classmethod
    async def open(cls, address: RedisAddress, on_push: OnPush | None = None) -> RespConnection:
        """Connects (within ``CONNECT_SECONDS``) and authenticates; pushes go to ``on_push``."""
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if address.tls else None
        async with asyncio.timeout(CONNECT_SECONDS):
            _, connection = await loop.create_connection(
                cls,
                address.host,
                address.port,
                ssl=context,
                server_hostname=address.host if context is not None else None,
            )
            try:
                if address.password is not None:
                    user = (address.username,) if address.username else ()
                    auth = encode_command("AUTH", *user, address.password)
                    await connection.execute(auth, 1)
            except BaseException:
                connection.abort()
                raise
        connection._on_push = on_push
        return connection

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        reader = self._reader
        reader.feed(data)
        try:
            reply = reader.gets()
            while reply is not False and self._error is None:
                self._reply(reply)
                reply = reader.gets()
        except hiredis.ProtocolError as error:
            self._fail(RedisError(f"unreadable reply from Redis: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or RedisError("Redis closed the connection"))
        if not self._closed.done():
            self._closed.set_result(None)

    # -- use --------------------------------------------------------------------------------

    def _reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError) and self._on_push is not None:
            self._fail(RedisError(f"Redis: {reply}"))
            return
        if self._on_push is not None:
            self._on_push(reply)
            return
        if not self._waiting:
            self._fail(RedisError(f"unexpected reply from Redis: {reply!r:.100}"))
            return
        batch = self._waiting[0]
        batch.replies.append(reply)
        if len(batch.replies) == batch.want:
            self._waiting.popleft()
            if not batch.future.done():
                batch.future.set_result(batch.replies)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        while self._waiting:
            future = self._waiting.popleft().future
            if not future.done():
                future.set_exception(RedisError(str(error) or type(error).__name__))
        if self._transport is not None:
            self._transport.abort()

    @property
    def is_closing(self) -> bool:
        return self._error is not None or self._transport is None or self._transport.is_closing()

    def send(self, data: bytes) -> None:
        """Writes commands whose replies are not awaited (a subscribed connection's)."""
        if self.is_closing:
            raise RedisError(f"connection to Redis lost: {self._error}")
        assert self._transport is not None
        self._transport.write(data)

    async def execute(self, data: bytes, replies: int) -> list[Any]:
        """Writes ``data`` (``replies`` commands) and returns their replies, in order.

        An error reply raises :class:`RedisError` once all of the replies are in.
        """
        self.send(data)
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        self._waiting.append(_Batch(future, replies))
        result = await future
        for reply in result:
            if isinstance(reply, hiredis.ReplyError):
                raise RedisError(f"Redis: {reply}")
        return result

    async def wait_closed(self) -> None:
        """Returns once the connection is gone (closed by either side)."""
        await asyncio.shield(self._closed)

    @property
    def error(self) -> BaseException | None:
        """Why the connection failed, if it did."""
        return self._error

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        """Closes and waits until the transport is released (no warning is left behind)."""
        if self._transport is None:
            return
        self._transport.close()
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                await self.wait_closed()
        except TimeoutError:  # a TLS peer that never answers the close
            self._transport.abort()
            await self.wait_closed()
