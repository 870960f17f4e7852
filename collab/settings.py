"""Server settings, read from the environment (prefix ``COLLAB_``) or a ``.env`` file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "changethis"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COLLAB_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./collab.db"
    jwt_secret: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    allowed_origins: str | None = None
    max_message_bytes: int = Field(default=1_048_576, gt=0)
    max_document_bytes: int = Field(default=10 * 1_048_576, gt=0)
    send_queue_limit: int = Field(default=1024, gt=0)
    snapshot_every: int = Field(default=100, gt=0)
    doc_idle_seconds: float = Field(default=60.0, ge=0)
    redis_url: str | None = None
    redis_prefix: str = "collab:"

    # Extensions beyond SPEC §1, documented in docs/operations.md.
    dev: bool = False
    sqlite_synchronous: str = "FULL"
    inbox_size: int = Field(default=4096, gt=0)
    history_window: int = Field(default=1000, gt=0)
    max_rebase_distance: int = Field(default=5_000, gt=0)
    broadcast_frames_per_second: float = Field(default=20_000.0, gt=0)
    ops_per_second: float = Field(default=1000.0, gt=0)
    ops_burst: float = Field(default=2000.0, gt=0)
    presence_per_second: float = Field(default=30.0, gt=0)
    presence_burst: float = Field(default=60.0, gt=0)
    user_ops_per_second: float = Field(default=2000.0, gt=0)
    user_ops_burst: float = Field(default=4000.0, gt=0)
    max_connections_per_user: int = Field(default=100, gt=0)
    max_connections_per_address: int = Field(default=1000, gt=0)
    ticket_ttl_seconds: int = Field(default=30, gt=0)
    ws_backend: Literal["websockets-sansio", "websockets", "wsproto"] = "websockets-sansio"
    handshake_timeout_seconds: float = Field(default=10.0, gt=0)

    # The Yjs endpoint (docs/yjs.md).
    yjs_text: str = Field(default="content", min_length=1)
    yjs_max_message_bytes: int = Field(default=16_777_216, gt=0)
    yjs_max_document_bytes: int = Field(default=67_108_864, gt=0)
    yjs_max_awareness_bytes: int = Field(default=32_768, gt=0)
    yjs_max_awareness_clients: int = Field(default=8, gt=0)
    yjs_messages_per_second: float = Field(default=1000.0, gt=0)
    yjs_messages_burst: float = Field(default=2000.0, gt=0)
    yjs_keepalive_seconds: float = Field(default=15.0, gt=0)
    yjs_compact_every: int = Field(default=500, gt=0)

    @field_validator("sqlite_synchronous")
    @classmethod
    def _known_synchronous(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA")
        return upper

    def ws_max_frame_bytes(self) -> int:
        """The transport's frame limit: past the largest message either socket takes, so that
        the sockets answer an oversized message with their own close code (the Yjs one a
        provider does not retry) rather than the transport's 1009; twice that is cut at once."""
        return 2 * max(self.max_message_bytes, self.yjs_max_message_bytes)

    def origin_allowlist(self) -> frozenset[str] | None:
        """The allowed browser origins; ``None`` means any origin (``*``)."""
        if self.allowed_origins is None:
            return frozenset()
        items = {o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()}
        if "*" in items:
            return None
        return frozenset(items)

    def secret_is_usable(self) -> bool:
        # HS256 wants a key at least as long as its 32-byte output (RFC 7518 §3.2).
        secret = self.jwt_secret
        return (
            secret is not None
            and secret.strip() not in _PLACEHOLDER_SECRETS
            and len(secret.encode()) >= 32
        )
