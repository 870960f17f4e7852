"""The ``collab`` command: serve, migrate, token (SPEC §1)."""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collab.auth import Access, mint_token
from collab.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

# The server's imports (FastAPI, uvicorn, SQLAlchemy) wait until `serve` needs them, so
# `collab token` answers at once.


def graceful_server(config: uvicorn.Config, app: FastAPI) -> uvicorn.Server:
    """A uvicorn server that drains the app (queued ops committed, sockets closed with 1001)
    before uvicorn's own shutdown, which would otherwise close every WebSocket with 1012."""
    import uvicorn

    from collab.app import drain

    class GracefulServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()
            await drain(app)
            await super().shutdown(sockets)

    return GracefulServer(config)


def ws_protocol(backend: str) -> str:
    """uvicorn's ``ws`` option for a ``COLLAB_WS_BACKEND``: ``websockets-sansio`` is served by
    collab's leaner subclass of uvicorn's protocol (see ``collab.ws_protocol``)."""
    if backend == "websockets-sansio":
        return "collab.ws_protocol:LeanWebSocketsSansIOProtocol"
    return backend


def uvicorn_config(app: FastAPI, settings: Settings, log_level: str, **where: object) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        ws_max_size=settings.ws_max_frame_bytes(),
        ws_per_message_deflate=False,  # memory per connection, and compression side channels
        ws=ws_protocol(settings.ws_backend),
        log_level=log_level,
        timeout_graceful_shutdown=15,
        **where,  # type: ignore[arg-type]
    )


def _settings_for_serve(dev: bool) -> Settings:
    settings = Settings()
    if dev:
        settings = settings.model_copy(update={"dev": True})
        if not settings.jwt_secret:
            settings = settings.model_copy(update={"jwt_secret": secrets.token_urlsafe(32)})
            print("collab: dev mode: made a random JWT secret for this run", file=sys.stderr)
    elif not settings.secret_is_usable():
        raise SystemExit(
            "collab: COLLAB_JWT_SECRET is unset, a placeholder or shorter than 32 bytes; "
            "set it (e.g. `openssl rand -hex 32`), or run with --dev"
        )
    return settings


def run_worker(sock: socket.socket, settings_json: str, log_level: str) -> None:
    """One process of ``collab serve --workers N``, serving on the socket the parent bound."""
    from collab.app import create_app, install_log_redaction

    settings = Settings.model_validate_json(settings_json)
    app = create_app(settings)
    install_log_redaction()
    graceful_server(uvicorn_config(app, settings, log_level), app).run(sockets=[sock])


def serve(args: argparse.Namespace) -> None:
    settings = _settings_for_serve(args.dev)
    if args.workers > 1:
        from collab.cluster import serve_workers

        serve_workers(settings, args.host, args.port, args.workers, run_worker, args.log_level)
        return
    from collab.app import create_app, install_log_redaction

    app = create_app(settings)
    config = uvicorn_config(app, settings, args.log_level, host=args.host, port=args.port)
    install_log_redaction()
    graceful_server(config, app).run()


def migrate(args: argparse.Namespace) -> None:
    from alembic import command
    from alembic.config import Config

    settings = Settings()
    root = Path(__file__).resolve().parent.parent
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    if args.revision.startswith("-") or args.downgrade:
        command.downgrade(config, args.revision)
    else:
        command.upgrade(config, args.revision)


def _doc_grant(value: str) -> tuple[str, Access]:
    doc_id, sep, access = value.partition("=")
    if not sep or access not in ("read", "write") or not doc_id:
        raise argparse.ArgumentTypeError("use ID=read or ID=write (ID may be '*')")
    return doc_id, "write" if access == "write" else "read"


def token(args: argparse.Namespace) -> None:
    settings = Settings()
    if not settings.jwt_secret:
        raise SystemExit("collab: COLLAB_JWT_SECRET is not set")
    docs: dict[str, Access] | None = dict(args.doc) if args.doc else None
    print(
        mint_token(
            settings.jwt_secret,
            args.sub,
            name=args.name,
            docs=docs,
            ttl=args.ttl,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="collab", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser("serve", help="run the server")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--dev", action="store_true", help="demo page and dev tokens")
    p_serve.add_argument("--workers", type=int, default=1, help="processes (needs Redis)")
    p_serve.add_argument("--log-level", default=os.environ.get("COLLAB_LOG_LEVEL", "info"))
    p_serve.set_defaults(func=serve)

    p_migrate = commands.add_parser("migrate", help="alembic upgrade head")
    p_migrate.add_argument("revision", nargs="?", default="head")
    p_migrate.add_argument("--downgrade", action="store_true", help="downgrade to REVISION")
    p_migrate.set_defaults(func=migrate)

    p_token = commands.add_parser("token", help="print a signed token")
    p_token.add_argument("--sub", required=True)
    p_token.add_argument("--name")
    p_token.add_argument(
        "--doc",
        action="append",
        type=_doc_grant,
        default=[],
        help="ID=read|write, repeatable; ID may be '*'",
    )
    p_token.add_argument("--ttl", type=int, default=3600)
    p_token.set_defaults(func=token)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
