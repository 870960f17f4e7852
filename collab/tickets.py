"""Single-use WebSocket tickets (SPEC §2): browsers cannot put a token in a WebSocket header."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from collab.auth import Principal

if TYPE_CHECKING:
    from redis.asyncio import Redis


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


class RedisTicketStore:
    """Tickets shared by every process: any of them may receive the WebSocket."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def issue(self, principal: Principal, doc_id: str, ttl: float) -> str:
        ticket = secrets.token_urlsafe(32)
        payload = json.dumps(
            {
                "doc": doc_id,
                "sub": principal.sub,
                "name": principal.name,
                "docs": principal.docs,
                "exp": principal.expires_at,
            }
        )
        await self._redis.set(f"{self._prefix}ticket:{ticket}", payload, ex=max(1, int(ttl)))
        return ticket

    async def redeem(self, ticket: str, doc_id: str) -> Principal | None:
        raw = await self._redis.getdel(f"{self._prefix}ticket:{ticket}")
        if raw is None:
            return None
        data = json.loads(raw)
        if data["doc"] != doc_id:
            return None
        return Principal(
            sub=data["sub"], name=data["name"], docs=data["docs"], expires_at=data["exp"]
        )
