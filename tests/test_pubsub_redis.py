"""The lean Redis connection (``collab.pubsub.resp``) and ``RedisPubSub`` on it, against a real
Redis: the machine's at COLLAB_TEST_REDIS_URL, and private ``redis-server`` processes for
passwords, outages and a server that stops answering."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from collab.pubsub.messages import (
    Committed,
    Message,
    PeerLeft,
    PeerSeen,
    Who,
    YjsUpdates,
    to_wire,
)
from collab.pubsub.redis import RedisPubSub
from collab.pubsub.resp import (
    RedisAddress,
    RedisError,
    RespConnection,
    encode_command,
    encode_publishes,
    parse_redis_url,
)
from collab.types import StoredOp
from tests.support import free_port, redis_url, services_required, wait_for

# -- pure parts -----------------------------------------------------------------------------


def test_urls_are_read_as_redis_py_reads_them() -> None:
    assert parse_redis_url("redis://example.org") == RedisAddress(
        "example.org", 6379, False, None, None
    )
    assert parse_redis_url("rediss://alice:p%40ss@10.0.0.1:6380/3") == RedisAddress(
        "10.0.0.1", 6380, True, "alice", "p@ss"
    )
    assert parse_redis_url("redis://:secret@h/0") == RedisAddress("h", 6379, False, None, "secret")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("unix:///run/redis.sock", "unix:// scheme is not supported"),
        ("redis://h:6379/0?ssl_cert_reqs=none", "query options"),
        ("redis:///0", "no host"),
    ],
)
def test_unsupported_urls_are_refused_at_start(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_redis_url(url)
    with pytest.raises(ValueError, match=reason):
        RedisPubSub(url, "x:")


def test_commands_are_encoded_as_resp_arrays() -> None:
    assert encode_command("AUTH", b"u", "pw") == b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$2\r\npw\r\n"
    assert encode_publishes([(b"c", b"1"), (b"dd", b"")]) == (
        b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\n1\r\n"
        b"*3\r\n$7\r\nPUBLISH\r\n$2\r\ndd\r\n$0\r\n\r\n"
    )


@pytest.mark.parametrize(
    "message",
    [
        Committed((StoredOp(1, ["a"], "s", 1, "u", datetime(2026, 1, 1, tzinfo=UTC)),)),
        PeerSeen("join", "c", "u", "n", {"anchor": 1, "head": 1}, 3),
        PeerLeft("c", "u", "n"),
        Who(),
        YjsUpdates((b"\x00\x01",)),
    ],
)
def test_the_wire_form_starts_with_the_node(message: Message) -> None:
    # How a process drops Redis's echo of its own messages without parsing them.
    assert orjson.dumps(to_wire(message, "n1")).startswith(b'{"node":"n1",')


# -- against Redis ----------------------------------------------------------------------------


@pytest.fixture
def url() -> str:
    found = redis_url()
    if found is None:
        if services_required():
            pytest.fail("COLLAB_REQUIRE_SERVICES=1 but COLLAB_TEST_REDIS_URL is not set")
        pytest.skip("needs COLLAB_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    return found


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


class PrivateRedis:
    """A ``redis-server`` of the test's own, to stop, freeze and start again."""

    def __init__(self, binary: str, directory: Path, *args: str) -> None:
        self.port = free_port()
        self._command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(directory), *args,
        ]  # fmt: skip

    def tls(self, cert: Path, key: Path) -> PrivateRedis:
        """Serves TLS only, on ``port``."""
        self._command += [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
            "--tls-key-file", str(key), "--tls-auth-clients", "no",
        ]  # fmt: skip
        return self
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self._spawn()
        await _until(self._answers)

    def _spawn(self) -> None:
        self.process = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def _answers(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    binary = shutil.which("redis-server")
    if binary is None:
        if services_required():
            pytest.fail("redis-server is not installed")
        pytest.skip("needs redis-server")
    made: list[PrivateRedis] = []

    def make(*args: str) -> PrivateRedis:
        made.append(PrivateRedis(binary, tmp_path, *args))
        return made[-1]

    yield make
    for server in made:
        if server.process is not None:
            server.signal(signal.SIGCONT)
        server.kill()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    # Polls state only Redis holds (subscriber counts, a port that answers): nothing to await.
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


class Node:
    """A ``RedisPubSub`` with what it heard."""

    def __init__(self, url: str, prefix: str) -> None:
        self.pubsub = RedisPubSub(url, prefix)
        self.heard: list[tuple[str, str, Message]] = []
        self.reconnects = 0
        self.pubsub.attach(lambda *item: self.heard.append(item), self._reconnected)

    def _reconnected(self) -> None:
        self.reconnects += 1

    def messages(self, doc_id: str) -> list[Message]:
        return [message for doc, _, message in self.heard if doc == doc_id]


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[[str, str], Awaitable[Node]]]:
    started: list[Node] = []

    async def start(url: str, prefix: str) -> Node:
        node = Node(url, prefix)
        started.append(node)
        await node.pubsub.start()
        return node

    yield start
    for node in started:
        await node.pubsub.close()


async def _subscribers(url: str, channel: str) -> int:
    client = Redis.from_url(url)
    try:
        counts: list[Any] = await client.pubsub_numsub(channel)
        return int(counts[0][1])
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_batch_is_published_in_order_in_one_round_trip(url: str, prefix: str) -> None:
    address = parse_redis_url(url)
    channel = f"{prefix}batch".encode()
    pushes: list[list[Any]] = []
    subscriber = await RespConnection.open(address, pushes.append)
    publisher = await RespConnection.open(address)
    try:
        subscriber.send(encode_command(b"SUBSCRIBE", channel))
        await wait_for(lambda: len(pushes) == 1)
        assert pushes.pop() == [b"subscribe", channel, 1]
        batch = [(channel, b"%d" % i) for i in range(2000)]
        assert await publisher.execute(encode_publishes(batch), len(batch)) == [1] * 2000
        await wait_for(lambda: len(pushes) == 2000)
        assert pushes == [[b"message", channel, data] for _, data in batch]
        subscriber.send(encode_command(b"UNSUBSCRIBE", channel))
        await wait_for(lambda: len(pushes) == 2001)
        assert pushes[-1] == [b"unsubscribe", channel, 0]
        assert await publisher.execute(encode_publishes(batch[:1]), 1) == [0]
        with pytest.raises(RedisError, match="ERR"):
            await publisher.execute(encode_command(b"NOSUCHCOMMAND"), 1)
    finally:
        await subscriber.close()
        await publisher.close()


@pytest.mark.redis
async def test_a_message_split_over_many_reads_arrives_whole(url: str, prefix: str) -> None:
    address = parse_redis_url(url)
    channel = f"{prefix}big".encode()
    payload = os.urandom(1 << 20)
    pushes: list[list[Any]] = []
    subscriber = await RespConnection.open(address, pushes.append)
    publisher = await RespConnection.open(address)
    try:
        subscriber.send(encode_command(b"SUBSCRIBE", channel))
        await wait_for(lambda: len(pushes) == 1)
        await publisher.execute(encode_publishes([(channel, payload), (channel, b"after")]), 2)
        await wait_for(lambda: len(pushes) == 3)
        assert pushes[1:] == [[b"message", channel, payload], [b"message", channel, b"after"]]
    finally:
        await subscriber.close()
        await publisher.close()


@pytest.mark.redis
async def test_auth_with_a_password(private_redis: Callable[..., PrivateRedis]) -> None:
    server = private_redis("--requirepass", "s3cr:et")
    await server.start()
    address = parse_redis_url(f"redis://:s3cr%3Aet@127.0.0.1:{server.port}/0")
    for auth in (address, parse_redis_url(f"redis://default:s3cr%3Aet@127.0.0.1:{server.port}")):
        connection = await RespConnection.open(auth)
        try:
            assert await connection.execute(encode_publishes([(b"c", b"x")]), 1) == [0]
        finally:
            await connection.close()
    wrong = parse_redis_url(f"redis://:nope@127.0.0.1:{server.port}")
    with pytest.raises(RedisError, match=r"WRONGPASS|invalid"):
        await RespConnection.open(wrong)
    anonymous = await RespConnection.open(parse_redis_url(f"redis://127.0.0.1:{server.port}"))
    try:
        with pytest.raises(RedisError, match="NOAUTH"):
            await anonymous.execute(encode_publishes([(b"c", b"x")]), 1)
    finally:
        await anonymous.close()


@pytest.mark.redis
async def test_nodes_hear_each_other_but_never_themselves(
    url: str, prefix: str, nodes: Callable[[str, str], Awaitable[Node]]
) -> None:
    a, b = await nodes(url, prefix), await nodes(url, prefix)
    assert a.pubsub.healthy and b.pubsub.healthy
    await a.pubsub.subscribe("doc")
    await b.pubsub.subscribe("doc")
    await _until(lambda: _has_subscribers(url, f"{prefix}doc:doc", 2))
    a.pubsub.publish("doc", PeerLeft("from-a", "u", "n"))
    await wait_for(lambda: len(b.heard) == 1)
    assert b.heard == [("doc", a.pubsub.node_id, PeerLeft("from-a", "u", "n"))]
    b.pubsub.publish("doc", PeerLeft("from-b", "u", "n"))
    # Redis delivers in order: a's echo of its own message came before b's, and was dropped.
    await wait_for(lambda: len(a.heard) == 1)
    assert a.heard == [("doc", b.pubsub.node_id, PeerLeft("from-b", "u", "n"))]
    # Heartbeats: each knows the other is alive.
    await wait_for(lambda: a.pubsub.node_alive(b.pubsub.node_id))
    await wait_for(lambda: b.pubsub.node_alive(a.pubsub.node_id))
    assert a.pubsub.node_alive(a.pubsub.node_id)
    assert not a.pubsub.node_alive("gone")


async def _has_subscribers(url: str, channel: str, count: int) -> bool:
    return await _subscribers(url, channel) == count


@pytest.mark.redis
async def test_unsubscribed_documents_are_no_longer_heard(
    url: str, prefix: str, nodes: Callable[[str, str], Awaitable[Node]]
) -> None:
    a, b = await nodes(url, prefix), await nodes(url, prefix)
    await b.pubsub.subscribe("one")
    await _until(lambda: _has_subscribers(url, f"{prefix}doc:one", 1))
    a.pubsub.publish("one", Who())
    await wait_for(lambda: len(b.heard) == 1)
    await b.pubsub.unsubscribe("one")
    await b.pubsub.subscribe("two")
    # Redis runs b's commands in order: once "two" is subscribed, "one" no longer is.
    await _until(lambda: _has_subscribers(url, f"{prefix}doc:two", 1))
    a.pubsub.publish("one", PeerLeft("lost", "u", "n"))
    a.pubsub.publish("two", PeerLeft("heard", "u", "n"))
    await wait_for(lambda: len(b.heard) == 2)
    assert [(doc, message) for doc, _, message in b.heard] == [
        ("one", Who()),
        ("two", PeerLeft("heard", "u", "n")),
    ]


@pytest.mark.redis
async def test_many_messages_and_a_large_one_arrive_in_order(
    url: str, prefix: str, nodes: Callable[[str, str], Awaitable[Node]]
) -> None:
    a, b = await nodes(url, prefix), await nodes(url, prefix)
    await b.pubsub.subscribe("doc")
    await _until(lambda: _has_subscribers(url, f"{prefix}doc:doc", 1))
    big = YjsUpdates((os.urandom(1 << 20),))
    sent: list[Message] = [PeerLeft(f"c{i}", "u", "n") for i in range(3000)]
    sent.insert(1500, big)
    for message in sent:
        a.pubsub.publish("doc", message)
    await wait_for(lambda: len(b.heard) == len(sent))
    assert b.messages("doc") == sent


@pytest.mark.redis
async def test_redis_restart_resubscribes_and_resynchronises(
    private_redis: Callable[..., PrivateRedis],
    prefix: str,
    nodes: Callable[[str, str], Awaitable[Node]],
) -> None:
    server = private_redis("--requirepass", "pw")
    await server.start()
    url = f"redis://:pw@127.0.0.1:{server.port}/0"
    a, b = await nodes(url, prefix), await nodes(url, prefix)
    await b.pubsub.subscribe("doc")
    assert (a.reconnects, b.reconnects) == (1, 1)  # the first connection counts as one
    server.kill()
    await wait_for(lambda: not b.pubsub.healthy)
    a.pubsub.publish("doc", Who())  # waits in a's outbox while Redis is gone
    await b.pubsub.subscribe("later")  # remembered, subscribed on reconnect
    await server.start()
    await wait_for(lambda: a.pubsub.healthy and b.pubsub.healthy)
    assert b.reconnects == 2
    await _until(lambda: _has_subscribers(url, f"{prefix}doc:later", 1))
    a.pubsub.publish("later", PeerLeft("after", "u", "n"))
    await wait_for(lambda: bool(b.messages("later")))
    assert b.messages("later") == [PeerLeft("after", "u", "n")]
    assert await _subscribers(url, f"{prefix}doc:doc") == 1


@pytest.mark.redis
async def test_a_redis_that_stops_answering_is_taken_as_lost(
    private_redis: Callable[..., PrivateRedis],
    prefix: str,
    nodes: Callable[[str, str], Awaitable[Node]],
) -> None:
    server = private_redis()
    await server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    a = await nodes(url, prefix)
    a.pubsub.silence_seconds = 1.5
    await a.pubsub.subscribe("doc")
    server.signal(signal.SIGSTOP)  # the TCP connection stays open, nothing answers
    await wait_for(lambda: not a.pubsub.healthy, timeout=10)
    server.signal(signal.SIGCONT)
    await wait_for(lambda: a.pubsub.healthy, timeout=10)
    assert a.reconnects == 2
    await _until(lambda: _has_subscribers(url, f"{prefix}doc:doc", 1))


@pytest.mark.redis
async def test_start_serves_when_redis_is_down(
    private_redis: Callable[..., PrivateRedis],
    prefix: str,
    nodes: Callable[[str, str], Awaitable[Node]],
) -> None:
    server = private_redis()  # not started yet
    a = await nodes(f"redis://127.0.0.1:{server.port}/0", prefix)
    assert not a.pubsub.healthy
    a.pubsub.publish("doc", Who())
    await a.pubsub.subscribe("doc")
    await server.start()
    await wait_for(lambda: a.pubsub.healthy)
    assert a.reconnects == 1


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own, and a certificate it signed for localhost: (CA, cert, key)."""
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, request = directory / "server.crt", directory / "server.key", directory / "req"
    extensions = directory / "ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid,issuer\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=t-ca"],
        ["req", *ec, "-keyout", key, "-out", request, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", extensions],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


@pytest.mark.redis
async def test_rediss_speaks_tls_and_verifies_the_certificate(
    private_redis: Callable[..., PrivateRedis], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make certificates")
    ca, cert, key = _certificates(tmp_path)
    server = private_redis().tls(cert, key)
    await server.start()
    address = parse_redis_url(f"rediss://localhost:{server.port}/0")
    with pytest.raises(ssl.SSLCertVerificationError):
        await RespConnection.open(address)  # the system's CAs do not know ours
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # read by ssl.create_default_context()
    connection = await RespConnection.open(address)
    try:
        assert await connection.execute(encode_publishes([(b"c", b"x")]), 1) == [0]
    finally:
        await connection.close()


@pytest.mark.redis
async def test_a_refused_publish_is_retried_in_order_and_resynchronises(
    private_redis: Callable[..., PrivateRedis],
    prefix: str,
    nodes: Callable[[str, str], Awaitable[Node]],
) -> None:
    server = private_redis()
    await server.start()
    admin = Redis.from_url(f"redis://127.0.0.1:{server.port}")
    try:
        # A user who may subscribe but not publish: Redis answers its PUBLISH with NOPERM.
        await admin.execute_command("ACL", "SETUSER", "pub", "on", ">pw", "~*", "&*", "+@all",
                                    "-publish")  # fmt: skip
        a = await nodes(f"redis://pub:pw@127.0.0.1:{server.port}/0", prefix)
        b = await nodes(f"redis://127.0.0.1:{server.port}/0", prefix)
        await b.pubsub.subscribe("doc")
        assert a.reconnects == 1
        sent = [PeerLeft(f"c{i}", "u", "n") for i in range(3)]
        for message in sent:
            a.pubsub.publish("doc", message)
        # Something may have been lost: a resubscribes and its documents resynchronise.
        await wait_for(lambda: a.reconnects >= 2)
        assert b.heard == []
        await admin.execute_command("ACL", "SETUSER", "pub", "+publish")
        await wait_for(lambda: len(b.heard) == len(sent))
        assert b.messages("doc") == sent
        await wait_for(lambda: a.pubsub.healthy)
    finally:
        await admin.aclose()
