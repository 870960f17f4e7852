"""The state of one document and the sequencing of submitted ops, with no I/O.

The actor wraps this: it gathers submissions, asks :meth:`DocumentState.stage` to turn them into
committed-to-be operations, writes the batch, and only then calls :meth:`DocumentState.accept`.
Nothing changes before the write succeeds, so a failed or lost commit simply restages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice

from collab import ot
from collab.errors import CollabError, ErrorCode
from collab.types import StoredOp


class SubmitError(CollabError):
    """A submission refused with one of SPEC §4's error codes."""

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message, code)


@dataclass(slots=True)
class Submission:
    op: ot.Op
    base_rev: int
    src: str
    seq: int
    user_id: str


@dataclass(slots=True)
class Outcome:
    """What became of one submission: its revision (new or, for a resend, the original)."""

    submission: Submission
    rev: int = 0
    committed: StoredOp | None = None
    error: SubmitError | None = None

    @property
    def duplicate(self) -> bool:
        """Acknowledged without a new revision: a resend, or an op with nothing to apply."""
        return self.error is None and self.committed is None


RebasePair = tuple[ot.Op, ot.Extent | None]


@dataclass(slots=True)
class Batch:
    base_rev: int
    text: str
    ops: list[StoredOp] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    # (op, extent) of each of ops: what a later submission of the batch is rebased past.
    rebase_pairs: list[RebasePair] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # of the text after each of ops

    @property
    def rev(self) -> int:
        return self.base_rev + len(self.ops)


def _growth(reach: ot.Extent | None) -> int:
    return 0 if reach is None else reach[2]  # no extent: the empty op


class _OlderOps:
    """Stored ops just before the held window, prepared once per ``stage`` for every
    submission that needs them: their extents and the text's length before each."""

    def __init__(self, older: Sequence[StoredOp], first_held: int, first_held_length: int) -> None:
        # Only the run that reaches the window without a hole can serve a rebase.
        run: list[StoredOp] = []
        for stored in reversed(older):
            if stored.rev > first_held:
                continue
            if stored.rev != first_held - len(run):
                break
            run.append(stored)
        run.reverse()
        self.start = first_held - len(run)  # the oldest base revision these ops serve
        self.pairs: list[RebasePair] = [(s.op, ot.extent(s.op)) for s in run]
        lengths = [first_held_length]
        for _, reach in reversed(self.pairs):
            lengths.append(lengths[-1] - _growth(reach))
        lengths.reverse()
        self.lengths = lengths  # lengths[i]: the text's length at revision start + i


class DocumentState:
    """Text, revision and a window of recent ops of one document."""

    def __init__(
        self,
        doc_id: str,
        text: str,
        rev: int,
        recent: Iterable[StoredOp] = (),
        *,
        window: int = 1000,
        max_rebase: int = 100_000,
        max_bytes: int | None = None,
    ) -> None:
        self.doc_id = doc_id
        self.text = text
        self.rev = rev
        self.max_rebase = max_rebase
        self.max_bytes = max_bytes  # of the text, in UTF-8: an op growing it past this is refused
        # Who owns each src: the user whose op first used it. Nobody else may use it, so no
        # other user can claim an editor's (src, seq) and have its real op taken for a resend.
        self._src_user: dict[str, str] = {}
        self._window: deque[StoredOp] = deque(maxlen=window)
        # The held ops again, each with its extent (computed once): what rebases walk over.
        self._pairs: deque[RebasePair] = deque(maxlen=window)
        self._rev_by_src_seq: dict[tuple[str, int], int] = {}
        self._max_seq: dict[str, int] = {}
        recent = list(recent)
        # The text's length at each revision from first_held_rev to rev.
        self._lengths: deque[int] = deque(maxlen=window + 1)
        self._lengths.append(len(text) - sum(_growth(ot.extent(s.op)) for s in recent))
        for stored in recent:
            self._remember(stored)

    @property
    def first_held_rev(self) -> int:
        """Ops after this revision are held in memory."""
        return self.rev - len(self._window)

    def recent_ops(self, after: int) -> list[StoredOp] | None:
        """The held ops after revision ``after``; None if some of them are no longer held."""
        if after < self.first_held_rev or after > self.rev:
            return None
        newer = list(islice(reversed(self._window), self.rev - after))
        newer.reverse()
        return newer

    def known_rev(self, src: str, seq: int) -> int | None:
        return self._rev_by_src_seq.get((src, seq))

    def needs_lookup(self, src: str, seq: int) -> bool:
        """Whether a resend of (src, seq) could exist in storage without being held here."""
        if (src, seq) in self._rev_by_src_seq:
            return False
        highest = self._max_seq.get(src)
        return highest is None or seq <= highest

    def owner_unknown(self, src: str) -> bool:
        """Whether storage must be asked who owns ``src`` (not seen since loading)."""
        return src not in self._src_user

    def note_stored_rev(self, src: str, seq: int, rev: int) -> None:
        """Records a (src, seq) found in storage, so the lookup is not repeated."""
        self._rev_by_src_seq[(src, seq)] = rev
        self._max_seq[src] = max(seq, self._max_seq.get(src, 0))

    def note_owner(self, src: str, user_id: str) -> None:
        """Records the user a src belongs to, as found in storage."""
        self._src_user.setdefault(src, user_id)

    def oldest_unheld_base(self, submissions: Iterable[Submission]) -> int | None:
        """The oldest base revision of ``submissions`` that the held window does not reach but
        the rebase distance allows; None if there is none. ``stage`` needs the stored ops after
        it, up to :attr:`first_held_rev`, as ``older``.

        Only in-range bases count: one out of range (a stale op, refused anyway) must not make
        the others of its batch go without the older ops they need.
        """
        first = self.first_held_rev
        return min(
            (
                s.base_rev
                for s in submissions
                if 0 <= s.base_rev < first and not self._too_far(s.base_rev, self.rev)
            ),
            default=None,
        )

    def stage(
        self,
        submissions: Sequence[Submission],
        now: datetime,
        older: Sequence[StoredOp] = (),
    ) -> Batch:
        """Transforms and applies ``submissions`` in order, without changing this state.

        ``older`` are stored ops just before the held window, for submissions based on a
        revision the window no longer holds.
        """
        batch = Batch(base_rev=self.rev, text=self.text)
        before_window = _OlderOps(older, self.first_held_rev, self._lengths[0]) if older else None
        staged_by_src_seq: dict[tuple[str, int], int] = {}
        staged_src_user: dict[str, str] = {}
        for submission in submissions:
            outcome = Outcome(submission)
            batch.outcomes.append(outcome)
            src = submission.src
            owner = self._src_user.get(src) or staged_src_user.get(src)
            if owner is not None and owner != submission.user_id:
                outcome.error = SubmitError(
                    ErrorCode.BAD_MESSAGE,
                    f"src {src!r} belongs to another user; use a src of your own",
                )
                continue
            key = (src, submission.seq)
            original = self._rev_by_src_seq.get(key) or staged_by_src_seq.get(key)
            if original is not None:
                outcome.rev = original
                continue
            try:
                if not ot.normalize(submission.op):
                    # An op that changes nothing as sent: acknowledged at the current revision,
                    # which it does not advance (docs/protocol.md). One that only becomes empty
                    # when rebased is still a revision: its author counts on one.
                    outcome.rev = batch.rev
                    continue
                op = self._rebase(submission, batch, before_window)
                text = ot.apply(batch.text, op)
                self._check_size(text, batch.text)
            except SubmitError as error:
                outcome.error = error
                continue
            except ot.InvalidOp as error:
                outcome.error = SubmitError(ErrorCode.INVALID_OP, str(error))
                continue
            stored = StoredOp(
                batch.rev + 1, op, submission.src, submission.seq, submission.user_id, now
            )
            batch.text = text
            batch.ops.append(stored)
            batch.rebase_pairs.append((op, ot.extent(op)))
            batch.lengths.append(len(text))
            staged_by_src_seq[key] = stored.rev
            staged_src_user.setdefault(src, submission.user_id)
            outcome.rev = stored.rev
            outcome.committed = stored
        return batch

    def accept(self, batch: Batch) -> None:
        """Makes a staged batch the current state, once it is durably stored."""
        if batch.base_rev != self.rev:
            raise RuntimeError("batch was staged on another revision")
        self.text = batch.text
        for stored in batch.ops:
            self._remember(stored)
        self.rev = batch.rev

    def apply_committed(self, ops: Iterable[StoredOp]) -> None:
        """Catches up with ops another writer committed (in revision order, no gaps)."""
        for stored in ops:
            if stored.rev <= self.rev:
                continue
            if stored.rev != self.rev + 1:
                raise RuntimeError(f"gap: at {self.rev}, got {stored.rev}")
            self.text = ot.apply(self.text, stored.op)
            self._remember(stored)
            self.rev = stored.rev

    def transform_cursor(self, position: int, at_rev: int) -> int | None:
        """A position made at ``at_rev``, moved to the current revision; None if not held."""
        missed = self.recent_ops(at_rev)
        if missed is None:
            return None
        for stored in missed:
            position = ot.transform_position(position, stored.op)
        return min(max(position, 0), len(self.text))

    def _check_size(self, text: str, before: str) -> None:
        """Refuses an op that grows the document past ``max_bytes`` (UTF-8)."""
        limit = self.max_bytes
        # A code point is at most 4 bytes: the exact count is needed only near the limit.
        if limit is None or len(text) <= len(before) or 4 * len(text) <= limit:
            return
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise SubmitError(
                ErrorCode.DOCUMENT_TOO_LARGE,
                f"the op would make the document {size} bytes, over the limit of {limit}",
            )

    def _rebase(self, submission: Submission, batch: Batch, older: _OlderOps | None) -> ot.Op:
        base = submission.base_rev
        if base > batch.rev:
            raise SubmitError(
                ErrorCode.BAD_REVISION, f"revision {base} is newer than the document ({batch.rev})"
            )
        if base < 0 or self._too_far(base, batch.rev):
            raise SubmitError(
                ErrorCode.BAD_REVISION, f"revision {base} is older than the history held"
            )
        missed, base_length = self._missed(base, batch, older)
        op = ot.normalize(submission.op)
        ot.check(op, base_length)
        return ot.transform_past(op, missed, "left")

    def _too_far(self, base: int, head: int) -> bool:
        """Whether an op based on ``base`` is beyond the rebase distance from ``head``."""
        return head - base > self.max_rebase

    def _missed(
        self, base: int, batch: Batch, older: _OlderOps | None
    ) -> tuple[list[RebasePair], int]:
        """The ops after revision ``base`` (held, staged, and ``older`` ones if needed), and
        the text's length at ``base``."""
        if base >= self.rev:
            # A base inside this batch misses only the batch's later ops.
            staged = base - self.rev
            length = batch.lengths[staged - 1] if staged else self._lengths[-1]
            return batch.rebase_pairs[staged:], length
        first = self.first_held_rev
        if base >= first:
            held = list(islice(reversed(self._pairs), self.rev - base))
            held.reverse()
            return held + batch.rebase_pairs, self._lengths[base - first]
        if older is None or base < older.start:
            raise SubmitError(
                ErrorCode.BAD_REVISION, f"revision {base} is older than the history held"
            )
        index = base - older.start
        return older.pairs[index:] + list(self._pairs) + batch.rebase_pairs, older.lengths[index]

    def _remember(self, stored: StoredOp) -> None:
        if len(self._window) == self._window.maxlen:
            evicted = self._window[0]
            self._rev_by_src_seq.pop((evicted.src, evicted.seq), None)
        self._window.append(stored)
        reach = ot.extent(stored.op)
        self._pairs.append((stored.op, reach))
        self._lengths.append(self._lengths[-1] + _growth(reach))
        self._rev_by_src_seq[(stored.src, stored.seq)] = stored.rev
        self._src_user.setdefault(stored.src, stored.user_id)
        if stored.seq > self._max_seq.get(stored.src, 0):
            self._max_seq[stored.src] = stored.seq
