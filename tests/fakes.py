"""Hand-written fakes of collab's own interfaces (never of a database, socket or Redis)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from collab.storage import ExtraRows, MemoryStore
from collab.types import StoredOp

WAIT = 5.0  # seconds a test waits for a frame before failing (never a sleep)


class FakePeer:
    """A connected client as the actor sees it: it records every frame and its close."""

    def __init__(self, name: str, access: str = "write") -> None:
        self.client_id = secrets.token_hex(4)
        self.user_id = name
        self.name = name
        self.access = access
        self.cursor: dict[str, int] | None = None
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._changed = asyncio.Event()

    def send(self, frame: bytes) -> None:
        self.frames.append(orjson.loads(frame))
        self._changed.set()

    def send_presence(self, client_id: str, frame: bytes) -> None:
        self.send(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self._changed.set()

    def items(self) -> list[dict[str, Any]]:
        """Every frame, with ``ops`` frames opened into their items."""
        flat: list[dict[str, Any]] = []
        for frame in self.frames:
            flat.extend(frame["items"] if frame["type"] == "ops" else [frame])
        return flat

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.items() if item["type"] == kind]

    async def wait_for(self, predicate: Any) -> None:
        """Waits until ``predicate(self)`` holds (checked on every frame or close)."""
        async with asyncio.timeout(WAIT):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()


class RacingStore(MemoryStore):
    """A ``MemoryStore`` on which another writer (another server process) commits first.

    Before each of this store's commits, the next of ``rivals`` is committed straight into the
    shared database, so the commit that follows loses the race. ``rivals`` may be endless.
    """

    def __init__(self, rivals: Sequence[list[Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rivals: list[list[Any]] = list(rivals or [])
        self.endless_rival = False
        self.commits = 0

    async def commit(
        self,
        doc_id: str,
        base_rev: int,
        ops: Sequence[StoredOp],
        extra_rows: ExtraRows | None = None,
    ) -> bool:
        self.commits += 1
        if self.rivals or self.endless_rival:
            op = self.rivals.pop(0) if self.rivals else ["r"]
            await self.rival_commit(doc_id, op, ops[0].created_at if ops else None)
        return await super().commit(doc_id, base_rev, ops, extra_rows)

    async def rival_commit(self, doc_id: str, op: list[Any], at: datetime | None = None) -> None:
        info = await self.get_document(doc_id)
        assert info is not None
        rev = info.rev + 1
        stored = StoredOp(rev, op, "rival", rev, "rival", at or info.updated_at)
        assert await super().commit(doc_id, info.rev, [stored])

