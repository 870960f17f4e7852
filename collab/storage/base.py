"""The storage interfaces: ``Store`` (what the actor and the routes need) and ``Committer``
(the one write on every op's way to its ack).

A lost race on commit is a return value (``False``), not an exception: the caller loads what it
missed and restages. A commit request carries the ops and, optionally, rows of other tables that
must land in the same transaction (``extra_rows``), so that another kind of update (a Yjs
update beside the OT ops, say) is durable exactly when the ops are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeAlias

import orjson

from collab import ot
from collab.errors import CollabError
from collab.types import DocumentInfo, LoadedDocument, SnapshotInfo, StoredOp

# Table name -> rows to insert into it, in the commit's transaction (after the op rows).
ExtraRows: TypeAlias = Mapping[str, Sequence[Mapping[str, Any]]]


def encode_op(op: ot.Op) -> str:
    return orjson.dumps(op).decode()


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """One document's batch: ops sequenced on ``base_rev`` (revisions base_rev+1 …)."""

    doc_id: str
    base_rev: int
    ops: Sequence[StoredOp]
    extra_rows: ExtraRows = field(default_factory=dict)

    @property
    def rev(self) -> int:
        """The document's revision once this batch is committed."""
        return self.ops[-1].rev if self.ops else self.base_rev

    def advance_params(self) -> dict[str, Any]:
        last = self.ops[-1]
        return {
            "b_id": self.doc_id,
            "b_base": self.base_rev,
            "b_rev": last.rev,
            "b_at": last.created_at,
        }

    def op_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "doc_id": self.doc_id,
                "rev": o.rev,
                "op": encode_op(o.op),
                "src": o.src,
                "seq": o.seq,
                "user_id": o.user_id,
                "created_at": o.created_at,
            }
            for o in self.ops
        ]


class LostRace(CollabError):
    """Aborts a commit's transaction when the document moved under it (never escapes a
    committer: the caller sees ``False``)."""


class Committer(Protocol):
    async def commit(self, request: CommitRequest) -> bool:
        """True once the batch is durable; False if the document moved or is gone, or a
        ``(src, seq)`` is taken (nothing is written then)."""
        ...

    async def close(self) -> None: ...


class Store(Protocol):
    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def get_document(self, doc_id: str) -> DocumentInfo | None: ...

    async def create_document(
        self, doc_id: str, title: str, content: str, now: datetime
    ) -> DocumentInfo | None:
        """Creates the document with a snapshot at revision 0; ``None`` if the id is taken."""
        ...

    async def load_document(self, doc_id: str) -> LoadedDocument | None: ...

    async def load_ops(
        self, doc_id: str, after: int, until: int | None = None, limit: int | None = None
    ) -> list[StoredOp]: ...

    async def commit(
        self,
        doc_id: str,
        base_rev: int,
        ops: Sequence[StoredOp],
        extra_rows: ExtraRows | None = None,
    ) -> bool:
        """Appends ``ops`` (revisions base_rev+1 …) in one transaction through the committer.

        False when another writer moved the document past ``base_rev`` first, the document is
        gone or a ``(src, seq)`` is already stored; nothing is written then.
        """
        ...

    async def find_revs(
        self, doc_id: str, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """The revisions at which these ``(src, seq)`` pairs were stored, for those that were."""
        ...

    async def save_snapshot(self, doc_id: str, rev: int, content: str, now: datetime) -> None:
        """Stores a snapshot unless one already exists at that revision."""
        ...

    async def list_documents(
        self, after_id: str | None, limit: int, only_ids: Iterable[str] | None
    ) -> list[DocumentInfo]: ...

    async def delete_document(self, doc_id: str) -> bool: ...

    async def list_snapshots(self, doc_id: str) -> list[SnapshotInfo]: ...

    async def content_at(self, doc_id: str, rev: int) -> str:
        """The text at ``rev``: the nearest snapshot at or before it, plus the ops after it."""
        ...

    async def rev_at(self, doc_id: str, moment: datetime) -> int | None:
        """The newest revision committed at or before ``moment``; None before the document."""
        ...
