"""Real Yjs clients for the tests: yjs + y-websocket's ``WebsocketProvider`` in one Node process.

The npm packages are pinned by ``tests/yjs_node/package-lock.json`` and installed with ``npm ci``
into a cache folder outside the repository (``$COLLAB_TEST_CACHE`` or ``~/.cache/collab-test``,
one folder per lock file, reused by later runs). ``driver.mjs`` is copied next to them and
started; :class:`YjsNode` sends it JSON commands (see the ``commands`` table in driver.mjs).

Without node/npm, or when the install fails, the tests skip with the reason, unless
``COLLAB_REQUIRE_BROWSER=1`` (as ``.ci/run`` sets), which makes them fail instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent / "yjs_node"
TIMEOUT = 30.0


def need(what: str) -> None:
    """Skips the test for a missing tool, or fails it when COLLAB_REQUIRE_BROWSER=1."""
    if os.environ.get("COLLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} (COLLAB_REQUIRE_BROWSER=1)")
    pytest.skip(what)


def _cache_root() -> Path:
    explicit = os.environ.get("COLLAB_TEST_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "collab-test"


def _installed(prefix: Path) -> bool:
    return all(
        (prefix / "node_modules" / name / "package.json").exists()
        for name in ("yjs", "y-websocket", "ws", "y-codemirror.next", "esbuild")
    )


def install() -> Path:
    """The folder holding node_modules for the pinned packages and driver.mjs."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            need(f"`{tool}` is not on PATH: the Yjs client tests need Node and npm")
    lock = (HERE / "package-lock.json").read_bytes()
    prefix = _cache_root() / f"yjs-node-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not _installed(prefix):
        prefix.parent.mkdir(parents=True, exist_ok=True)
        scratch = prefix.with_name(f"{prefix.name}.tmp-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copy(HERE / name, scratch / name)
        command = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done = subprocess.run(
                command, cwd=scratch, capture_output=True, text=True, timeout=300, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            shutil.rmtree(scratch, ignore_errors=True)
            need(f"`npm ci` for the Yjs clients failed: {error}")
        if done.returncode != 0 or not _installed(scratch):
            shutil.rmtree(scratch, ignore_errors=True)
            need(f"`npm ci` for the Yjs clients failed: {done.stderr.strip()[-500:]}")
        try:
            scratch.rename(prefix)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)  # a concurrent install finished first
    for name in ("driver.mjs", "codemirror_page.mjs", "build_page.mjs"):
        _copy_if_changed(HERE / name, prefix / name)
    return prefix


def _copy_if_changed(source: Path, target: Path) -> None:
    data = source.read_bytes()
    if not target.exists() or target.read_bytes() != data:
        temporary = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        temporary.write_bytes(data)
        temporary.replace(target)


def build_codemirror_page() -> Path:
    """The y-codemirror.next page's bundle (one ES module), built once per lock file."""
    prefix = install()
    bundle = prefix / "page" / "codemirror-yjs.js"
    source = (HERE / "codemirror_page.mjs").read_bytes()
    stamp = bundle.with_suffix(".source")
    if not bundle.exists() or not stamp.exists() or stamp.read_bytes() != source:
        bundle.parent.mkdir(exist_ok=True)
        done = subprocess.run(
            ["node", "build_page.mjs", str(bundle)],
            cwd=prefix,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"building the y-codemirror.next page failed: {done.stderr[-2000:]}")
        stamp.write_bytes(source)
    return bundle


class YjsNode:
    """One Node process holding any number of named Yjs clients."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._next = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._reader = asyncio.create_task(self._read())
        self._errors = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls) -> YjsNode:
        prefix = await asyncio.to_thread(install)
        process = await asyncio.create_subprocess_exec(
            "node",
            str(prefix / "driver.mjs"),
            cwd=prefix,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            message = json.loads(line)
            if "event" in message:
                self.events.append(message)
                continue
            future = self._waiting.pop(message["id"], None)
            if future is not None and not future.done():
                if message["ok"]:
                    future.set_result(message["result"])
                else:
                    future.set_exception(AssertionError(f"node: {message['error']}"))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(AssertionError(f"node exited: {self.stderr[-20:]}"))

    async def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        async for line in self._process.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    async def call(self, cmd: str, timeout: float = TIMEOUT, **args: Any) -> Any:  # noqa: ASYNC109
        self._next += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = future
        assert self._process.stdin is not None
        self._process.stdin.write(
            json.dumps({"id": self._next, "cmd": cmd, **args}).encode() + b"\n"
        )
        await self._process.stdin.drain()
        async with asyncio.timeout(timeout):
            return await future

    def closes(self, name: str) -> list[int | None]:
        return [e["code"] for e in self.events if e["event"] == "close" and e["name"] == name]

    async def stop(self) -> None:
        if self._process.returncode is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await self._process.wait()
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._reader.cancel()
        self._errors.cancel()
