"""One-op commits on PostgreSQL, one at a time: the committer's one-statement path against the
transaction of statements it replaced, alternating, on a fresh database.

    .venv/bin/python benchmarks/pg_commit.py [--commits 2000] [--rounds 3]

Prints wall time and this process's CPU time per commit for each round: the two-client hot
document commits one op per round trip, so this is its floor on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run import BENCH_POSTGRES_URL, COLLAB, create_database, drop_database  # noqa: E402

from collab.db import create_engine  # noqa: E402
from collab.storage.base import CommitRequest  # noqa: E402
from collab.storage.postgres import GroupCommitter  # noqa: E402
from collab.storage.sql import EngineCommitter  # noqa: E402
from collab.types import StoredOp  # noqa: E402


async def commit_loop(database: str, doc: str, one_statement: bool, commits: int) -> tuple[
        float, float]:
    engine = create_engine(database)
    committer = GroupCommitter(engine)
    committer._one_statement = one_statement  # the experiment's switch
    if not one_statement:
        committer._fallback = EngineCommitter(engine)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(text("INSERT INTO documents VALUES (:id, '', 0, :now, :now)"),
                           {"id": doc, "now": now})
    wall, cpu = time.perf_counter(), time.process_time()
    for rev in range(1, commits + 1):
        op = StoredOp(rev, [rev % 50, "[1234567890]"], "bench", rev, "u", now)
        assert await committer.commit(CommitRequest(doc, rev - 1, [op]))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await committer.close()
    await engine.dispose()
    return wall / commits, cpu / commits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    database = asyncio.run(create_database(BENCH_POSTGRES_URL))
    try:
        subprocess.run([str(COLLAB), "migrate"], check=True, capture_output=True,
                       env={**os.environ, "COLLAB_DATABASE_URL": database})
        for round_ in range(args.rounds):
            for one_statement in (False, True):
                name = "one statement" if one_statement else "transaction"
                wall, cpu = asyncio.run(commit_loop(
                    database, f"d{round_}-{one_statement}", one_statement, args.commits))
                print(f"round {round_ + 1}, {name}: {wall * 1e6:,.0f} µs per commit, "
                      f"{cpu * 1e6:,.0f} µs CPU (this process) per commit", flush=True)
    finally:
        asyncio.run(drop_database(BENCH_POSTGRES_URL, database))


if __name__ == "__main__":
    main()
