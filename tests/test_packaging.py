"""``pip install .`` outside the checkout, then ``collab migrate`` and ``collab serve`` (issue 17).

The package is built and installed (no editable link to the checkout) into a fresh venv, and
the commands run from a directory that is not the checkout, so nothing can be read from the
source tree: the Alembic scripts, the static files and Swagger UI's assets must all ship in the
wheel. The dependencies are borrowed from the test venv through a ``.pth`` line, so the test
needs no network for them; ``collab`` itself is imported from the new venv, which the test checks.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx

from tests.support import ROOT, SECRET, free_port


def _site_packages(venv: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    return venv / relative


def test_an_installed_package_migrates_and_serves_outside_the_checkout(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = _site_packages(venv)
    (site / "borrowed-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(ROOT)],
        check=True, timeout=600, cwd=tmp_path,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    env.update(
        COLLAB_DATABASE_URL=f"sqlite+aiosqlite:///{work / 'collab.db'}", COLLAB_JWT_SECRET=SECRET
    )
    collab = str(venv / "bin" / "collab")

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import collab; print(collab.__file__)"],
        env=env, cwd=work, capture_output=True, text=True, check=True, timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    migrated = subprocess.run(
        [collab, "migrate"], env=env, cwd=work, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(work / "collab.db") as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert {"documents", "operations", "snapshots", "alembic_version"} <= tables

    port = free_port()
    with (work / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [collab, "serve", "--port", str(port)], env=env, cwd=work, stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (work / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the installed server never became ready"
            time.sleep(0.1)  # readiness polling of a starting process, not test synchronisation
        docs = httpx.get(f"{base}/docs", timeout=10)
        assert docs.status_code == 200
        assert "/static/swagger-ui/swagger-ui-bundle.js" in docs.text
        bundle = httpx.get(f"{base}/static/swagger-ui/swagger-ui-bundle.js", timeout=10)
        assert bundle.status_code == 200 and b"SwaggerUIBundle" in bundle.content
    finally:
        server.terminate()
        server.wait(30)
