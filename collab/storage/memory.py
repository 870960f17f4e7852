"""``Store`` and ``Committer`` in memory: the whole storage contract with no database.

Several ``MemoryStore`` objects built on one ``MemoryDatabase`` behave like server processes
sharing a database (a commit on a moved document is a lost race), so tests can drive the actor
through every storage path without SQLite or PostgreSQL. Nothing here awaits: each call is
atomic with respect to the event loop, as one transaction is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from collab import ot
from collab.storage.base import CommitRequest, ExtraRows
from collab.types import DocumentInfo, LoadedDocument, SnapshotInfo, StoredOp


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not stored")
    return moment.astimezone(UTC)


@dataclass
class _Document:
    info: DocumentInfo
    ops: list[StoredOp] = field(default_factory=list)  # revisions 1, 2, … in order
    keys: dict[tuple[str, int], int] = field(default_factory=dict)  # (src, seq) -> rev
    snapshots: dict[int, tuple[str, datetime]] = field(default_factory=dict)


@dataclass
class MemoryDatabase:
    """The shared state: what a database server would hold."""

    documents: dict[str, _Document] = field(default_factory=dict)
    # Rows of other tables committed with ops (a commit request's ``extra_rows``).
    extra: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)


class MemoryCommitter:
    """Commits a request into a ``MemoryDatabase``: all of it, or nothing and False."""

    def __init__(self, database: MemoryDatabase) -> None:
        self._database = database

    async def commit(self, request: CommitRequest) -> bool:
        return self.commit_now(request)

    def commit_now(self, request: CommitRequest) -> bool:
        if not request.ops:
            return True
        document = self._database.documents.get(request.doc_id)
        if document is None or document.info.rev != request.base_rev:
            return False
        keys = [(o.src, o.seq) for o in request.ops]
        if len(set(keys)) != len(keys) or any(key in document.keys for key in keys):
            return False
        for stored in request.ops:
            stored = replace(stored, created_at=_utc(stored.created_at))
            document.ops.append(stored)
            document.keys[(stored.src, stored.seq)] = stored.rev
        last = document.ops[-1]
        document.info = replace(document.info, rev=last.rev, updated_at=last.created_at)
        for table, rows in request.extra_rows.items():
            self._database.extra.setdefault(table, []).extend(rows)
        return True

    async def close(self) -> None:
        pass


class MemoryStore:
    """``Store`` on a ``MemoryDatabase`` (a fresh one unless shared)."""

    def __init__(
        self, database: MemoryDatabase | None = None, committer: MemoryCommitter | None = None
    ) -> None:
        self.database = database if database is not None else MemoryDatabase()
        self._committer = committer or MemoryCommitter(self.database)

    async def ping(self) -> None:
        """Always reachable: there is nothing to reach."""

    async def close(self) -> None:
        await self._committer.close()

    def _document(self, doc_id: str) -> _Document | None:
        return self.database.documents.get(doc_id)

    async def get_document(self, doc_id: str) -> DocumentInfo | None:
        document = self._document(doc_id)
        return None if document is None else document.info

    async def create_document(
        self, doc_id: str, title: str, content: str, now: datetime
    ) -> DocumentInfo | None:
        if doc_id in self.database.documents:
            return None
        now = _utc(now)
        info = DocumentInfo(doc_id, title, 0, now, now)
        self.database.documents[doc_id] = _Document(info, snapshots={0: (content, now)})
        return info

    async def load_document(self, doc_id: str) -> LoadedDocument | None:
        document = self._document(doc_id)
        if document is None:
            return None
        snap_rev, content = self._snapshot_at(document, document.info.rev)
        return LoadedDocument(document.info, snap_rev, content, document.ops[snap_rev:])

    async def load_ops(
        self, doc_id: str, after: int, until: int | None = None, limit: int | None = None
    ) -> list[StoredOp]:
        document = self._document(doc_id)
        if document is None:
            return []
        end = len(document.ops) if until is None else max(0, min(until, len(document.ops)))
        ops = document.ops[max(after, 0) : end]
        return ops if limit is None else ops[:limit]

    async def commit(
        self,
        doc_id: str,
        base_rev: int,
        ops: Sequence[StoredOp],
        extra_rows: ExtraRows | None = None,
    ) -> bool:
        if not ops:
            return True
        return await self._committer.commit(CommitRequest(doc_id, base_rev, ops, extra_rows or {}))

    async def find_revs(
        self, doc_id: str, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        document = self._document(doc_id)
        if document is None:
            return {}
        return {key: document.keys[key] for key in keys if key in document.keys}

    async def save_snapshot(self, doc_id: str, rev: int, content: str, now: datetime) -> None:
        document = self._document(doc_id)
        if document is not None and rev not in document.snapshots:
            document.snapshots[rev] = (content, _utc(now))

    async def list_documents(
        self, after_id: str | None, limit: int, only_ids: Iterable[str] | None
    ) -> list[DocumentInfo]:
        wanted = None if only_ids is None else set(only_ids)
        ids = sorted(
            doc_id
            for doc_id in self.database.documents
            if (after_id is None or doc_id > after_id) and (wanted is None or doc_id in wanted)
        )
        return [self.database.documents[doc_id].info for doc_id in ids[:limit]]

    async def delete_document(self, doc_id: str) -> bool:
        if self.database.documents.pop(doc_id, None) is None:
            return False
        for table, rows in self.database.extra.items():
            self.database.extra[table] = [row for row in rows if row.get("doc_id") != doc_id]
        return True

    async def list_snapshots(self, doc_id: str) -> list[SnapshotInfo]:
        document = self._document(doc_id)
        if document is None:
            return []
        return [SnapshotInfo(rev, at) for rev, (_, at) in sorted(document.snapshots.items())]

    async def content_at(self, doc_id: str, rev: int) -> str:
        document = self._document(doc_id)
        if document is None:
            return ""
        snap_rev, content = self._snapshot_at(document, rev)
        for stored in document.ops[snap_rev:rev]:
            content = ot.apply(content, stored.op)
        return content

    async def rev_at(self, doc_id: str, moment: datetime) -> int | None:
        document = self._document(doc_id)
        if document is None or moment < document.info.created_at:
            return None
        return max((s.rev for s in document.ops if s.created_at <= moment), default=0)

    @staticmethod
    def _snapshot_at(document: _Document, rev: int) -> tuple[int, str]:
        snap_rev = max((r for r in document.snapshots if r <= rev), default=None)
        if snap_rev is None:
            return 0, ""
        return snap_rev, document.snapshots[snap_rev][0]
