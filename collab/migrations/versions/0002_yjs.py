"""yjs_documents, yjs_updates, yjs_snapshots

Revision ID: 0002_yjs
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_yjs"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "yjs_documents",
        sa.Column("doc_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["doc_id"],
            ["documents.id"],
            name=op.f("fk_yjs_documents_doc_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("doc_id", name=op.f("pk_yjs_documents")),
    )
    for table, key, index in (
        ("yjs_updates", sa.String(length=32), "rev"),
        ("yjs_snapshots", sa.Integer(), "id"),
    ):
        op.create_table(
            table,
            sa.Column("id", key, autoincrement=table == "yjs_snapshots", nullable=False),
            sa.Column("doc_id", sa.String(length=128), nullable=False),
            sa.Column("rev", sa.Integer(), nullable=False),
            sa.Column("data", sa.LargeBinary(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                ["doc_id"],
                ["yjs_documents.doc_id"],
                name=op.f(f"fk_{table}_doc_id_yjs_documents"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        )
        op.create_index(f"ix_{table}_doc_id_{index}", table, ["doc_id", index], unique=False)


def downgrade() -> None:
    for table, index in (("yjs_snapshots", "id"), ("yjs_updates", "rev")):
        op.drop_index(f"ix_{table}_doc_id_{index}", table_name=table)
        op.drop_table(table)
    op.drop_table("yjs_documents")
