"""The pure core imports nothing that does I/O: no SQLAlchemy, FastAPI, Redis or uvicorn."""

from __future__ import annotations

import subprocess
import sys

PURE = ["collab.ot", "collab.types", "collab.errors", "collab.protocol", "collab.document",
        "collab.presence"]
IO = ["sqlalchemy", "fastapi", "starlette", "redis", "uvicorn", "aiosqlite", "asyncpg"]


def test_the_pure_core_imports_no_io_library() -> None:
    script = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in PURE)
        + f"print(sorted(m for m in {IO!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_cli_and_cluster_do_not_import_each_other() -> None:
    script = "import sys, collab.cluster\nprint('collab.cli' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
