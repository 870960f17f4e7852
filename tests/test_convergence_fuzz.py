"""Convergence under chaos: many clients, random edits, random drops and reconnects.

Each client here is a deliberately small OT client written against SPEC §4 (not
``collab.client``), so the server is checked against an independent reading of the protocol:
one op in flight, later edits composed into a buffer, remote ops transformed past both
(``p' = transform(p, s, "left")``, ``s' = transform(s, p, "right")``), and after a reconnect with
``?since=`` the missed ops replayed, its own in-flight op recognised by ``(src, seq)`` or resent
with the same ``(src, seq)``.

The choices (edits, texts, delays, drops) come from ``COLLAB_FUZZ_SEED`` (printed; a fixed seed by
default), so a failure's inputs can be replayed; the interleaving with the server still depends
on timing. Random sleeps shape the load; every wait for a result waits for the condition itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab import ot
from tests.support import ServerProcess, auth, recv_json, wait_for

DOC = "fuzzed"
ALPHABET = "abcdefgh xyz\n" + "😀🎉𝄞" + "e\u0301" + "ßé漢字"


def fuzz_seed() -> int:
    return int(os.environ.get("COLLAB_FUZZ_SEED", "20261124"))


class FuzzClient:
    """A minimal OT client: text, revision, one op in flight, a buffer of later edits."""

    def __init__(self, server: ServerProcess, index: int, rng: random.Random) -> None:
        self.server = server
        self.src = f"fuzz-{index}"
        self.rng = rng
        self.text = ""
        self.rev = 0
        self.seq = 0
        self.inflight: tuple[ot.Op, int] | None = None  # (op, seq), based on self.rev
        self.buffer: ot.Op | None = None
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.errors: list[dict[str, Any]] = []
        self.not_stored: set[int] = set()  # seqs acked without a revision (sent empty)
        self.reconnects = 0

    # -- the OT state machine --------------------------------------------------------------

    def edit(self) -> None:
        op = self.random_op()
        self.text = ot.apply(self.text, op)
        if self.inflight is None:
            self.seq += 1
            self.inflight = (op, self.seq)
            self.send_inflight()
        else:
            self.buffer = op if self.buffer is None else ot.compose(self.buffer, op)

    def random_op(self) -> ot.Op:
        length = len(self.text)
        position = self.rng.randint(0, length)
        prefix: ot.Op = [position] if position else []
        if length - position > 0 and self.rng.random() < 0.4:
            count = self.rng.randint(1, min(5, length - position))
            if self.rng.random() < 0.5:
                return [*prefix, {"d": count}]
            return [*prefix, {"d": self.text[position : position + count]}]
        inserted = "".join(self.rng.choice(ALPHABET) for _ in range(self.rng.randint(1, 4)))
        return [*prefix, inserted]

    def on_remote(self, rev: int, op: ot.Op, src: str, seq: int) -> None:
        if self.inflight is not None and (src, seq) == (self.src, self.inflight[1]):
            # Our own op, seen in a reconnect's missed ops or broadcast to our new connection.
            self.on_ack(seq, rev)
            return
        assert rev == self.rev + 1, f"{self.src}: got rev {rev} at {self.rev}"
        if self.inflight is not None:
            pending, pending_seq = self.inflight
            self.inflight = (ot.transform(pending, op, "left"), pending_seq)
            op = ot.transform(op, pending, "right")
        if self.buffer is not None:
            buffered = self.buffer
            self.buffer = ot.transform(buffered, op, "left")
            op = ot.transform(op, buffered, "right")
        self.text = ot.apply(self.text, op)
        self.rev = rev

    def on_ack(self, seq: int, rev: int) -> None:
        if self.inflight is None or seq != self.inflight[1]:
            # The re-ack of a resend whose original we already recognised: nothing to do.
            assert seq <= self.seq, f"{self.src}: ack for unsent seq {seq}"
            return
        # An op sent empty is acked at the current revision (docs/protocol.md); ours may have
        # become empty after it was sent, so either answer fits an empty one.
        empty = not ot.normalize(self.inflight[0])
        assert rev == self.rev + 1 or (empty and rev == self.rev), (
            f"{self.src}: ack at rev {rev} while at {self.rev}")
        if rev == self.rev:
            self.not_stored.add(seq)
        self.rev = rev
        self.inflight = None
        if self.buffer is not None:
            self.seq += 1
            self.inflight = (self.buffer, self.seq)
            self.buffer = None
            self.send_inflight()

    @property
    def synced(self) -> bool:
        return self.inflight is None and self.buffer is None

    # -- I/O ---------------------------------------------------------------------------------

    def send_inflight(self) -> None:
        assert self.inflight is not None
        op, seq = self.inflight
        frame = {"type": "op", "rev": self.rev, "op": op, "src": self.src, "seq": seq}
        if self.ws is not None:
            ws = self.ws
            task = asyncio.get_running_loop().create_task(self._send(ws, json.dumps(frame)))
            task.add_done_callback(lambda t: t.exception())

    async def _send(self, ws: ClientConnection, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):  # resent after the reconnect
            await ws.send(text)

    async def connect(self) -> None:
        query = {"since": self.rev} if self.ws is not None or self.rev else {}
        ws = await connect(self.server.ws_url(DOC, **query), additional_headers=auth(self.src),
                           max_queue=None)
        init = await recv_json(ws)
        if self.ws is None and not query:
            self.text, self.rev = init["content"], init["rev"]
        else:
            assert "ops" in init, f"{self.src}: history since {self.rev} not held"
            for item in init["ops"]:
                self.on_remote(item["rev"], item["op"], item["src"], item["seq"])
            assert self.rev == init["rev"]
        self.ws = ws
        self.reader = asyncio.create_task(self._read(ws))
        if self.inflight is not None:
            self.send_inflight()  # same (src, seq), rebased onto what we just caught up with

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                frame = json.loads(message)
                for item in frame["items"] if frame["type"] == "ops" else [frame]:
                    if item["type"] == "op":
                        self.on_remote(item["rev"], item["op"], item["src"], item["seq"])
                    elif item["type"] == "ack":
                        self.on_ack(item["seq"], item["rev"])
                    elif item["type"] == "error":
                        self.errors.append(item)
        except ConnectionClosed:
            pass

    async def drop(self) -> None:
        """Loses the connection, cleanly or as a network failure would, and reconnects."""
        assert self.ws is not None and self.reader is not None
        if self.rng.random() < 0.5:
            await self.ws.close()
        else:
            self.ws.transport.abort()
        await self.reader
        self.reconnects += 1
        await self.connect()

    async def run(self, edits: int) -> None:
        await self.connect()
        for _ in range(edits):
            await asyncio.sleep(self.rng.random() * 0.01)  # load shaping
            self.edit()
            if self.rng.random() < 0.06:
                await self.drop()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader


async def converge(server: ServerProcess, clients: int, edits: int, seed: int) -> None:
    print(f"\nconvergence fuzz: COLLAB_FUZZ_SEED={seed}, {clients} clients, {edits} edits each")
    fleet = [FuzzClient(server, i, random.Random(f"{seed}-{i}")) for i in range(clients)]
    try:
        await asyncio.gather(*(c.run(edits) for c in fleet))
        await wait_for(lambda: all(c.synced for c in fleet), timeout=60)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            document = (await http.get(f"/documents/{DOC}", headers=auth())).json()
            final_rev = document["rev"]
            await wait_for(lambda: all(c.rev == final_rev for c in fleet), timeout=60)
            history = []
            since: int | None = 0
            while since is not None:
                page = (await http.get(f"/documents/{DOC}/history",
                                       params={"since": since, "limit": 1000},
                                       headers=auth())).json()
                history += page["ops"]
                since = page["next"]
    finally:
        await asyncio.gather(*(c.close() for c in fleet))

    assert not [e for c in fleet for e in c.errors], [e for c in fleet for e in c.errors]
    assert [o["rev"] for o in history] == list(range(1, final_rev + 1))
    duplicates = [k for k, n in Counter((o["src"], o["seq"]) for o in history).items() if n > 1]
    assert not duplicates, f"applied twice: {duplicates}"
    replayed = ""
    for o in history:
        replayed = ot.apply(replayed, o["op"])
    assert replayed == document["content"]
    for c in fleet:
        assert c.text == document["content"], c.src
        # Every op a client sent is stored once, so its seqs are exactly 1..seq (but those
        # sent empty, which make no revision).
        assert sorted(o["seq"] for o in history if o["src"] == c.src) == [
            seq for seq in range(1, c.seq + 1) if seq not in c.not_stored
        ]
    astral = sum(1 for ch in document["content"] if ord(ch) > 0xFFFF)
    print(f"converged at rev {final_rev}: {len(document['content'])} code points "
          f"({astral} astral), {sum(c.reconnects for c in fleet)} reconnects")


async def test_clients_converge_through_drops_and_reconnects(server: ServerProcess) -> None:
    await converge(server, clients=12, edits=60, seed=fuzz_seed())


@pytest.mark.postgres
async def test_clients_converge_on_postgres(
    server_factory: Callable[..., ServerProcess], postgres_database: str
) -> None:
    server = server_factory(database_url=postgres_database)
    await converge(server, clients=8, edits=30, seed=fuzz_seed())


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(5))
async def test_clients_converge_long(server: ServerProcess, round_: int) -> None:
    await converge(server, clients=20, edits=300, seed=fuzz_seed() + round_)
