"""One batch's life: stage → commit → (lost race: catch up, restage) → accept.

This is where an op gets its revision. ``DocumentState.stage`` rebases each submission past
the ops after its base revision and assigns the next revisions without changing anything; the
batch is committed through the store; only a durable batch is accepted. A commit that loses
the race to another writer (another server process) is an ordinary ``False``: the sequencer
reads the ops it missed, applies them, and stages again from scratch, loading again whatever
older ops the rebases need (the window of held ops moved). After ``max_retries`` lost races in
a row it gives up with a clear reason, as ShareDB does with ``maxSubmitRetries``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from collab.document import Batch, DocumentState, Submission
from collab.errors import CloseCode
from collab.storage.base import ExtraRows, Store
from collab.types import StoredOp, utcnow

log = logging.getLogger(__name__)

# Rows of other tables made from a staged batch (a Yjs update for its ops, say): asked again
# for every attempt, since a lost race restages the batch.
RowsFor = Callable[[Batch], Awaitable[ExtraRows]]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why nothing was committed, and how a peer's connection is closed for it."""

    reason: str
    close_code: CloseCode


@dataclass(slots=True)
class Sequenced:
    """The outcome of :meth:`Sequencer.sequence`.

    ``caught_up``: ops other writers committed, applied to the state while retrying (their
    peers must get them before the batch). ``batch``: the committed and accepted batch, or None
    with ``failure`` set.
    """

    batch: Batch | None
    failure: Failure | None = None
    caught_up: list[StoredOp] = field(default_factory=list)
    attempts: int = 0


class Sequencer:
    def __init__(
        self,
        doc_id: str,
        state: DocumentState,
        store: Store,
        *,
        max_retries: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.doc_id = doc_id
        self.state = state
        self._store = store
        self._max_retries = max_retries
        self._clock = clock

    async def sequence(
        self, submissions: Sequence[Submission], extra_rows: ExtraRows | RowsFor | None = None
    ) -> Sequenced:
        """Commits ``submissions`` as one batch (with ``extra_rows``, or the rows it makes of
        the staged batch, in the same transaction)."""
        state = self.state
        await self._look_up_resends(submissions)
        result = Sequenced(None)
        while True:
            result.attempts += 1
            # Inside the loop: a lost race slides the held window forward, so the older ops a
            # rebase needs are read again for every attempt.
            older = await self._older_ops(submissions)
            batch = state.stage(submissions, self._clock(), older)
            try:
                rows = await extra_rows(batch) if callable(extra_rows) else extra_rows
                won = await self._store.commit(self.doc_id, batch.base_rev, batch.ops, rows)
            except Exception:
                log.exception("commit failed for %s", self.doc_id)
                result.failure = Failure("the document could not be stored", CloseCode.INTERNAL)
                return result
            if won:
                state.accept(batch)
                result.batch = batch
                return result
            missed = await self._store.load_ops(self.doc_id, after=state.rev)
            if not missed:
                result.failure = Failure("the document is gone", CloseCode.INTERNAL)
                return result
            state.apply_committed(missed)
            result.caught_up.extend(missed)
            if result.attempts > self._max_retries:
                result.failure = Failure(
                    f"the op lost {result.attempts} commit races in a row; send it again",
                    CloseCode.TRY_AGAIN,
                )
                return result

    async def _look_up_resends(self, submissions: Sequence[Submission]) -> None:
        """Reads from storage who owns the srcs not seen since loading, and the revisions of
        (src, seq) pairs that may be stored but are not held."""
        state = self.state
        strangers = list(dict.fromkeys(s.src for s in submissions if state.owner_unknown(s.src)))
        unused: set[str] = set()
        if strangers:
            owners = await self._store.src_owners(self.doc_id, strangers)
            for src, user_id in owners.items():
                state.note_owner(src, user_id)
            unused = {src for src in strangers if src not in owners}  # nothing stored: no resend
        unknown = [
            (s.src, s.seq)
            for s in submissions
            if s.src not in unused and state.needs_lookup(s.src, s.seq)
        ]
        if unknown:
            found = await self._store.find_revs(self.doc_id, unknown)
            for (src, seq), rev in found.items():
                state.note_stored_rev(src, seq, rev)

    async def _older_ops(self, submissions: Sequence[Submission]) -> list[StoredOp]:
        """The stored ops before the held window that the oldest in-range base revision needs."""
        state = self.state
        oldest = state.oldest_unheld_base(submissions)
        if oldest is None:
            return []
        return await self._store.load_ops(self.doc_id, after=oldest, until=state.first_held_rev)
