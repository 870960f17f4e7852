"""One load-generating process of the benchmark: many WebSocket clients in one event loop.

``run.py`` starts several of these so the clients do not share one core with each other or
with the server. Each process talks JSON lines with ``run.py``:

    stdin   {"protocol": ..., "clients": [[doc, src], ...], "mode": ..., ...}   (the config)
    stdout  {"event": "ready", ...}        every client connected and synced
    stdin   {"cmd": "go", "start": t, "measure": t, "end": t}   (time.monotonic() values)
    stdout  {"event": "drained", "revs": {doc: rev}}   clients idle, nothing in flight
    stdin   {"cmd": "verify", "revs": {doc: rev}}   the final revision of every document
    stdout  {"event": "done", "stats": {...}, "hashes": {doc: [sha1 of each client's text]}}

A full client is a real editor: the package's own OT client, :class:`collab.client.OTClientState`
(the state machine of ``collab.client.CollabClient``, the same steps as the browser client), with
``collab.ot`` underneath, so the ops it sends are valid against the server's document, the final
texts can be compared, and the benchmark measures the client users run. Clients type at a
cursor; each insert is a token ``[t]`` where ``t`` is ``time.monotonic_ns() // 1000`` when it
was typed. CLOCK_MONOTONIC is system-wide on Linux, so a
peer in another process reads the latency of a keystroke straight from the op it receives.

With ``full_clients`` in the config (the crowd scenario), only that many clients of the process
are full; the others are light typists (:class:`LightClient`): they keep no text, type
length-preserving replaces inside a seeded prefix of the document, and sample peer latency on a
share of the frames they receive. Hundreds of full editors on one document cost the load
generator more CPU than the server (each applies every op), so it could not produce the load.

Two protocol adapters speak to the servers: collab's frames (SPEC §4) and ShareDB's wire
protocol (``hs`` handshake, ``s`` subscribe, ``op`` with ``v``/``src``/``seq``), which the
adapter turns into collab's frames for the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import re
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

import orjson
from websockets.exceptions import InvalidState

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
    uvloop = None

from wsclient import Closed, LeanSocket, connect

from collab import ot
from collab.client import Frame, OTClientState

# A document grows to about this many characters; then each keystroke also deletes as many
# characters as it inserts, so the text (and the cost of applying an op) stays bounded.
TARGET_LENGTH = 2000
# A light client measures peer latency on one frame in this many (chosen at random), and each
# sample counts this many times in the histogram, so the percentiles stay those of all ops.
PEER_SAMPLE = 8
_NUMBER = re.compile(rb"\d+")
_ACK = b'{"type":"ack","seq":'  # how the server writes an ack (collab.protocol.ack_frame)
CONNECT_CONCURRENCY = 64
DRAIN_TIMEOUT = 20.0
VERIFY_TIMEOUT = 20.0


class Histogram:
    """Latencies in log-spaced bins (2 % wide, 1 µs … ~100 s): mergeable, small, ±1 %."""

    BASE = 1e-6
    STEP = math.log(1.02)
    SIZE = 950

    def __init__(self, counts: list[int] | None = None) -> None:
        self.counts = counts if counts is not None else [0] * self.SIZE

    def add(self, seconds: float, weight: int = 1) -> None:
        if seconds <= self.BASE:
            index = 0
        else:
            index = min(int(math.log(seconds / self.BASE) / self.STEP), self.SIZE - 1)
        self.counts[index] += weight

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n

    @property
    def total(self) -> int:
        return sum(self.counts)

    def percentile(self, p: float) -> float | None:
        """The p-th percentile in seconds (bin midpoint), or None without samples."""
        total = self.total
        if total == 0:
            return None
        rank = max(1, math.ceil(total * p / 100))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return self.BASE * math.exp((index + 0.5) * self.STEP)
        return None


def stamps(op: list[Any]) -> Iterator[int]:
    """The typing times (µs) carried by the inserts of an op."""
    for c in op:
        if c.__class__ is str and c[0] == "[" and c[-1] == "]":
            for piece in c[1:-1].split("]["):
                if piece.isdigit():
                    yield int(piece)


# -- protocol adapters -----------------------------------------------------------------------
#
# Each adapter speaks one server's wire protocol and hands the clients collab's frames (SPEC §4),
# so one state machine, collab.client.OTClientState, runs the full clients of both servers.


class CollabProtocol:
    """collab's frames: ``init``, ``op``/``ack`` possibly batched in ``ops`` (SPEC §4)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token

    def url(self, doc: str) -> str:
        return f"{self.base_url}/ws/documents/{doc}?token={self.token}"

    async def open(self, ws: LeanSocket, client: Editor) -> Frame:
        frame: Frame = orjson.loads(await ws.recv())
        if frame.get("type") != "init":
            raise RuntimeError(f"expected init, got {frame!r}")
        return frame

    def encode_op(self, client: Editor, frame: Frame) -> bytes:
        return orjson.dumps(frame)

    def handle(self, client: Editor, raw: str | bytes) -> None:
        client.on_frame(orjson.loads(raw))


class ShareDBProtocol:
    """ShareDB 7's wire protocol (lib/agent.js, lib/client/connection.js and doc.js)."""

    COLLECTION = "bench"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def url(self, doc: str) -> str:
        return self.base_url

    async def open(self, ws: LeanSocket, client: Editor) -> Frame:
        init = orjson.loads(await ws.recv())  # the legacy "init" the agent sends first
        if init.get("a") != "init":
            raise RuntimeError(f"expected init, got {init!r}")
        # Our handshake id becomes the agent's src, so acks carry the src we chose.
        await ws.send(orjson.dumps(
            {"a": "hs", "id": client.src, "protocol": 1, "protocolMinor": 2}).decode())
        reply = orjson.loads(await ws.recv())
        if reply.get("a") != "hs" or reply.get("id") != client.src:
            raise RuntimeError(f"bad handshake reply {reply!r}")
        await ws.send(orjson.dumps(
            {"a": "s", "c": self.COLLECTION, "d": client.doc, "v": None}).decode())
        while True:
            reply = orjson.loads(await ws.recv())
            if reply.get("a") == "s":
                break
        if "error" in reply:
            raise RuntimeError(f"subscribe failed: {reply['error']!r}")
        data = reply["data"]
        return {"type": "init", "rev": data["v"], "content": data["data"], "client": client.src}

    def encode_op(self, client: Editor, frame: Frame) -> bytes:
        return orjson.dumps({
            "a": "op", "c": self.COLLECTION, "d": client.doc, "v": frame["rev"],
            "src": frame["src"], "seq": frame["seq"], "op": frame["op"],
        })

    def handle(self, client: Editor, raw: str | bytes) -> None:
        message = orjson.loads(raw)
        if message.get("a") != "op":
            return
        # ShareDB's v is the version an op applies to; collab's rev the one it makes.
        if "error" in message:
            client.on_frame({"type": "error", "code": "sharedb", "message": str(message["error"]),
                             "seq": message.get("seq")})
        elif "op" in message:
            client.on_frame({"type": "op", "rev": message["v"] + 1, "op": message["op"],
                             "src": message.get("src", ""), "seq": message.get("seq", 0)})
        elif message.get("src") == client.src:
            client.on_frame({"type": "ack", "seq": message["seq"], "rev": message["v"] + 1})


Protocol = CollabProtocol | ShareDBProtocol


# -- editors ---------------------------------------------------------------------------------


class Editor:
    """One WebSocket client of the load: connection, reading and sending. Subclasses type."""

    full = True

    def __init__(self, driver: Driver, doc: str, src: str, seed: int) -> None:
        self.driver = driver
        self.doc = doc
        self.src = src
        self.rng = random.Random(seed)
        self.ws: LeanSocket | None = None
        self.pending_sent = 0.0
        self.outgoing: bytes | None = None
        self.closed = False

    @property
    def rev(self) -> int:
        raise NotImplementedError

    @property
    def idle(self) -> bool:
        raise NotImplementedError

    def type_one(self) -> None:
        raise NotImplementedError

    def on_init(self, frame: Frame) -> None:
        raise NotImplementedError

    def on_frame(self, frame: Frame) -> None:
        raise NotImplementedError

    def _send(self, frame: Frame) -> None:
        self.pending_sent = time.monotonic()
        self.outgoing = self.driver.protocol.encode_op(self, frame)

    def on_error(self, frame: Frame) -> None:
        self.driver.errors += 1
        if self.driver.errors <= 5:
            print(f"driver: {self.src}: error {frame!r}", file=sys.stderr)

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> None:
        protocol = self.driver.protocol
        self.ws = await connect(protocol.url(self.doc), timeout=60)
        self.on_init(await protocol.open(self.ws, self))

    def receive(self, raw: str | bytes) -> None:
        self.driver.protocol.handle(self, raw)

    async def read_loop(self) -> None:
        """Handles every message in the socket's own callback, and the reply in the same call:
        no task wakes per message (wsclient.py). Ends when the connection does."""
        ws = self.ws
        assert ws is not None
        driver = self.driver
        receive = self.receive

        def on_message(raw: bytes) -> None:
            if driver.measure_from <= time.monotonic() < driver.end:
                driver.messages += 1
            try:
                receive(raw)
                self.send_outgoing()
            except RuntimeError as error:
                # A protocol surprise (gap, stray ack): count it, stop this client, keep the run.
                driver.failures.append(str(error))
                ws.on_message = None
                asyncio.get_running_loop().create_task(ws.close())
            except Closed:
                pass

        for raw in ws.drain():  # whatever arrived during the caller's handshake
            on_message(raw)
        ws.on_message = on_message
        try:
            await asyncio.shield(ws.closed)
        finally:
            self.closed = True
            driver.changed.set()

    def send_outgoing(self) -> None:
        if self.outgoing is not None and self.ws is not None:
            outgoing, self.outgoing = self.outgoing, None
            try:
                self.ws.send_text(outgoing)
            except InvalidState:
                raise Closed("connection closing") from None

    async def flush(self) -> None:
        with contextlib.suppress(Closed):
            self.send_outgoing()

    def text_hash(self) -> str:
        raise NotImplementedError


class Client(Editor):
    """A full editor: the package's own OT client state machine (collab.client.OTClientState),
    text kept, every op applied and measured."""

    def __init__(self, driver: Driver, doc: str, src: str, seed: int) -> None:
        super().__init__(driver, doc, src, seed)
        self.state = OTClientState(src)

    @property
    def rev(self) -> int:
        return self.state.rev

    @property
    def idle(self) -> bool:
        return self.state.pending is None

    def on_init(self, frame: Frame) -> None:
        self.state.receive({"client": self.src, "peers": [], **frame})
        # Where this editor types; the state machine moves it over every op (it is never sent:
        # no presence in the benchmark).
        self.state.cursor = {"anchor": 0, "head": 0}

    def type_one(self) -> None:
        """One keystroke at the cursor: applied locally, then sent or buffered."""
        state = self.state
        token = f"[{time.monotonic_ns() // 1000}]"
        length = len(state.text)
        assert state.cursor is not None
        cursor = min(state.cursor["head"], length)
        delete = 0
        if length >= TARGET_LENGTH:
            delete = len(token)
            if length - cursor < delete:
                if state.pending is None:
                    cursor = self.rng.randrange(0, length - delete + 1)
                else:
                    delete = 0  # never move the cursor into text that is still in flight
        op: ot.Op = [cursor, token] if cursor else [token]
        if delete:
            op.append({"d": delete})
        frames = state.submit(op)
        state.cursor = {"anchor": cursor + len(token), "head": cursor + len(token)}
        self.driver.typed += self.driver.measuring
        if frames:
            self._send(frames[0])

    def on_frame(self, frame: Frame) -> None:
        if frame["type"] == "ops":
            for item in frame["items"]:
                self.on_frame(item)
            return
        driver = self.driver
        state = self.state
        if frame["type"] == "op" and frame["rev"] == state.rev + 1:
            now = time.monotonic()
            if driver.measure_from <= now < driver.end:
                driver.deliveries += 1
                now_us = time.monotonic_ns() // 1000
                peer = driver.peer
                for typed in stamps(frame["op"]):
                    peer.add((now_us - typed) / 1e6)
        fx = state.receive(frame)
        for event in fx.events:
            if event.kind == "ack":
                now = time.monotonic()
                if driver.measure_from <= now < driver.end:
                    driver.acks += 1
                    driver.ack.add(now - self.pending_sent)
            elif event.kind == "error":
                if event.data.get("code") == "gap":
                    driver.gaps += 1
                self.on_error(event.data)
        if fx.reconnect or fx.history is not None or fx.retry is not None:
            raise RuntimeError(f"{self.src}: {[e.data for e in fx.events if e.kind == 'error']}")
        driver.changed.set()
        if fx.send:
            self._send(fx.send[0])  # the buffer, after the ack of the op before it
        elif (
            state.pending is None
            and any(e.kind == "ack" for e in fx.events)
            and driver.mode == "closed"
            and driver.start <= time.monotonic() < driver.end
        ):
            self.type_one()

    def text_hash(self) -> str:
        return hashlib.sha1(self.state.text.encode("utf-8", "surrogatepass")).hexdigest()


class LightClient(Editor):
    """A typist that keeps no text: cheap enough to run hundreds per process on one document.

    Its keystrokes are length-preserving replaces inside the first ``seed_length`` characters,
    ``[pos, "[t]", {"d": len("[t]")}]``. No op on the benchmark document makes it shorter (full
    clients replace too, and the server's transform only shrinks a delete that overlaps a
    concurrent one), and the document starts with ``seed_length`` characters, so such an op is
    valid at every revision: it can be sent with the newest revision the client knows, with no
    OT here.
    Keystrokes typed while an op is in flight are sent together when it is acked, as one
    replace of as many characters (``"[t1][t2]"``), like a full client's composed buffer.

    Incoming frames are only parsed for their revisions (gaps are errors) and, if the frame
    holds an ``ack``, for this client's ack. Peer latency is read from the tokens of a random
    :data:`PEER_SAMPLE`-th of the frames; each sample is weighted by :data:`PEER_SAMPLE`.
    """

    full = False

    def __init__(self, driver: Driver, doc: str, src: str, seed: int, seed_length: int) -> None:
        super().__init__(driver, doc, src, seed)
        self.seed_length = seed_length
        self.tokens: list[str] = []
        self._rev = 0
        self.seq = 0
        self.pending: bool = False

    @property
    def rev(self) -> int:
        return self._rev

    def on_init(self, frame: Frame) -> None:
        self._rev = frame["rev"]

    def type_one(self) -> None:
        token = f"[{time.monotonic_ns() // 1000}]"
        self.driver.typed += self.driver.measuring
        if not self.pending:
            self._send_tokens(token)
        else:
            self.tokens.append(token)

    def _send_tokens(self, text: str) -> None:
        # Past seed_length characters of buffered tokens (a badly stalled server), the op
        # inserts more than it deletes: still valid, and it only makes the document longer.
        delete = min(len(text), self.seed_length)
        pos = self.rng.randrange(self.seed_length - delete + 1)
        op: ot.Op = [pos, text, {"d": delete}] if pos else [text, {"d": delete}]
        self.seq += 1
        self.pending = True
        self._send({"type": "op", "rev": self._rev, "op": op, "src": self.src, "seq": self.seq})

    def receive(self, raw: str | bytes) -> None:
        data = cast(bytes, raw)
        if not data.startswith((b'{"type":"op', b'{"type":"ack"')):
            frame = orjson.loads(data)
            if frame["type"] == "error":
                self.on_error(frame)
            return  # join, leave, presence: nothing a light typist needs
        # An op, ack or ops frame: only its revisions are read, straight from the bytes, as
        # parsing every item of every frame cost most of this client's CPU. The server writes
        # "rev" once per item, and a light typist's document holds only digits, brackets
        # and dots, so the count and the first and last numbers are those of the items.
        count = data.count(b'"rev":')
        if count == 0:
            return
        first = int(_NUMBER.match(data, data.find(b'"rev":') + 6)[0])  # type: ignore[index]
        last = int(_NUMBER.match(data, data.rfind(b'"rev":') + 6)[0])  # type: ignore[index]
        driver = self.driver
        # Revisions in a frame rise, so a right first, last and count means no gap.
        if first != self.rev + 1 or last - first != count - 1:
            driver.gaps += 1
            raise RuntimeError(f"{self.src}: ops {first}..{last}, expected {self.rev + 1}")
        acked = 0
        ack_at = data.find(_ACK)  # at most one: one op in flight
        if ack_at >= 0:
            seq = int(_NUMBER.match(data, ack_at + len(_ACK))[0])  # type: ignore[index]
            if not self.pending or seq != self.seq:
                driver.errors += 1
                raise RuntimeError(f"{self.src}: unexpected ack of seq {seq}")
            acked = 1
        self._rev = last
        now = time.monotonic()
        if driver.measure_from <= now < driver.end:
            driver.deliveries += count - acked
            if self.rng.random() * PEER_SAMPLE < 1.0:
                frame = orjson.loads(data)
                now_us = time.monotonic_ns() // 1000
                peer = driver.peer_light
                for item in frame["items"] if frame["type"] == "ops" else [frame]:
                    if item["type"] == "op":
                        for typed in stamps(item["op"]):
                            peer.add((now_us - typed) / 1e6, PEER_SAMPLE)
                            driver.peer_samples += 1
            if acked:
                driver.acks += 1
                driver.ack.add(now - self.pending_sent)
        if acked:
            self.pending = False
            if self.tokens:
                text = "".join(self.tokens)
                self.tokens = []
                self._send_tokens(text)
        driver.changed.set()

    @property
    def idle(self) -> bool:
        return not self.pending and not self.tokens


# -- the process -----------------------------------------------------------------------------


class Driver:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        if config["protocol"] == "collab":
            self.protocol: Protocol = CollabProtocol(config["url"], config["token"])
        else:
            self.protocol = ShareDBProtocol(config["url"])
        self.mode: str = config["mode"]  # closed | open | idle
        self.rate: float = config.get("rate", 5.0)
        seed = config.get("seed", 1)
        # None: every client is full (every scenario but the crowd).
        full_clients: int | None = config.get("full_clients")
        seed_length: int = config.get("seed_length", 0)
        if full_clients is not None and (
            not isinstance(self.protocol, CollabProtocol) or self.mode != "open"
        ):
            raise ValueError("light clients speak collab's protocol and type open-loop only")
        if full_clients is not None and seed_length <= 0:
            raise ValueError("light clients need the length of the document's seed text")
        self.clients: list[Editor] = [
            Client(self, doc, src, seed * 100_003 + i)
            if full_clients is None or i < full_clients
            else LightClient(self, doc, src, seed * 100_003 + i, seed_length)
            for i, (doc, src) in enumerate(config["clients"])
        ]
        self.start = self.measure_from = self.end = math.inf
        self.typed = 0
        self.acks = 0
        self.deliveries = 0
        self.messages = 0
        self.errors = 0
        self.gaps = 0
        self.peer_samples = 0
        self.connect_failures = 0
        self.failures: list[str] = []
        self.ack = Histogram()
        self.peer = Histogram()
        # Kept apart so the sampled light figures can be checked against the full clients'.
        self.peer_light = Histogram()
        self.readers: list[asyncio.Task[None]] = []
        self.changed = asyncio.Event()  # set whenever a client's state moves (for _wait)

    @property
    def measuring(self) -> int:
        now = time.monotonic()
        return 1 if self.measure_from <= now < self.end else 0

    async def run(self) -> None:
        await self._connect_all()
        emit({"event": "ready", "connected": len(self.clients), "failed": self.connect_failures})
        go = await command()
        self.start, self.measure_from, self.end = go["start"], go["measure"], go["end"]
        cpu_before = time.process_time()
        cpu_at_measure = cpu_before
        workers = []
        if self.mode == "closed":
            workers = [asyncio.create_task(self._closed_start(c)) for c in self.clients]
        elif self.mode == "open":
            workers = [asyncio.create_task(self._typist(c)) for c in self.clients]
        await asyncio.sleep(max(0.0, self.measure_from - time.monotonic()))
        cpu_at_measure = time.process_time()
        await asyncio.sleep(max(0.0, self.end - time.monotonic()))
        cpu_measured = time.process_time() - cpu_at_measure
        # A typist can be stuck in a send the server is too busy to read; don't wait forever.
        if workers:
            _, stuck = await asyncio.wait(workers, timeout=DRAIN_TIMEOUT)
            for task in stuck:
                task.cancel()
        await self._wait(lambda c: c.idle or c.closed, DRAIN_TIMEOUT)
        revs: dict[str, int] = {}
        for c in self.clients:
            revs[c.doc] = max(revs.get(c.doc, 0), c.rev)
        emit({"event": "drained", "revs": revs})
        verify = await command()
        final: dict[str, int] = verify["revs"]
        await self._wait(lambda c: c.closed or c.rev >= final.get(c.doc, 0), VERIFY_TIMEOUT)
        hashes: dict[str, list[str]] = {}
        behind = 0
        for c in self.clients:
            if c.rev != final.get(c.doc, c.rev) or not c.idle:
                behind += 1
            if c.full:  # light clients have no text to compare; reaching the revision is theirs
                hashes.setdefault(c.doc, []).append(c.text_hash())
        light = sum(not c.full for c in self.clients)
        peer = Histogram(list(self.peer.counts))
        peer.merge(self.peer_light)
        closed = sum(c.closed for c in self.clients)
        stats = {
            "clients": len(self.clients),
            "light": light,
            "peer_sample": PEER_SAMPLE if light else 1,
            "peer_samples": self.peer_samples,
            "typed": self.typed,
            "acks": self.acks,
            "deliveries": self.deliveries,
            "messages": self.messages,
            "errors": self.errors,
            "gaps": self.gaps,
            "behind": behind,
            "closed_early": closed,
            "failures": self.failures[:5],
            "cpu_seconds": cpu_measured,
            "ack_hist": self.ack.counts,
            "peer_hist": peer.counts,
            "peer_full_hist": self.peer.counts,
            "peer_light_hist": self.peer_light.counts,
        }
        emit({"event": "done", "stats": stats, "hashes": hashes})
        await self._close_all()

    async def _connect_all(self) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(client: Editor) -> None:
            async with gate:
                for attempt in range(3):
                    try:
                        await client.connect()
                        return
                    except (OSError, TimeoutError, Closed) as error:
                        if attempt == 2:
                            raise RuntimeError(f"{client.src} could not connect: {error}") from None
                        await asyncio.sleep(0.2 * (attempt + 1))  # backoff before a retry

        await asyncio.gather(*(one(c) for c in self.clients))
        self.readers = [asyncio.create_task(c.read_loop()) for c in self.clients]

    async def _closed_start(self, client: Editor) -> None:
        await asyncio.sleep(max(0.0, self.start - time.monotonic()))
        if not client.closed and client.idle:
            client.type_one()
            await client.flush()

    async def _typist(self, client: Editor) -> None:
        """Types ``rate`` keystrokes a second from ``start`` to ``end``, whatever the acks do."""
        interval = 1.0 / self.rate
        due = self.start + client.rng.random() * interval
        while due < self.end and not client.closed:
            # A schedule of keystrokes, not synchronisation: open-loop load is by the clock.
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            client.type_one()
            await client.flush()
            due += interval

    async def _wait(self, done: Any, limit: float) -> None:
        """Waits until ``done(client)`` holds for every client, or ``limit`` seconds pass."""
        deadline = time.monotonic() + limit
        while not all(done(c) for c in self.clients):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def _close_all(self) -> None:
        async def close(client: Editor) -> None:
            if client.ws is not None:
                with contextlib.suppress(TimeoutError, Closed, OSError):
                    await asyncio.wait_for(client.ws.close(), 3)

        gate = asyncio.Semaphore(CONNECT_CONCURRENCY * 4)

        async def gated(client: Editor) -> None:
            async with gate:
                await close(client)

        await asyncio.gather(*(gated(c) for c in self.clients))
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


async def command() -> dict[str, Any]:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise SystemExit("driver: run.py went away")
    message: dict[str, Any] = orjson.loads(line)
    return message


async def main() -> None:
    config = await command()
    driver = Driver(config)
    try:
        await driver.run()
    except Exception as error:
        emit({"event": "failed", "error": f"{type(error).__name__}: {error}"})
        raise


if __name__ == "__main__":
    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())
