"""``collab serve --workers N``: N server processes sharing one listening socket.

Each worker is a full server (its own actors) joined to the others through Redis and a shared
PostgreSQL database, so a document's clients may land on any worker. The parent only binds the
socket, starts the workers, forwards SIGTERM/SIGINT, and exits when they have drained.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

from collab.db import is_sqlite
from collab.settings import Settings


def refusal(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` processes cannot run with these settings, or None if they can."""
    if workers <= 1:
        return None
    if not settings.redis_url:
        return (
            "--workers > 1 needs COLLAB_REDIS_URL: each process forwards the others' "
            "ops to its own clients through Redis"
        )
    if is_sqlite(settings.database_url):
        return (
            "--workers > 1 needs a shared PostgreSQL database in COLLAB_DATABASE_URL "
            "(postgresql+asyncpg://…), not SQLite"
        )
    return None


# Runs one worker: (the shared socket, the settings as JSON, the log level). A module-level
# function, so the spawned process can import it.
Worker = Callable[[socket.socket, str, str], None]


def serve_workers(
    settings: Settings,
    host: str,
    port: int,
    workers: int,
    worker: Worker,
    log_level: str = "info",
) -> None:
    reason = refusal(settings, workers)
    if reason is not None:
        raise SystemExit(f"collab: {reason}")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=worker,
            args=(sock, settings.model_dump_json(), log_level),
            name=f"collab-worker-{i}",
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    print(f"collab: {workers} workers on http://{host}:{port} (pid {os.getpid()})", file=sys.stderr)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for process in processes:
        process.join()
    sock.close()
