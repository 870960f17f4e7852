"""Everything the app builds at startup, handed to routes and connections by injection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from collab.actor import ActorConfig
from collab.db import SessionFactory, create_engine, create_session_factory, create_writer_engine
from collab.metrics import Metrics
from collab.pubsub.base import PubSub
from collab.pubsub.local import LocalPubSub
from collab.ratelimit import ConnectionCounts, KeyedBuckets, Limits
from collab.registry import Registry
from collab.settings import Settings
from collab.storage import SqlStore, Store, create_committer
from collab.tickets import MemoryTicketStore, TicketStore
from collab.yjs.host import YjsConfig, YjsServices
from collab.yjs.store import YjsStore


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    writer_engine: Engine | None  # SQLite's writer thread's own connection (None elsewhere)
    sessions: SessionFactory
    store: Store
    pubsub: PubSub
    registry: Registry
    tickets: TicketStore
    metrics: Metrics
    draining: bool = False
    readiness_probes: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits.unlimited)

    async def close(self) -> None:
        """Releases what ``build_services`` built (after the registry has drained)."""
        await self.pubsub.close()
        await self.store.close()
        if self.writer_engine is not None:
            self.writer_engine.dispose()
        await self.engine.dispose()


def actor_config(settings: Settings) -> ActorConfig:
    return ActorConfig(
        inbox_size=settings.inbox_size,
        snapshot_every=settings.snapshot_every,
        idle_seconds=settings.doc_idle_seconds,
        history_window=settings.history_window,
        max_rebase=settings.max_rebase_distance,
        frames_per_second=settings.broadcast_frames_per_second,
        max_document_bytes=settings.max_document_bytes,
    )


def yjs_services(settings: Settings, sessions: SessionFactory) -> YjsServices:
    config = YjsConfig(
        text_root=settings.yjs_text,
        max_document_bytes=settings.yjs_max_document_bytes,
        max_awareness_bytes=settings.yjs_max_awareness_bytes,
        max_awareness_clients=settings.yjs_max_awareness_clients,
        compact_every=settings.yjs_compact_every,
    )
    return YjsServices(YjsStore(sessions), config)


def build_services(settings: Settings) -> Services:
    """The engines, the store and its committer, pub/sub and the registry, for one process.

    Redis pub/sub is imported only when ``COLLAB_REDIS_URL`` is set; without it a local pub/sub
    (this process alone) takes its place. Nothing connects yet: ``start_services`` does.
    """
    sync = settings.sqlite_synchronous
    engine = create_engine(settings.database_url, sqlite_synchronous=sync)
    writer_engine = create_writer_engine(settings.database_url, sqlite_synchronous=sync)
    sessions = create_session_factory(engine)
    store = SqlStore(sessions, create_committer(engine, writer_engine))
    pubsub: PubSub
    if settings.redis_url:
        from collab.pubsub.redis import RedisPubSub

        pubsub = RedisPubSub(settings.redis_url, settings.redis_prefix)
    else:
        pubsub = LocalPubSub()
    metrics = Metrics()
    registry = Registry(
        store, actor_config(settings), metrics, pubsub, yjs_services(settings, sessions)
    )
    return Services(
        settings=settings,
        engine=engine,
        writer_engine=writer_engine,
        sessions=sessions,
        store=store,
        pubsub=pubsub,
        registry=registry,
        tickets=MemoryTicketStore(),
        metrics=metrics,
        limits=Limits(
            user_ops=KeyedBuckets(settings.user_ops_per_second, settings.user_ops_burst),
            user_connections=ConnectionCounts(settings.max_connections_per_user),
            address_connections=ConnectionCounts(settings.max_connections_per_address),
        ),
    )


async def start_services(services: Services) -> None:
    """Joins the other processes (Redis: fan-out, shared tickets, readiness)."""
    await services.pubsub.start()
    settings = services.settings
    if settings.redis_url:
        from collab.pubsub.redis import RedisPubSub
        from collab.tickets import RedisTicketStore

        pubsub = services.pubsub
        assert isinstance(pubsub, RedisPubSub)
        services.tickets = RedisTicketStore(pubsub.redis, settings.redis_prefix)
        services.readiness_probes["redis"] = pubsub.ping
