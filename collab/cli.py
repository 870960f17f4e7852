"""The collab command: serve, migrate, token."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from collab.auth import Access, mint_token
from collab.settings import Settings

if TYPE_CHECKING:
    import alembic.config
    import uvicorn
    from fastapi import FastAPI

# The server's imports (FastAPI, uvicorn, SQLAlchemy) wait until `serve` needs them, so
# `collab token` answers at once.


def graceful_server(config: uvicorn.Config, app: FastAPI) -> uvicorn.Server:
    """A uvicorn server that drains the app (queued ops committed, sockets closed with 1001)
    before uvicorn's own shutdown, which would otherwise close every WebSocket with 1012."""
    import uvicorn

    from collab.app import drain
    from collab.gc_tuning import settle_after_startup

    class GracefulServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            settle_after_startup()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()
            await drain(app)
            await super().shutdown(sockets)

    return GracefulServer(config)


def uvicorn_config(app: FastAPI, settings: Settings, log_level: str, **where: object) -> Any:
    import uvicorn

    from collab.http_protocol import guarded_http_protocol, ws_protocol

    return uvicorn.Config(
        app,
        http=guarded_http_protocol(settings.handshake_timeout_seconds),
        ws_max_size=settings.ws_max_frame_bytes(),
        ws_per_message_deflate=False,  # memory per connection, and compression side channels
        ws=ws_protocol(settings.ws_backend),
        log_level=log_level,
        timeout_graceful_shutdown=15,
        **where,  # type: ignore[arg-type]
    )


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
# The module each COLLAB_WS_BACKEND needs; the two websockets backends ship with uvicorn[standard].
BACKEND_PACKAGES = {
    "websockets-sansio": "websockets",
    "websockets": "websockets",
    "wsproto": "wsproto",
}


def missing_backend_package(
    backend: str, find_spec: Callable[[str], object | None] = importlib.util.find_spec
) -> str | None:
    """The package ``backend`` needs when it is not installed, else None."""
    package = BACKEND_PACKAGES[backend]
    return package if find_spec(package) is None else None


def load_settings() -> Settings:
    """The settings, or one line naming the bad variable: never a pydantic traceback."""
    try:
        return Settings()
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            field = str(item["loc"][0]) if item["loc"] else ""
            problems.append(f"COLLAB_{field.upper()}: {item['msg']} (got {item['input']!r})")
        raise SystemExit("collab: bad setting: " + "; ".join(problems)) from None


def _settings_for_serve(dev: bool) -> Settings:
    settings = load_settings()
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
    log_level = args.log_level.lower()
    if log_level not in LOG_LEVELS:
        raise SystemExit(
            f"collab: --log-level (or COLLAB_LOG_LEVEL) must be one of {', '.join(LOG_LEVELS)}, "
            f"not {args.log_level!r}"
        )
    args.log_level = log_level
    settings = _settings_for_serve(args.dev)
    missing = missing_backend_package(settings.ws_backend)
    if missing is not None:
        raise SystemExit(
            f"collab: COLLAB_WS_BACKEND={settings.ws_backend} needs the {missing} package "
            f"(pip install {missing}), or choose another backend"
        )
    if args.workers > 1:
        from collab.cluster import serve_workers

        serve_workers(settings, args.host, args.port, args.workers, run_worker, args.log_level)
        return
    from collab.app import create_app, install_log_redaction

    app = create_app(settings)
    config = uvicorn_config(app, settings, args.log_level, host=args.host, port=args.port)
    install_log_redaction()
    graceful_server(config, app).run()


def alembic_config(database_url: str) -> alembic.config.Config:
    """Alembic's configuration for ``database_url``, with the scripts shipped in the package:
    no ``alembic.ini`` and no source checkout needed (maintainers' ``alembic.ini`` points at the
    same folder)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("collab").joinpath("migrations")))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(args: argparse.Namespace) -> None:
    from alembic import command

    settings = load_settings()
    config = alembic_config(settings.database_url)
    # Alembic says which revisions it ran, as it does under alembic.ini's logging section.
    alembic_log = logging.getLogger("alembic")
    alembic_log.setLevel(logging.INFO)
    alembic_log.addHandler(logging.StreamHandler())
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
    settings = load_settings()
    if not settings.jwt_secret:
        raise SystemExit("collab: COLLAB_JWT_SECRET is not set")
    # Refuse what the server would refuse, rather than print a token nobody can use.
    if not settings.secret_is_usable():
        raise SystemExit(
            "collab: COLLAB_JWT_SECRET is a placeholder or shorter than 32 bytes, which "
            "collab serve refuses; set a real one (e.g. `openssl rand -hex 32`)"
        )
    if not args.sub.strip() or len(args.sub) > 256:
        raise SystemExit("collab: --sub must be 1 to 256 characters, not blank")
    if args.ttl <= 0:
        raise SystemExit(f"collab: --ttl must be a positive number of seconds, not {args.ttl}")
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


class _ShowDefaults(argparse.HelpFormatter):
    """Appends each option's default to its help, unless there is none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def parser() -> argparse.ArgumentParser:
    defaults = _ShowDefaults
    root = argparse.ArgumentParser(
        prog="collab",
        description="A collaborative document editing server. Settings come from COLLAB_* "
        "environment variables or a .env file in the current directory.",
    )
    commands = root.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. It needs COLLAB_JWT_SECRET (at least 32 bytes) unless "
        "--dev is given.",
        formatter_class=defaults,
    )
    p_serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p_serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    p_serve.add_argument(
        "--dev",
        action="store_true",
        help="serve the demo page and mint demo tokens; makes a random JWT secret if none is set",
    )
    p_serve.add_argument(
        "--workers", type=int, default=1, help="server processes (needs COLLAB_REDIS_URL)"
    )
    p_serve.add_argument(
        "--log-level",
        default=os.environ.get("COLLAB_LOG_LEVEL", "info"),
        help=f"one of {', '.join(LOG_LEVELS)}; COLLAB_LOG_LEVEL sets the default",
    )
    p_serve.set_defaults(func=serve)

    p_migrate = commands.add_parser(
        "migrate",
        help="upgrade the database to the latest schema",
        description="Run the Alembic migrations shipped with collab against COLLAB_DATABASE_URL.",
        formatter_class=defaults,
    )
    p_migrate.add_argument("revision", nargs="?", default="head", help="target revision")
    p_migrate.add_argument("--downgrade", action="store_true", help="downgrade to REVISION")
    p_migrate.set_defaults(func=migrate)

    p_token = commands.add_parser(
        "token",
        help="print a signed token",
        description="Print a token signed with COLLAB_JWT_SECRET (from the environment or "
        ".env; at least 32 bytes), carrying COLLAB_JWT_AUDIENCE and COLLAB_JWT_ISSUER when set.",
        formatter_class=defaults,
    )
    p_token.add_argument("--sub", required=True, help="the user id (1-256 characters)")
    p_token.add_argument("--name", help="display name (default: the user id)")
    p_token.add_argument(
        "--doc",
        action="append",
        type=_doc_grant,
        default=[],
        help="ID=read or ID=write, repeatable; ID may be '*'. Without any, every document "
        "may be written",
    )
    p_token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    p_token.set_defaults(func=token)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
