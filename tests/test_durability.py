"""Crash durability: an acknowledged op survives SIGKILL, and a resend is applied exactly once.

A real server process takes a steady stream of ops from several clients and is killed with
SIGKILL mid-stream. After a restart on the same database, every op any client saw acknowledged
(or saw broadcast, which also happens only after the commit) is in the history at that revision.
Each client then reconnects with ``?since=`` and resends its unacknowledged op with the same
``(src, seq)``: the server applies it if the crash lost it, or acks it again with its original
revision if it had been committed, never both. docs/testing.md says which database settings make
this hold.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage

from collab import ot
from tests.support import ServerProcess, auth, recv_json, wait_for

DOC = "durable"


@dataclass
class Writer:
    """A client with at most one op in flight, which it keeps across connections."""

    src: str
    seq: int = 0
    rev: int = 0
    pending: tuple[int, int] | None = None  # (seq, base revision) sent but not yet acked
    acked: dict[int, int] = field(default_factory=dict)  # seq -> revision
    seen: dict[int, tuple[str, int]] = field(default_factory=dict)  # revision -> (src, seq)
    resends: list[tuple[int, int]] = field(default_factory=list)  # (seq, revision acked)
    reacked: int = 0  # resends the server had committed before the crash

    def text(self, seq: int) -> str:
        return f"<{self.src}.{seq}>"

    async def _send(self, ws: Any, seq: int, base_rev: int) -> None:
        self.pending = (seq, base_rev)
        # An insert at the start fits any revision, so a stale base is never invalid.
        frame = {"type": "op", "rev": base_rev, "op": [self.text(seq)], "src": self.src,
                 "seq": seq}
        await ws.send(json.dumps(frame))

    async def session(self, server: ServerProcess, stop: asyncio.Event) -> None:
        """Edits until ``stop`` is set (then finishes its op in flight) or the server dies."""
        query = {"since": self.rev} if self.rev else {}
        try:
            url = server.ws_url(DOC, **query)
            async with connect(url, additional_headers=auth(self.src)) as ws:
                init = await recv_json(ws)
                for item in init.get("ops", []):
                    self.seen[item["rev"]] = (item["src"], item["seq"])
                self.rev = reconnected_at = init["rev"]
                if self.pending is not None:
                    # The resend after a crash: same (src, seq), same base revision.
                    await self._send(ws, *self.pending)
                    resending = True
                elif stop.is_set():
                    return
                else:
                    self.seq += 1
                    await self._send(ws, self.seq, self.rev)
                    resending = False
                while True:
                    frame = json.loads(await ws.recv())
                    for item in frame["items"] if frame["type"] == "ops" else [frame]:
                        if item["type"] == "op":
                            self.seen[item["rev"]] = (item["src"], item["seq"])
                            self.rev = item["rev"]
                        elif item["type"] == "ack":
                            assert self.pending is not None and item["seq"] == self.pending[0]
                            self.acked[item["seq"]] = item["rev"]
                            if resending:
                                self.resends.append((item["seq"], item["rev"]))
                                self.reacked += item["rev"] <= reconnected_at
                                resending = False
                            self.rev = max(self.rev, item["rev"])
                            self.pending = None
                            if stop.is_set():
                                return
                            self.seq += 1
                            await self._send(ws, self.seq, self.rev)
                        elif item["type"] == "error":
                            raise AssertionError(f"server refused an op: {item}")
        except (ConnectionClosed, OSError):
            return  # the server was killed; what is pending stays pending
        except InvalidMessage:
            # Killed in the middle of this writer's handshake (the socket closed before any
            # HTTP answer): the same as above. A refusal would be an answer, and still fail.
            return


async def history(server: ServerProcess) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        since: int | None = 0
        while since is not None:
            response = await client.get(
                f"/documents/{DOC}/history", params={"since": since, "limit": 1000},
                headers=auth(),
            )
            assert response.status_code == 200, response.text
            page = response.json()
            ops += page["ops"]
            since = page["next"]
    return ops


async def crash_and_recover(
    server: ServerProcess, *, writers: int, rounds: int, acks_per_round: int
) -> None:
    clients = [Writer(f"w{i}") for i in range(writers)]
    for _ in range(rounds):
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.session(server, stop)) for c in clients]
        target = sum(len(c.acked) for c in clients) + acks_per_round

        def enough(target: int = target) -> bool:
            return sum(len(c.acked) for c in clients) >= target

        await wait_for(enough, timeout=120)
        # Mid-stream: every writer has an op in flight or about to be.
        server.kill()
        await asyncio.gather(*tasks)
        await asyncio.to_thread(server.start)

    # Each writer reconnects once more and settles the op it had in flight at the crash.
    stop = asyncio.Event()
    stop.set()
    pending_before = {c.src: c.pending for c in clients}
    await asyncio.gather(*(c.session(server, stop) for c in clients))
    for c in clients:
        assert c.pending is None, (c.src, c.pending)

    ops = await history(server)
    revs = [o["rev"] for o in ops]
    assert revs == list(range(1, len(ops) + 1)), "revisions are not contiguous"
    by_rev = {o["rev"]: (o["src"], o["seq"]) for o in ops}
    counts = Counter(by_rev.values())
    assert not [key for key, n in counts.items() if n > 1], "an op was applied twice"

    for c in clients:
        # Every op acknowledged, before or after a crash, is stored at its acknowledged revision.
        for seq, rev in c.acked.items():
            assert by_rev.get(rev) == (c.src, seq), (c.src, seq, rev)
        # Every op broadcast to this client is stored at the revision it was broadcast with.
        for rev, key in c.seen.items():
            assert by_rev.get(rev) == key, (c.src, rev, key)
        # Every seq the writer ever sent is stored exactly once.
        assert sorted(seq for src, seq in by_rev.values() if src == c.src) == list(
            range(1, c.seq + 1)
        )
        # The crash-time op: applied once, at the revision its (re)ack named.
        if pending_before[c.src] is not None:
            seq, _ = pending_before[c.src]  # type: ignore[misc]
            assert (seq, c.acked[seq]) in c.resends

    text = ""
    for o in ops:
        text = ot.apply(text, o["op"])
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        document = (await client.get(f"/documents/{DOC}", headers=auth())).json()
    assert (document["content"], document["rev"]) == (text, len(ops))
    total = sum(len(c.acked) for c in clients)
    print(f"durability: {rounds} SIGKILLs, {len(ops)} ops stored, {total} acks checked, "
          f"{sum(len(c.resends) for c in clients)} resends settled, "
          f"{sum(c.reacked for c in clients)} of them committed before the crash")


async def test_acked_ops_survive_sigkill_on_sqlite(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory()
    await crash_and_recover(server, writers=4, rounds=1, acks_per_round=60)


@pytest.mark.postgres
async def test_acked_ops_survive_sigkill_on_postgres(
    server_factory: Callable[..., ServerProcess], postgres_database: str
) -> None:
    server = server_factory(database_url=postgres_database)
    await crash_and_recover(server, writers=4, rounds=1, acks_per_round=60)


@pytest.mark.slow
async def test_acked_ops_survive_repeated_sigkill_on_sqlite_long(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory()
    await crash_and_recover(server, writers=12, rounds=5, acks_per_round=500)


@pytest.mark.slow
@pytest.mark.postgres
async def test_acked_ops_survive_repeated_sigkill_on_postgres_long(
    server_factory: Callable[..., ServerProcess], postgres_database: str
) -> None:
    server = server_factory(database_url=postgres_database)
    await crash_and_recover(server, writers=12, rounds=5, acks_per_round=500)
