"""Tickets, health, readiness and metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import PlainTextResponse

from collab.deps import PrincipalDep, ServicesDep, require
from collab.schemas import TicketOut, TicketRequest, error_responses

log = logging.getLogger(__name__)
router = APIRouter()


@router.post(
    "/tickets",
    status_code=status.HTTP_201_CREATED,
    response_model=TicketOut,
    tags=["auth"],
    responses=error_responses(401, 403, 413, 422),
)
async def create_ticket(
    body: TicketRequest, principal: PrincipalDep, services: ServicesDep
) -> TicketOut:
    """A single-use ticket for opening this document's WebSocket from a browser."""
    require(principal, body.doc, "read")
    ttl = services.settings.ticket_ttl_seconds
    ticket = await services.tickets.issue(principal, body.doc, ttl)
    return TicketOut(ticket=ticket, expires_in=ttl)


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"])
async def readyz(services: ServicesDep) -> dict[str, str]:
    """Readiness: the database (and Redis, when configured) can be reached."""
    checks: dict[str, str] = {}
    try:
        await services.store.ping()
        checks["database"] = "ok"
    except Exception as error:
        log.warning("readiness: database unreachable: %s", error)
        checks["database"] = "unreachable"
    for name, probe in services.readiness_probes.items():
        checks[name] = "ok" if await probe() else "unreachable"
    if services.draining:
        checks["server"] = "shutting down"
    if any(value != "ok" for value in checks.values()):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, checks)
    return {"status": "ready", **checks}


@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
async def metrics(services: ServicesDep) -> PlainTextResponse:
    """Prometheus text format."""
    return PlainTextResponse(
        services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
