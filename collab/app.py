"""The ASGI application: ``create_app(settings)`` builds everything in its lifespan."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from http import HTTPStatus
from importlib.resources import files
from urllib.parse import unquote_plus

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collab import __version__
from collab.connection import serve_socket
from collab.errors import CollabError
from collab.routers import dev, documents, misc
from collab.services import Services, build_services, start_services
from collab.settings import Settings
from collab.yjs import routes as yjs_routes
from collab.yjs.endpoint import serve_yjs_socket

log = logging.getLogger(__name__)

# A query string inside a log line: from a "?" to the end of the URL.
_QUERY_IN_TEXT = re.compile(r"\?[^\s\"]*")
_QUERY_PIECE = re.compile(r"([^&;=]*)(=?)([^&;]*)")
_CREDENTIAL_NAMES = ("token", "ticket")


def _names_a_credential(raw_name: str) -> bool:
    """Whether a query parameter's name, however it is spelled, could carry a credential.

    The server reads names the way ``urllib.parse.parse_qsl`` does (percent-decoded, ``+`` as a
    space), so the name is decoded until it stops changing before it is compared; any name that
    then contains ``token`` or ``ticket`` in any case counts, which redacts more than the server
    would read rather than less.
    """
    name = raw_name
    for _ in range(4):
        decoded = unquote_plus(name, errors="replace")
        if decoded == name:
            break
        name = decoded
    lowered = name.lower()
    return any(word in lowered for word in _CREDENTIAL_NAMES)


def _redact_query(match: re.Match[str]) -> str:
    def piece(part: re.Match[str]) -> str:
        name, equals, value = part.groups()
        if value and _names_a_credential(name):
            return f"{name}{equals}[redacted]"
        return part.group(0)

    return _QUERY_PIECE.sub(piece, match.group(0))


def redact(text: str) -> str:
    """Hides the value of every query parameter that names a credential, in any spelling."""
    if "?" not in text:
        return text
    return _QUERY_IN_TEXT.sub(_redact_query, text)


class RedactCredentials(logging.Filter):
    """Keeps credentials that travel in a WebSocket URL out of uvicorn's log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class DropDenialMisreport(logging.Filter):
    """uvicorn's sans-I/O WebSocket backend logs this error after every handshake refused with
    an HTTP response (the denial extension), although the refusal went out correctly. Our
    handler always accepts or refuses, so the line would only ever be that false alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "ASGI callable returned without completing handshake."


class OneLineForInvalidUtf8(logging.Filter):
    """uvicorn's sans-I/O backend logs a text frame that is not UTF-8 as an ERROR with a
    traceback, every time, after closing the socket with 1007 as it should. Anyone can send
    such frames, so each becomes one WARNING line: the event is kept, the log is not filled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Invalid UTF-8 sequence received from client.":
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "a text frame that is not UTF-8 was closed with 1007"
        return True


def install_log_redaction() -> None:
    for name, kind in (
        ("uvicorn.access", RedactCredentials),
        ("uvicorn.error", RedactCredentials),
        ("uvicorn.error", DropDenialMisreport),
        ("uvicorn.error", OneLineForInvalidUtf8),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


class BodySizeLimit:
    """Answers 413 to a request body larger than the limit, before the route reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        too_large = started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge(f"request body over {self.max_bytes} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns an error while reading the body into its own 400; answer 413 instead.
            nonlocal started
            if too_large and not started:
                return
            started = True
            await send(message)

        with suppress(BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"request body too large"}'
        await send(
            {
                "type": "http.response.start",
                "status": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(CollabError):
    """Raised inside the app's ``receive`` to stop a body that passes the limit; answered 413."""


async def validation_failed(request: Request, error: Exception) -> Response:
    """FastAPI's 422, ASCII-escaped: the echoed input may hold a lone surrogate, which the
    default UTF-8 JSON response cannot encode (it would fail with a 500)."""
    assert isinstance(error, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(error.errors())})
    return Response(body, status_code=422, media_type="application/json")


_DOCUMENT_SOCKET = re.compile(r"/ws/documents/([^/]+)")
_YJS_SOCKET = re.compile(r"/ws/yjs/([^/]+)")


def _route_path(scope: Scope) -> str:
    """The path the router would match (Starlette's rule: the root path taken off)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    rest = path[len(root_path) :]
    if root_path and path.startswith(root_path) and rest.startswith("/"):
        return rest
    return path


class CollabApp(FastAPI):
    """FastAPI, with the document WebSocket served ahead of the middleware stack and router.

    None of those layers does anything for that socket (CORS and the body limit pass WebSockets
    through, and the route has no dependencies), but each one keeps a suspended coroutine frame,
    and the router an ``AsyncExitStack`` or two, for as long as the connection lives: about
    15 KiB per idle connection. Any other WebSocket path still goes through the router, which
    refuses it (403) as before.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path = _route_path(scope)
            match = _DOCUMENT_SOCKET.fullmatch(path)
            if match is not None:
                await serve_socket(scope, receive, send, match[1], self.state.services)
                return
            match = _YJS_SOCKET.fullmatch(path)
            if match is not None:
                await serve_yjs_socket(scope, receive, send, match[1], self.state.services)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    if not settings.jwt_secret:
        raise ValueError("COLLAB_JWT_SECRET is required (or run with --dev)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_log_redaction()
        services = build_services(settings)
        app.state.services = services
        await start_services(services)
        try:
            yield
        finally:
            await drain(app)
            await services.close()

    app = CollabApp(
        title="collab",
        version=__version__,
        description="Collaborative document editing: REST for documents and history; "
        "real-time editing over the WebSocket /ws/documents/{doc_id} (see docs/protocol.md).",
        lifespan=lifespan,
        # FastAPI's own pages load their scripts from a CDN; /docs is served from the package.
        docs_url=None,
        redoc_url=None,
    )
    app.add_api_route("/docs", swagger_ui, include_in_schema=False)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.include_router(documents.router)
    app.include_router(misc.router)
    app.include_router(yjs_routes.router)
    if settings.dev:
        app.include_router(dev.router)
    app.mount(
        "/static", StaticFiles(directory=str(files("collab").joinpath("static"))), name="static"
    )

    origins = settings.origin_allowlist()
    if origins is None or origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=["*"] if origins is None else sorted(origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_message_bytes)
    return app


async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for /openapi.json, from the assets vendored in ``static/swagger-ui``."""
    root = request.scope.get("root_path", "").rstrip("/")
    assets = f"{root}/static/swagger-ui"
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="collab - API",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon-32x32.png",
    )


async def drain(app: FastAPI) -> None:
    """Graceful stop: refuse new sockets, commit queued ops, snapshot, close sockets with 1001."""
    services: Services | None = getattr(app.state, "services", None)
    if services is None or services.draining:
        return
    services.draining = True
    await services.registry.shutdown()
