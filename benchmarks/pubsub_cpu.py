"""CPU per fan-out message through Redis: ``RedisPubSub`` as it is, or as it was at a git revision.

Two processes on one Redis, both subscribed to one document's channel, as two server processes
are: the publisher publishes ``--messages`` one-op ``Committed`` messages in bursts (its CPU also
pays for Redis's echo of each one back to it); the receiver takes them in. Each reports its
``time.process_time()`` over the run, divided by the number of messages.

    .venv/bin/python benchmarks/pubsub_cpu.py                       # the working tree
    .venv/bin/python benchmarks/pubsub_cpu.py --rev a63b765         # RedisPubSub at a revision
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
import types
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collab.pubsub.messages import Committed, Message, PeerLeft  # noqa: E402
from collab.types import StoredOp  # noqa: E402

DOC = "bench"


def load(rev: str | None) -> Any:
    """``RedisPubSub`` from the working tree, or from ``collab/pubsub/redis.py`` at ``rev``."""
    if rev is None:
        from collab.pubsub.redis import RedisPubSub

        return RedisPubSub
    source = subprocess.run(
        ["git", "show", f"{rev}:collab/pubsub/redis.py"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    spec = importlib.util.spec_from_loader("collab.pubsub.redis_at_rev", loader=None)
    assert spec is not None
    module = types.ModuleType(spec.name)
    exec(compile(source, f"{rev}:collab/pubsub/redis.py", "exec"), module.__dict__)
    return module.RedisPubSub


def typing_op(rev: int) -> Committed:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Committed((StoredOp(rev, [rev % 500, "x"], "tab-1", rev, "user-1", at),))


async def run(role: str, args: argparse.Namespace) -> dict[str, float]:
    pubsub = load(args.rev)(args.url, args.prefix)
    count = 0
    first = 0.0
    signals: dict[str, asyncio.Event] = {"ready": asyncio.Event(), "done": asyncio.Event()}
    all_in = asyncio.Event()

    def heard(doc_id: str, node: str, message: Message) -> None:
        nonlocal count, first
        if isinstance(message, PeerLeft):  # the other side's signal
            signals[message.client].set()
            return
        count += 1
        if count == 1:
            first = time.process_time()
        if count == args.messages:
            all_in.set()

    pubsub.attach(heard, lambda: None)
    await pubsub.start()
    await pubsub.subscribe(DOC)
    try:
        if role == "receive":
            while count == 0:  # until the publisher has heard it and started
                pubsub.publish(DOC, PeerLeft("ready", "", ""))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await all_in.wait()
            await all_in.wait()
            spent = (time.process_time() - first) / (args.messages - 1)
            pubsub.publish(DOC, PeerLeft("done", "", ""))  # after every echo the publisher gets
            await asyncio.sleep(0.5)  # let it leave before the connection closes
        else:
            await signals["ready"].wait()
            started = time.process_time()
            for rev in range(1, args.messages + 1):
                pubsub.publish(DOC, typing_op(rev))
                if rev % args.burst == 0:
                    await asyncio.sleep(0)
            await signals["done"].wait()
            spent = (time.process_time() - started) / args.messages
        return {"cpu_us_per_message": spent * 1e6}
    finally:
        await pubsub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rev", help="git revision of collab/pubsub/redis.py (default: tree)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--burst", type=int, default=8, help="messages published per loop turn")
    parser.add_argument("--role", choices=["receive"], help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=f"cpu-{uuid.uuid4().hex[:8]}:", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    if args.role == "receive":
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            print(json.dumps(runner.run(run("receive", args))), flush=True)
        return
    receiver = subprocess.Popen(
        [sys.executable, __file__, *sys.argv[1:], "--role", "receive", "--prefix", args.prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        published = runner.run(run("publish", args))
    received = json.loads(receiver.communicate(timeout=120)[0])
    print(
        f"{args.rev or 'working tree'}: {args.messages} messages, bursts of {args.burst}: "
        f"{published['cpu_us_per_message']:.1f} µs CPU per published message "
        f"(its echo included), {received['cpu_us_per_message']:.1f} µs per received message"
    )


if __name__ == "__main__":
    main()
