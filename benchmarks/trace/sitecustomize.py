"""A timeline of one ``collab serve``: loaded by ``benchmarks/run.py --trace`` (on PYTHONPATH).

Records, with ``time.perf_counter()`` stamps: each transaction of the SQLite writer thread
(duration, batches, ops), each garbage collection (duration, generation) and the event loop's
lag (a 5 ms timer's lateness), and writes them as JSON to ``$COLLAB_BENCH_TRACE`` when the
writer closes.
A measuring aid, never part of the server: it wraps three methods of ``SqliteWriter``.
Experiments: ``COLLAB_BENCH_GC_THRESHOLD=N`` sets the young generation's threshold,
``COLLAB_BENCH_GC_FREEZE=1`` calls ``gc.freeze()`` at the first commit (once loaded),
``COLLAB_BENCH_SWITCH_INTERVAL=S`` sets ``sys.setswitchinterval``.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import time
from typing import Any

PROBE_SECONDS = 0.005


def install(path: str) -> None:
    from collab.storage.sqlite import SqliteWriter

    commits: list[tuple[float, float, int, int]] = []
    collections: list[tuple[float, float, int]] = []
    lags: list[tuple[float, float]] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            collections.append((gc_started[0], time.perf_counter() - gc_started[0],
                                info["generation"]))

    gc.callbacks.append(on_gc)
    if os.environ.get("COLLAB_BENCH_SWITCH_INTERVAL"):  # an experiment: the GIL's hand-over
        import sys

        sys.setswitchinterval(float(os.environ["COLLAB_BENCH_SWITCH_INTERVAL"]))
    if os.environ.get("COLLAB_BENCH_GC_THRESHOLD"):  # an experiment: fewer young collections
        gc.set_threshold(int(os.environ["COLLAB_BENCH_GC_THRESHOLD"]), *gc.get_threshold()[1:])
    write_group = SqliteWriter._write_group

    def timed_write_group(self: SqliteWriter, group: list[Any], *rest: Any) -> list[bool]:
        began = time.perf_counter()
        try:
            return write_group(self, group, *rest)
        finally:
            commits.append((began, time.perf_counter() - began, len(group),
                            sum(len(request.ops) for request in group)))

    SqliteWriter._write_group = timed_write_group  # type: ignore[method-assign]
    commit = SqliteWriter.commit
    probing: list[bool] = []

    async def probed_commit(self: SqliteWriter, request: Any) -> bool:
        if not probing:
            probing.append(True)
            loop = asyncio.get_running_loop()

            def tick(expected: float) -> None:
                now = time.perf_counter()
                lags.append((expected, now - expected))
                loop.call_later(PROBE_SECONDS, tick, now + PROBE_SECONDS)

            loop.call_later(PROBE_SECONDS, tick, time.perf_counter() + PROBE_SECONDS)
            if os.environ.get("COLLAB_BENCH_GC_FREEZE"):
                gc.freeze()  # an experiment: what the server holds once loaded leaves the GC
        return await commit(self, request)

    SqliteWriter.commit = probed_commit  # type: ignore[method-assign]

    counts = count_calls()

    def dump() -> None:
        with open(path, "w") as out:
            json.dump({"commits": commits, "gc": collections, "lag": lags, "counts": counts,
                       "clock": time.perf_counter(), "wall": time.time()}, out)

    close = SqliteWriter.close

    async def close_and_dump(self: SqliteWriter) -> None:
        await close(self)
        dump()

    # At shutdown: the server may run in a child process, which exits without atexit.
    SqliteWriter.close = close_and_dump  # type: ignore[method-assign]
    from collab.storage.postgres import GroupCommitter

    pg_close = GroupCommitter.close

    async def pg_close_and_dump(self: GroupCommitter) -> None:
        await pg_close(self)
        dump()

    GroupCommitter.close = pg_close_and_dump  # type: ignore[method-assign]
    atexit.register(dump)


def count_calls() -> dict[str, int]:
    """Counts what a second process may add per op: store reads, lost races, pub/sub traffic."""
    from collab.storage.postgres import GroupCommitter
    from collab.storage.sql import SqlStore

    counts: dict[str, int] = {}

    def counted(owner: Any, name: str, key: str) -> None:
        method = getattr(owner, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[key] = counts.get(key, 0) + 1
            return await method(*args, **kwargs)

        setattr(owner, name, wrapper)

    for name in ("load_ops", "find_revs", "load_document", "save_snapshot"):
        counted(SqlStore, name, f"store.{name}")
    write_group = GroupCommitter.write_group

    async def counted_write_group(self: GroupCommitter, group: list[Any]) -> list[bool]:
        won: list[bool] = await write_group(self, group)
        counts["pg.groups"] = counts.get("pg.groups", 0) + 1
        counts["pg.batches"] = counts.get("pg.batches", 0) + len(group)
        counts["pg.lost"] = counts.get("pg.lost", 0) + won.count(False)
        return won

    GroupCommitter.write_group = counted_write_group  # type: ignore[method-assign]
    try:
        from collab.pubsub.redis import RedisPubSub
    except ImportError:
        return counts
    publish, dispatch = RedisPubSub.publish, RedisPubSub._dispatch

    def counted_publish(self: RedisPubSub, doc_id: str, message: Any) -> None:
        key = f"redis.published.{type(message).__name__}"
        counts[key] = counts.get(key, 0) + 1
        publish(self, doc_id, message)

    # Any arguments: the server under test may be an older checkout (--server-env PYTHONPATH=),
    # whose _dispatch took redis-py's message dict.
    def counted_dispatch(self: RedisPubSub, *args: Any) -> None:
        counts["redis.received"] = counts.get("redis.received", 0) + 1  # our own echoes too
        dispatch(self, *args)

    RedisPubSub.publish = counted_publish  # type: ignore[method-assign]
    RedisPubSub._dispatch = counted_dispatch  # type: ignore[method-assign]
    return counts


if os.environ.get("COLLAB_BENCH_TRACE"):
    install(os.environ["COLLAB_BENCH_TRACE"])
