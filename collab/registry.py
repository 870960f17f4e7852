"""One actor per loaded document, owned by the app's lifespan."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from collab.actor import ActorConfig, CommitListener, DocumentActor, Remote, Resync
from collab.allocator import return_free_memory
from collab.metrics import Metrics
from collab.pubsub.base import PubSub
from collab.pubsub.messages import Message
from collab.storage.base import Store
from collab.yjs.host import YjsServices

# A document this large gives its memory back to the OS when it unloads (collab.allocator).
LARGE_DOCUMENT = 1 << 20


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
        self._background: set[asyncio.Task[None]] = set()
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
                actor.start().add_done_callback(functools.partial(self._on_task_done, actor))
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

    def _on_task_done(self, actor: DocumentActor, _task: asyncio.Task[None]) -> None:
        self._finished(actor)

    def _exited(self, actor: DocumentActor) -> None:
        if self._actors.get(actor.doc_id) is actor:
            del self._actors[actor.doc_id]

    def _finished(self, actor: DocumentActor) -> None:
        """After the actor's task ended (its final snapshot written)."""
        if actor.held_bytes >= LARGE_DOCUMENT:
            actor.forget()
            task = asyncio.create_task(self._release_memory(), name="release-memory")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _release_memory(self) -> None:
        """Lets the storage layer's caches and then the C allocator give a large document's
        memory back (collab.allocator)."""
        await self._store.release_memory()
        return_free_memory()

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
