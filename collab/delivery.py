"""What each peer of a document is sent after a commit, and when.

Committed ops wait in an *unsent* list until the next delivery tick. A document sends at most
about ``frames_per_second`` frames a second, so a room of n peers is flushed at most every
n / frames_per_second seconds: small rooms never wait (20 peers at the default: 1 ms), a crowd
gets fewer, fuller ``ops`` frames. At a flush each peer gets one frame with everything since the
last one, encoded once (``protocol.SharedBatch``): the others' ops as ``op``, its own as ``ack``.
Anything that must follow these ops in order (an ``init``, a presence frame, a close) calls
:meth:`Delivery.flush` first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from collab import protocol
from collab.document import Batch, SubmitError
from collab.presence import Peer, Roster
from collab.types import StoredOp


@dataclass(slots=True)
class Unsent:
    """A committed op (or a repeated ack) waiting for the next delivery tick."""

    item: bytes | None  # the `op` frame peers get; None: only the origin hears (an old ack)
    origin: Peer | None
    ack: bytes | None


class Delivery:
    def __init__(self, peers: Roster, frames_per_second: float) -> None:
        self._peers = peers  # a live view (the roster): who is here at flush time
        self._frames_per_second = frames_per_second
        self._unsent: list[Unsent] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = 0.0

    @property
    def pending(self) -> int:
        return len(self._unsent)

    def batch(self, batch: Batch, origins: Sequence[Peer | None]) -> None:
        """Queues a committed batch: ``origins[i]`` sent ``batch.outcomes[i]`` (None: REST)."""
        committed_by: dict[int, Peer | None] = {}
        unsent = self._unsent
        for outcome, origin in zip(batch.outcomes, origins, strict=True):
            if outcome.error is not None:
                continue
            if outcome.committed is not None:
                committed_by[outcome.rev] = origin
            elif origin is not None:
                # A resend of an op already committed: ack it again with its original revision,
                # in order with the ops still waiting to go out.
                seq = outcome.submission.seq
                unsent.append(Unsent(None, origin, protocol.ack_frame(seq, outcome.rev)))
        for stored in batch.ops:
            origin = committed_by[stored.rev]
            ack = None if origin is None else protocol.ack_frame(stored.seq, stored.rev)
            unsent.append(Unsent(protocol.committed_op_frame(stored), origin, ack))
        self.schedule()

    def foreign(self, ops: Sequence[StoredOp]) -> None:
        """Sends at once ops another writer committed, so every peer keeps a gapless sequence."""
        self._unsent.extend(Unsent(protocol.committed_op_frame(s), None, None) for s in ops)
        self.flush()

    @staticmethod
    def refuse(origin: Peer, seq: int, error: SubmitError) -> None:
        origin.send(protocol.error_frame(error.code, error.message, seq))

    def schedule(self) -> None:
        if not self._unsent or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        due = self._last_flush + len(self._peers) / self._frames_per_second
        if loop.time() >= due:
            self.flush()
        else:
            self._timer = loop.call_at(due, self.flush)

    def flush(self) -> None:
        """Sends what was committed since the last tick: one frame per peer, encoded once.

        Peers that authored none of it share one frame; an author gets its own, with acks in
        place of its ops.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        unsent, self._unsent = self._unsent, []
        if not unsent:
            return
        self._last_flush = asyncio.get_running_loop().time()
        batch = protocol.SharedBatch([u.item for u in unsent])
        acks_of: dict[int, list[tuple[int, bytes]]] = {}
        for index, u in enumerate(unsent):
            if u.origin is not None and u.ack is not None:
                acks_of.setdefault(id(u.origin), []).append((index, u.ack))
        shared = batch.shared()
        for peer in self._peers:
            acks = acks_of.get(id(peer))
            if acks is not None:
                peer.send(batch.with_acks(acks))
            elif shared is not None:
                peer.send(shared)
