"""One actor per loaded document, owned by the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from collab.actor import ActorConfig, CommitListener, DocumentActor, Remote, Resync
from collab.metrics import Metrics
from collab.pubsub.base import PubSub
from collab.pubsub.messages import Message
from collab.storage.base import Store
from collab.yjs.host import YjsServices


class Registry:
    def __init__(
        self,
        store: Store,
        config: ActorConfig,
        metrics: Metrics,
        pubsub: PubSub,
        yjs: YjsServices | None = None,
    ) -> None:
        self._store = store
        self._yjs = yjs
        self._config = config
        self._metrics = metrics
        self.pubsub = pubsub
        # Called after every batch any actor takes in (see collab.actor.CommitListener).
        self.commit_listeners: list[CommitListener] = []
        self._actors: dict[str, DocumentActor] = {}
        self._closing = False
        pubsub.attach(self.deliver_remote, self.resync_all)
        metrics.documents_loaded = lambda: len(self._actors)

    def __len__(self) -> int:
        return len(self._actors)

    def loaded(self, doc_id: str) -> DocumentActor | None:
        actor = self._actors.get(doc_id)
        return actor if actor is not None and actor.alive else None

    @asynccontextmanager
    async def lease(self, doc_id: str) -> AsyncIterator[DocumentActor]:
        """The document's actor, kept loaded while the block runs.

        Raises DocumentNotFound when the document does not exist.
        """
        actor = await self._acquire(doc_id)
        try:
            yield actor
        finally:
            actor.release()

    async def _acquire(self, doc_id: str) -> DocumentActor:
        if self._closing:
            raise RuntimeError("the server is shutting down")
        while True:
            actor = self._actors.get(doc_id)
            if actor is None or not actor.alive:
                actor = DocumentActor(
                    doc_id,
                    self._store,
                    self._config,
                    self._metrics,
                    self.pubsub,
                    self._exited,
                    self.commit_listeners,
                    self._yjs,
                )
                self._actors[doc_id] = actor
                actor.start()
            # The lease is taken before awaiting, so the actor cannot idle out in between.
            actor.lease()
            try:
                await asyncio.shield(actor.loaded)
            except BaseException:
                actor.release()
                raise
            if actor.alive:
                return actor
            actor.release()

    def _exited(self, actor: DocumentActor) -> None:
        if self._actors.get(actor.doc_id) is actor:
            del self._actors[actor.doc_id]

    def deliver_remote(self, doc_id: str, node: str, message: Message) -> None:
        """Hands another process's message to this process's actor, if it has one."""
        actor = self._actors.get(doc_id)
        if actor is not None:
            actor.post(Remote(node, message))

    def resync_all(self) -> None:
        for actor in list(self._actors.values()):
            actor.post(Resync())

    async def shutdown(self) -> None:
        """Finishes queued ops, snapshots every document and closes its clients with 1001."""
        self._closing = True
        await asyncio.gather(*(actor.stop() for actor in list(self._actors.values())))
