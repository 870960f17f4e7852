"""Snapshots: a cache of the op log, written beside the commit path, never on it.

After every ``every`` revisions the document's text is saved through the store (an
``AsyncSession`` from the injected session factory, for the SQL store) in a background task:
an ack never waits for a snapshot. A crash between an op's commit and its snapshot loses
nothing, since loading replays the ops after the newest snapshot. One write at a time per
document; a snapshot that comes due while one is being written replaces any other waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from collab.storage.base import Store
from collab.types import utcnow

log = logging.getLogger(__name__)


class Snapshotter:
    def __init__(
        self,
        doc_id: str,
        store: Store,
        every: int,
        saved_rev: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.doc_id = doc_id
        self.stored_rev = saved_rev  # the newest revision with a stored snapshot
        self._due_rev = saved_rev  # the newest revision with a snapshot stored or on its way
        self._store = store
        self._every = every
        self._clock = clock
        self._writing: asyncio.Task[None] | None = None
        self._waiting: tuple[int, str] | None = None
        self._stopped = False

    def committed(self, rev: int, text: str) -> None:
        """Called after each commit: starts a snapshot when one is due."""
        if self._stopped or rev // self._every <= self._due_rev // self._every:
            return
        self._due_rev = rev
        if self._writing is None:
            name = f"snapshot:{self.doc_id}"
            self._writing = asyncio.create_task(self._write(rev, text), name=name)
        else:
            self._waiting = (rev, text)

    async def _write(self, rev: int, text: str) -> None:
        try:
            while True:
                try:
                    await self._store.save_snapshot(self.doc_id, rev, text, self._clock())
                    self.stored_rev = max(self.stored_rev, rev)
                except Exception:
                    log.exception("snapshot at %d failed for %s", rev, self.doc_id)
                if self._waiting is None:
                    return
                (rev, text), self._waiting = self._waiting, None
        finally:
            self._writing = None

    async def settle(self) -> None:
        """Waits for the snapshot being written, if any, and those waiting behind it."""
        while self._writing is not None:
            await asyncio.wait([self._writing])

    async def stop(self) -> None:
        """No more snapshots (the document is being deleted): waits for the one in flight."""
        self._stopped = True
        self._waiting = None
        await self.settle()

    async def final(self, rev: int, text: str) -> None:
        """The snapshot at unload: the current text unless one is already stored there."""
        await self.settle()
        if self._stopped or rev == self.stored_rev:
            return
        try:
            await self._store.save_snapshot(self.doc_id, rev, text, self._clock())
            self.stored_rev = rev
        except Exception:
            log.exception("final snapshot failed for %s", self.doc_id)
