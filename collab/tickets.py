"""Single-use WebSocket tickets (SPEC §2): browsers cannot put a token in a WebSocket header."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from collab.auth import Principal


@dataclass(frozen=True, slots=True)
class Ticket:
    principal: Principal
    doc_id: str
    expires_at: float


class TicketStore(Protocol):
    async def issue(self, principal: Principal, doc_id: str, ttl: float) -> str: ...

    async def redeem(self, ticket: str, doc_id: str) -> Principal | None: ...


class MemoryTicketStore:
    """Tickets for one process; with several processes, the Redis store shares them."""

    def __init__(self) -> None:
        self._tickets: dict[str, Ticket] = {}

    async def issue(self, principal: Principal, doc_id: str, ttl: float) -> str:
        self._sweep()
        ticket = secrets.token_urlsafe(32)
        self._tickets[ticket] = Ticket(principal, doc_id, time.monotonic() + ttl)
        return ticket

    async def redeem(self, ticket: str, doc_id: str) -> Principal | None:
        found = self._tickets.pop(ticket, None)
        if found is None or found.doc_id != doc_id or found.expires_at < time.monotonic():
            return None
        return found.principal

    def _sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, t in self._tickets.items() if t.expires_at < now]:
            del self._tickets[key]
