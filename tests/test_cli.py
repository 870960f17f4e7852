"""The ``collab`` console script (SPEC §1), run as users run it: a subprocess."""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from collab.auth import decode_token
from collab.cli import _doc_grant, _settings_for_serve, missing_backend_package
from tests.support import COLLAB, SECRET, free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any COLLAB_ setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    env["COLLAB_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    env.update(extra)
    return env


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # cwd is the test's own directory, so no project .env file is read.
    return subprocess.run(
        [COLLAB, *args], env=_env(tmp_path, **env), cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
    )


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


def test_help() -> None:
    result = subprocess.run([COLLAB, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("serve", "migrate", "token"):
        assert command in result.stdout


def test_token_has_the_claims_asked_for(tmp_path: Path) -> None:
    result = _run(
        tmp_path, "token", "--sub", "alice", "--name", "Alice", "--doc", "notes=write",
        "--doc", "*=read", "--ttl", "120", COLLAB_JWT_SECRET=SECRET,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2
    principal = decode_token(token, SECRET)
    assert principal.sub == "alice"
    assert principal.name == "Alice"
    assert principal.docs == {"notes": "write", "*": "read"}
    assert principal.access("notes") == "write"
    assert principal.access("other") == "read"
    assert time.time() + 100 < principal.expires_at <= time.time() + 121


def test_token_without_docs_writes_everything(tmp_path: Path) -> None:
    result = _run(tmp_path, "token", "--sub", "bob", COLLAB_JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    principal = decode_token(result.stdout.strip(), SECRET)
    assert principal.docs is None
    assert principal.name == "bob"
    # The default lifetime is an hour.
    assert time.time() + 3500 < principal.expires_at <= time.time() + 3601


def test_token_carries_configured_audience_and_issuer(tmp_path: Path) -> None:
    result = _run(tmp_path, "token", "--sub", "carol", COLLAB_JWT_SECRET=SECRET,
                  COLLAB_JWT_AUDIENCE="collab-api", COLLAB_JWT_ISSUER="https://auth.example")
    assert result.returncode == 0, result.stderr
    principal = decode_token(result.stdout.strip(), SECRET, audience="collab-api",
                             issuer="https://auth.example")
    assert principal.sub == "carol"


def test_token_without_secret_fails(tmp_path: Path) -> None:
    result = _run(tmp_path, "token", "--sub", "alice")
    assert result.returncode != 0
    assert "COLLAB_JWT_SECRET" in result.stderr
    assert result.stdout == ""


def test_token_bad_doc_grant(tmp_path: Path) -> None:
    result = _run(tmp_path, "token", "--sub", "alice", "--doc", "notes=admin",
                  COLLAB_JWT_SECRET=SECRET)
    assert result.returncode == 2
    assert "ID=read" in result.stderr


@pytest.mark.parametrize("grant", ["notes", "notes=admin", "=write", "notes=WRITE"])
def test_doc_grant_parsing_refuses(grant: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _doc_grant(grant)


def test_doc_grant_parsing() -> None:
    assert _doc_grant("a.b=write") == ("a.b", "write")
    assert _doc_grant("*=read") == ("*", "read")


def test_migrate_creates_the_tables(tmp_path: Path) -> None:
    result = _run(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    assert _tables(tmp_path / "x.db") == {"documents", "operations", "snapshots",
                                          "yjs_documents", "yjs_updates", "yjs_snapshots",
                                          "alembic_version"}
    down = _run(tmp_path, "migrate", "base", "--downgrade")
    assert down.returncode == 0, down.stderr
    assert _tables(tmp_path / "x.db") <= {"alembic_version"}


def test_serve_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    result = _run(tmp_path, "serve", "--port", str(free_port()))
    assert result.returncode != 0
    assert "COLLAB_JWT_SECRET" in result.stderr
    assert "--dev" in result.stderr  # says how to get going


@pytest.mark.parametrize("secret", ["", "changeme", "short", "x" * 31])
def test_serve_refuses_placeholder_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           secret: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLLAB_JWT_SECRET", secret)
    with pytest.raises(SystemExit, match="COLLAB_JWT_SECRET"):
        _settings_for_serve(dev=False)


def test_serve_settings_in_dev_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COLLAB_JWT_SECRET", raising=False)
    first = _settings_for_serve(dev=True)
    second = _settings_for_serve(dev=True)
    assert first.dev
    assert first.secret_is_usable()
    assert first.jwt_secret != second.jwt_secret  # random per run, never a fixed default
    # A configured secret is kept in dev mode.
    monkeypatch.setenv("COLLAB_JWT_SECRET", SECRET)
    assert _settings_for_serve(dev=True).jwt_secret == SECRET
    assert not _settings_for_serve(dev=False).dev


@pytest.fixture
def dev_server(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [COLLAB, "serve", "--dev", "--port", str(port)],
            env=_env(tmp_path, COLLAB_DATABASE_URL=sqlite_url), cwd=tmp_path,
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.05)  # polling a starting process, not test synchronisation
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def test_serve_dev_starts_without_a_secret(
    dev_server: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    base, process = dev_server
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    # Dev mode mints tokens for the demo page, signed with the random secret it made.
    minted = httpx.post(f"{base}/dev/token", json={"name": "Dana"}, timeout=5)
    assert minted.status_code == 200
    token = minted.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(f"{base}/documents", json={"id": "dev-doc"}, headers=headers, timeout=5)
    assert created.status_code == 201
    assert httpx.get(f"{base}/", timeout=5).status_code == 200
    process.terminate()
    # uvicorn re-raises the signal after a clean shutdown, so SIGTERM's own status is fine too.
    assert process.wait(30) in (0, -signal.SIGTERM)
    log = (tmp_path / "serve.log").read_text()
    assert "random JWT secret" in log
    assert token not in log


# -- refusing what the server would refuse, in one line ----------------------------------------


def _one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    ("args", "secret", "expected"),
    [
        (["--sub", "alice"], "too-short", "COLLAB_JWT_SECRET"),
        (["--sub", "alice"], "changeme", "COLLAB_JWT_SECRET"),
        (["--sub", ""], SECRET, "--sub"),
        (["--sub", "   "], SECRET, "--sub"),
        (["--sub", "a" * 257], SECRET, "--sub"),
        (["--sub", "alice", "--ttl", "0"], SECRET, "--ttl"),
        (["--sub", "alice", "--ttl", "-60"], SECRET, "--ttl"),
    ],
)
def test_token_refuses_what_the_server_would_refuse(
    tmp_path: Path, args: list[str], secret: str, expected: str
) -> None:
    line = _one_line_failure(_run(tmp_path, "token", *args, COLLAB_JWT_SECRET=secret))
    assert expected in line


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        (["serve"], {"COLLAB_LOG_LEVEL": "LOUD"}, "COLLAB_LOG_LEVEL"),
        (["serve"], {"COLLAB_SQLITE_SYNCHRONOUS": "SOMETIMES"}, "COLLAB_SQLITE_SYNCHRONOUS"),
        (["serve"], {"COLLAB_WS_BACKEND": "carrier-pigeon"}, "COLLAB_WS_BACKEND"),
        (["serve"], {"COLLAB_MAX_MESSAGE_BYTES": "lots"}, "COLLAB_MAX_MESSAGE_BYTES"),
        (["migrate"], {"COLLAB_SNAPSHOT_EVERY": "0"}, "COLLAB_SNAPSHOT_EVERY"),
        (["token", "--sub", "a"], {"COLLAB_DOC_IDLE_SECONDS": "-1"}, "COLLAB_DOC_IDLE_SECONDS"),
    ],
)
def test_a_bad_setting_ends_with_one_clear_line(
    tmp_path: Path, command: list[str], env: dict[str, str], expected: str
) -> None:
    line = _one_line_failure(_run(tmp_path, *command, COLLAB_JWT_SECRET=SECRET, **env))
    assert line.startswith("collab: ") and expected in line


def test_a_backend_whose_package_is_missing_is_named() -> None:
    def nothing_installed(name: str) -> None:
        return None

    assert missing_backend_package("wsproto", nothing_installed) == "wsproto"
    assert missing_backend_package("websockets-sansio", nothing_installed) == "websockets"
    assert missing_backend_package("wsproto") is None  # the test extras install it


def test_serve_names_the_missing_backend_package(tmp_path: Path) -> None:
    """A documented backend whose package is absent: one line, not uvicorn's traceback."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    # A sitecustomize that makes importlib report wsproto as absent, as on a bare install.
    (blocker / "sitecustomize.py").write_text(
        "import importlib.util\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = (\n"
        "    lambda name, *a: None if name == 'wsproto' else _find(name, *a)\n"
        ")\n"
    )
    result = _run(
        tmp_path, "serve", COLLAB_JWT_SECRET=SECRET, COLLAB_WS_BACKEND="wsproto",
        PYTHONPATH=str(blocker),
    )
    line = _one_line_failure(result)
    assert "pip install wsproto" in line


def test_help_texts_show_defaults_and_the_secret_without_markup() -> None:
    for command in ([], ["serve"], ["migrate"], ["token"]):
        result = subprocess.run(
            [COLLAB, *command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0
        text = result.stdout
        assert "``" not in text and "SPEC" not in text and "§" not in text, text
    serve = subprocess.run([COLLAB, "serve", "--help"], capture_output=True, text=True).stdout
    assert "default: 8000" in serve and "COLLAB_JWT_SECRET" in serve
    token_help = subprocess.run([COLLAB, "token", "--help"], capture_output=True, text=True).stdout
    assert "COLLAB_JWT_SECRET" in token_help and "default: 3600" in token_help
