"""Everything the app builds at startup, handed to routes and connections by injection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from collab.db import SessionFactory
from collab.metrics import Metrics
from collab.ratelimit import Limits
from collab.registry import Registry
from collab.settings import Settings
from collab.store import Store
from collab.tickets import TicketStore


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    store: Store
    registry: Registry
    tickets: TicketStore
    metrics: Metrics
    draining: bool = False
    readiness_probes: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits.unlimited)
