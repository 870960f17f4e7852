"""The plain data every layer shares: stored ops, document metadata, and the clock.

Pure: standard library and ``collab.ot`` only, so the OT core, the protocol and the document
state can use these without pulling in the storage layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from collab import ot


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class StoredOp:
    """An op as committed: its revision, who sent it (``src``, ``seq``, ``user_id``) and when."""

    rev: int
    op: ot.Op
    src: str
    seq: int
    user_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    title: str
    rev: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    rev: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """What an actor starts from: the newest snapshot and the ops committed after it."""

    info: DocumentInfo
    snapshot_rev: int
    snapshot_content: str
    ops: list[StoredOp]
