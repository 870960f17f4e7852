"""Settings (SPEC §1): environment with prefix ``COLLAB_``, a ``.env`` file, defaults, checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from collab.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No COLLAB_ variables from the caller's shell, and no .env from the project root."""
    for name in list(os.environ):
        if name.startswith("COLLAB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_match_the_spec() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./collab.db"
    assert settings.jwt_secret is None
    assert settings.jwt_audience is None
    assert settings.jwt_issuer is None
    assert settings.allowed_origins is None
    assert settings.max_message_bytes == 1_048_576
    assert settings.send_queue_limit == 1024
    assert settings.snapshot_every == 100
    assert settings.doc_idle_seconds == 60
    assert settings.redis_url is None
    assert settings.dev is False


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    monkeypatch.setenv("COLLAB_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("COLLAB_JWT_AUDIENCE", "aud")
    monkeypatch.setenv("COLLAB_JWT_ISSUER", "iss")
    monkeypatch.setenv("COLLAB_ALLOWED_ORIGINS", "https://a.example")
    monkeypatch.setenv("COLLAB_MAX_MESSAGE_BYTES", "2048")
    monkeypatch.setenv("COLLAB_SEND_QUEUE_LIMIT", "7")
    monkeypatch.setenv("COLLAB_SNAPSHOT_EVERY", "5")
    monkeypatch.setenv("COLLAB_DOC_IDLE_SECONDS", "0.5")
    monkeypatch.setenv("COLLAB_REDIS_URL", "redis://h:6379/1")
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///ignored.db")  # no prefix: not ours
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://u@h/db"
    assert settings.jwt_secret == "s" * 40
    assert (settings.jwt_audience, settings.jwt_issuer) == ("aud", "iss")
    assert settings.allowed_origins == "https://a.example"
    assert settings.max_message_bytes == 2048
    assert settings.send_queue_limit == 7
    assert settings.snapshot_every == 5
    assert settings.doc_idle_seconds == 0.5
    assert settings.redis_url == "redis://h:6379/1"


def test_dotenv_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "COLLAB_JWT_SECRET=from-dotenv-0123456789abcdef-0123456789\n"
        "COLLAB_SNAPSHOT_EVERY=9\n"
        "SOMETHING_ELSE=1\n"
    )
    settings = Settings()
    assert settings.jwt_secret == "from-dotenv-0123456789abcdef-0123456789"
    assert settings.snapshot_every == 9
    # The environment wins over the file.
    monkeypatch.setenv("COLLAB_SNAPSHOT_EVERY", "11")
    assert Settings().snapshot_every == 11


def test_unknown_collab_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_NOT_A_SETTING", "x")
    assert Settings().snapshot_every == 100


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COLLAB_MAX_MESSAGE_BYTES", "0"),
        ("COLLAB_MAX_MESSAGE_BYTES", "lots"),
        ("COLLAB_SEND_QUEUE_LIMIT", "-1"),
        ("COLLAB_SNAPSHOT_EVERY", "0"),
        ("COLLAB_DOC_IDLE_SECONDS", "-1"),
        ("COLLAB_SQLITE_SYNCHRONOUS", "sometimes"),
        ("COLLAB_WS_BACKEND", "carrier-pigeon"),
    ],
)
def test_invalid_values_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_sqlite_synchronous_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_SQLITE_SYNCHRONOUS", "normal")
    assert Settings().sqlite_synchronous == "NORMAL"


def test_origin_allowlist() -> None:
    assert Settings().origin_allowlist() == frozenset()  # unset: only the server's own origin
    assert Settings(allowed_origins="*").origin_allowlist() is None
    assert Settings(allowed_origins="https://a.example, *").origin_allowlist() is None
    assert Settings(
        allowed_origins=" https://a.example/ ,http://b.example:8080,,"
    ).origin_allowlist() == frozenset({"https://a.example", "http://b.example:8080"})


@pytest.mark.parametrize(
    ("secret", "usable"),
    [
        (None, False),
        ("", False),
        ("changeme", False),
        ("secret", False),
        ("x" * 31, False),
        ("   changeme   ", False),
        ("x" * 32, True),
        ("é" * 16, True),  # 32 bytes in UTF-8
    ],
)
def test_secret_is_usable(secret: str | None, usable: bool) -> None:
    assert Settings(jwt_secret=secret).secret_is_usable() is usable
