"""A WebSocket's sending half: a bounded outbox, a writer task draining it, and a clean close.

Shared by the OT connection (collab.connection) and the Yjs connection (collab.yjs.connection).
Each keeps its own queues (what is coalesced, when one is full and with which close code) and
hands the writer one ASGI message at a time; this class owns the order in which the two halves
of a socket stop, which is the same for both:

- ``_close`` is the close the server asked for (:meth:`OutboxSocket.close`): nothing more is
  queued once it is set, and the writer ends by sending it. With ``flush=False`` the queues are
  dropped and a send in progress is cut short; the close frame still goes out.
- ``_done`` is set once the writer has sent that close (or could not): the reader, if it is
  still waiting for a frame, is then interrupted, and :meth:`OutboxSocket._interrupted` tells
  its loop that this cancellation is the end of the socket, not of the server.
- The writer task exists only while something is queued: between two bursts an idle socket
  holds no task at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar

from starlette.types import Message, Receive, Send

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0


class OutboxSocket:
    """The writer and the close of one accepted socket; subclasses add the queues and the reader.

    A subclass provides :attr:`label` (its id in logs and task names), :meth:`_next_message`
    and :meth:`_drop_queued`, queues with its own ``send`` methods (calling
    :meth:`_start_writer`), reads in the socket's own task between :meth:`_start_reading` and
    the end of its loop, and ends with :meth:`_wind_down`.
    """

    __slots__ = ("_close", "_done", "_reader", "_receive", "_send", "_sending", "_writer")

    # The writer task's name is this, a colon and the label.
    WRITER_PREFIX: ClassVar[str] = "writer"

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._close: tuple[int, str] | None = None
        self._done = False
        self._writer: asyncio.Task[None] | None = None
        self._sending = False
        # The task running the read loop while it runs, so that the writer can interrupt it.
        self._reader: asyncio.Task[object] | None = None

    @property
    def label(self) -> str:
        raise NotImplementedError

    def _next_message(self) -> Message | None:
        """Takes the next ASGI send message off the queues; None when they are empty."""
        raise NotImplementedError

    def _drop_queued(self) -> None:
        """Forgets everything queued: the close cut the queue short, or the socket is over."""
        raise NotImplementedError

    @property
    def closing(self) -> bool:
        return self._close is not None

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Sends the close frame once what is queued went out (``flush``) or at once."""
        if self._close is not None:
            return
        self._close = (code, reason)
        if not flush:
            self._drop_queued()
            if self._sending:
                # A stalled send would hold the close back; the cancelled writer still sends it.
                # A writer that has not started yet finds the queue empty and sends it anyway
                # (cancelled before its first step, it would never reach the close).
                assert self._writer is not None
                self._writer.cancel()
                return
        self._start_writer()

    def close_when_expired(self, expires_at: float, code: int) -> asyncio.TimerHandle:
        """Closes the socket with ``code`` once its token expires (``expires_at``, seconds since
        the epoch); the caller cancels the handle when the socket ends first."""
        delay = max(0.0, expires_at - time.time())
        return asyncio.get_running_loop().call_later(delay, self.close, code, "token expired")

    # -- the writer -------------------------------------------------------------------------

    def _start_writer(self) -> None:
        if self._writer is None and not self._done:
            self._writer = asyncio.create_task(
                self._write_loop(), name=f"{self.WRITER_PREFIX}:{self.label}"
            )

    async def _write_loop(self) -> None:
        try:
            while (message := self._next_message()) is not None:
                self._sending = True
                try:
                    await self._send(message)
                finally:
                    self._sending = False
        except asyncio.CancelledError:
            if self._close is None:
                raise
            # close(flush=False) cut the queue short; the close frame still goes out below.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:
            # The transport is gone: nothing more can be sent, the socket is over.
            log.debug("send to %s failed", self.label, exc_info=True)
            if self._close is None:
                self._close = (1000, "")
            self._finish()
            return
        if self._close is None:
            # Drained: the task ends and the next frame starts a new one.
            self._drop_queued()
            self._writer = None
            return
        await self._send_close(*self._close)
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._drop_queued()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            # The peer is gone or stalled; the server drops the transport when we return.
            log.debug("close %s for %s did not complete", code, self.label)

    # -- the reader's start and end ---------------------------------------------------------

    def _start_reading(self) -> asyncio.Task[object] | None:
        """The calling task, registered as the reader the writer interrupts once the socket is
        closed; None when it already is (nothing more to read)."""
        task = asyncio.current_task()
        assert task is not None
        if self._done:
            return None
        self._reader = task
        return task

    def _interrupted(self, task: asyncio.Task[object]) -> bool:
        """Whether a CancelledError the reader caught is the writer's interruption (the close
        went out while it waited for the client): then it stops reading, the task uncancelled.
        Any other cancellation is not the socket's to swallow."""
        if not self._done:
            return False
        task.uncancel()
        return True

    async def _wind_down(self) -> None:
        """Once the reader stopped: closes with 1000 unless a close was asked for, and lets the
        writer flush and send the close frame; a stalled one is cut short."""
        self._reader = None
        if self._close is None:
            self._close = (1000, "")
            self._start_writer()
        writer = self._writer
        if writer is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.gather(writer, return_exceptions=True)
            except TimeoutError:
                writer.cancel()
