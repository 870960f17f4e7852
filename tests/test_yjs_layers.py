"""The Yjs protocol, awareness, bridge and room are pure: no database, web or network library."""

from __future__ import annotations

import subprocess
import sys

PURE = [
    "collab.yjs.codec",
    "collab.yjs.messages",
    "collab.yjs.awareness",
    "collab.yjs.units",
    "collab.yjs.bridge",
    "collab.yjs.room",
]
IO = ["sqlalchemy", "fastapi", "starlette", "redis", "uvicorn", "aiosqlite", "asyncpg"]


def test_the_yjs_core_imports_no_io_library() -> None:
    script = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in PURE)
        + f"print(sorted(m for m in {IO!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
