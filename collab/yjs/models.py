"""The Yjs tables (docs/yjs.md, "Storage"), on the same metadata as the OT tables.

- ``yjs_documents``: one row per document that has Yjs state; its primary key makes the seeding
  of a Y.Doc from the OT text happen once, even when two processes race to do it.
- ``yjs_updates``: the exact bytes the server's Y.Doc emitted for each committed step, with the
  document revision they were committed at. Never regenerated from text. The key is a random
  id made by the writer, not a database sequence: these rows are inserted by the commit path
  beside the ops (whatever statement it compiles), and two processes never contend for it.
- ``yjs_snapshots``: compacted states (``encodeStateAsUpdate``); a compaction writes one and
  deletes the update rows it folded in, in the same transaction.

Loading is the newest snapshot, then every remaining update row in revision order (Yjs updates
are idempotent and commute, so a row both folded in and still present is harmless, and rows of
one revision may come in any order).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from collab.models import Base, UTCDateTime


class YjsDocument(Base):
    __tablename__ = "yjs_documents"

    doc_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class YjsUpdate(Base):
    __tablename__ = "yjs_updates"
    __table_args__ = (Index("ix_yjs_updates_doc_id_rev", "doc_id", "rev"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    doc_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("yjs_documents.doc_id", ondelete="CASCADE")
    )
    rev: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class YjsSnapshot(Base):
    __tablename__ = "yjs_snapshots"
    __table_args__ = (Index("ix_yjs_snapshots_doc_id_id", "doc_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    doc_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("yjs_documents.doc_id", ondelete="CASCADE")
    )
    rev: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
