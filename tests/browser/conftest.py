"""Fixtures for the browser tests: a real `collab serve --dev` subprocess and headless Chromium.

Chromium is Debian's (/usr/bin/chromium, `apt-get install chromium`), driven by Python
Playwright (`pip install -e '.[browser]'`; never `playwright install`). Without either, or
without node for the JavaScript unit tests, the tests skip, unless COLLAB_REQUIRE_BROWSER=1,
in which case they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = os.environ.get("COLLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Test pages served by a Playwright route count as public: without this, Chromium's Local
    # Network Access checks would block their WebSocket to the server on 127.0.0.1.
    "--disable-features=LocalNetworkAccessChecks",
]
TIMEOUT_MS = 20_000  # for every wait on a page condition


def need(what: str) -> None:
    """Skips the test for a missing tool, or fails it when COLLAB_REQUIRE_BROWSER=1."""
    if os.environ.get("COLLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} (COLLAB_REQUIRE_BROWSER=1)")
    pytest.skip(what)


@pytest.fixture
def node() -> str:
    """The node executable, for the JavaScript unit tests."""
    found = shutil.which("node")
    if found is None:
        need("node is not installed: the JavaScript unit tests need it")
    assert found is not None
    return found


JS_DIR = Path(__file__).parent / "js"


def _installed_as_locked(folder: Path) -> bool:
    """Whether node_modules holds every package of package-lock.json at its locked version
    (npm keeps what it installed in node_modules/.package-lock.json)."""
    installed = folder / "node_modules" / ".package-lock.json"
    if not installed.exists():
        return False
    locked = json.loads((folder / "package-lock.json").read_text())["packages"]
    have = json.loads(installed.read_text())["packages"]
    for path, entry in locked.items():
        if not path.startswith("node_modules/"):
            continue  # the project itself, or a linked folder
        if path not in have:
            if entry.get("optional"):
                continue  # a build for another platform (esbuild's)
            return False
        if have[path].get("version") != entry.get("version"):
            return False
    return True


@pytest.fixture(scope="session")
def editor_packages() -> Path:
    """tests/browser/js/node_modules with the npm packages pinned in its package-lock.json (the
    editors, esbuild, the collab-client link); `npm ci` when they are not all there as locked."""
    if _installed_as_locked(JS_DIR):
        return JS_DIR / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        need("npm is not installed: the editor tests need the editors' npm packages")
    assert npm is not None
    result = subprocess.run(
        [npm, "ci", "--no-fund", "--no-audit"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        need(f"npm ci in {JS_DIR} failed:\n{result.stderr[-2000:]}")
    return JS_DIR / "node_modules"


@pytest.fixture(scope="session")
def monaco_bundle(editor_packages: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Monaco's editor API and worker as ES modules, built from the pinned npm package for the
    Monaco tests (several megabytes: built per run, never committed)."""
    node = shutil.which("node")
    if node is None:
        need("node is not installed: the Monaco tests build Monaco with it")
    assert node is not None
    out = tmp_path_factory.mktemp("monaco")
    result = subprocess.run(
        [node, "build_monaco.mjs", str(out)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _collab_command() -> list[str]:
    script = Path(sys.executable).with_name("collab")
    if script.exists():
        return [str(script)]
    found = shutil.which("collab")
    if found is None:
        pytest.fail("the `collab` command is not installed (pip install -e .)")
    return [found]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`collab serve --dev` on a port of its own, with a database in a temporary folder.

    It can be stopped (SIGTERM, as an operator would) and started again on the same port and
    database; the JWT secret is fixed for its lifetime so tokens survive a restart.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.env = {
            **os.environ,
            "COLLAB_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 't.db'}",
            "COLLAB_JWT_SECRET": secrets.token_hex(32),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        migrate = subprocess.run(
            [*_collab_command(), "migrate"],
            env=self.env,
            cwd=folder,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if migrate.returncode != 0:
            pytest.fail(
                f"collab migrate failed:\n{migrate.stdout.decode()}{migrate.stderr.decode()}"
            )

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *_collab_command(),
                    "serve",
                    "--dev",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                pytest.fail(f"collab serve exited with {code}:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"collab serve did not answer /healthz in {timeout}s:\n{self.log_text()}"
                )
            time.sleep(0.1)  # readiness polling only

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"collab serve ignored signal {sig} for {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    # REST helpers -----------------------------------------------------------------------------

    def token(self, name: str) -> str:
        res = httpx.post(f"{self.url}/dev/token", json={"name": name}, timeout=10)
        res.raise_for_status()
        return str(res.json()["token"])

    def get(self, path: str, token: str) -> Any:
        res = httpx.get(
            f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        res.raise_for_status()
        return res.json()

    def post(self, path: str, token: str, body: Any) -> Any:
        res = httpx.post(
            f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"}, json=body, timeout=10
        )
        res.raise_for_status()
        return res.json()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[[], Server]]:
    """Starts servers of the test's own, stopped at the end (their log tail shown on failure)."""
    servers: list[Server] = []

    def make() -> Server:
        server = Server(tmp_path / f"server{len(servers)}")
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
        sys.stderr.write(f"--- {server.url} log (tail) ---\n{server.log_text()[-2000:]}\n")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by the tests that do not restart it (each uses its own documents)."""
    folder = tmp_path_factory.mktemp("live")
    server = Server(folder)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def chromium() -> str:
    """The Chromium executable (Debian's; Playwright's own browser downloads are not used)."""
    if not os.path.exists(CHROMIUM):
        need(f"Chromium is not at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        need("Python Playwright is not installed (pip install -e '.[browser]')")
        raise
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


# Keeps the last WebSocket frames in and out in window.__frames, shown when a test fails.
FRAME_RECORDER = """
(() => {
  const Native = window.WebSocket;
  const frames = (window.__frames = []);
  const keep = (entry) => { frames.push(entry); if (frames.length > 400) frames.shift(); };
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      keep('open ' + url.replace(/ticket=[^&]+/, 'ticket=…'));
      this.addEventListener('message', (e) => keep('<< ' + e.data));
      this.addEventListener('close', (e) => keep('close ' + e.code + ' ' + e.reason));
    }
    send(data) { keep('>> ' + data); super.send(data); }
  };
})();
"""


class Editor:
    """One demo page (its own browser context, so its own storage) editing one document, with
    the CodeMirror editor or the textarea (`kind`). `window.collabDemo.shown()` is the text the
    page's editor shows, whichever it is."""

    def __init__(self, page: Any, name: str, doc: str, kind: str = "textarea") -> None:
        self.page = page
        self.name = name
        self.doc = doc
        self.kind = kind
        self.page_errors: list[str] = []
        self.console: list[str] = []
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))

    async def wait(self, js: str, arg: Any = None, timeout_ms: int = TIMEOUT_MS) -> Any:
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        try:
            handle = await self.page.wait_for_function(js, arg=arg, timeout=timeout_ms)
        except PlaywrightTimeout:
            state = await self.page.evaluate(
                """() => { const c = window.collabDemo?.client;
                    return { value: window.collabDemo?.shown(), text: c?.text,
                             rev: c?.rev, status: c?.status, state: c?.state }; }"""
            )
            raise AssertionError(
                f"{self.name}: timed out waiting for {js.strip()[:200]!r} (arg {arg!r}); "
                f"page state {state!r}"
            ) from None
        return await handle.json_value()

    async def wait_ready(self) -> None:
        await self.wait(
            """() => { const c = window.collabDemo?.client;
                return !!c && c.status === 'online' && window.collabDemo.writable(); }"""
        )

    async def wait_synced(self) -> str:
        """Waits until nothing is pending and the textarea shows the client's text; returns it."""
        return str(
            await self.wait(
                """() => { const c = window.collabDemo?.client;
                    const v = window.collabDemo.shown();
                    return c && c.status === 'online' && !c.pending && v === c.text ? v : null; }"""
            )
        )

    async def wait_value(self, expected: str) -> None:
        await self.wait(
            """(t) => window.collabDemo.shown() === t && !window.collabDemo.client.pending""",
            expected,
        )

    async def value(self) -> str:
        return str(await self.page.evaluate("() => window.collabDemo.shown()"))

    async def js(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)


@pytest.fixture
async def open_editor(browser: Any) -> AsyncIterator[Callable[..., Any]]:
    """`await open_editor(server, doc, name)` opens the demo page on `doc` as `name`."""
    contexts: list[Any] = []
    editors: list[Editor] = []

    async def open_(
        server: Server,
        doc: str,
        name: str,
        width: int = 1100,
        height: int = 700,
        editor: str = "textarea",
        ready: bool = True,
        init_script: str | None = None,
        path: str | None = None,
        setup: Callable[[Any], Any] | None = None,
    ) -> Editor:
        """`path` (with its query) replaces the demo page; `setup(context)` runs before the page
        opens (routes for test pages)."""
        context = await browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        await context.add_init_script(f"localStorage.setItem('collab.name', {name!r});")
        await context.add_init_script(FRAME_RECORDER)
        if init_script is not None:
            await context.add_init_script(init_script)
        if setup is not None:
            await setup(context)
        page = await context.new_page()
        opened = Editor(page, name, doc, editor)
        editors.append(opened)
        query = "?editor=textarea" if editor == "textarea" else ""
        await page.goto(f"{server.url}{path}" if path else f"{server.url}/{query}#doc={doc}")
        if ready:
            await opened.wait_ready()
        return opened

    yield open_
    for editor in editors:
        if editor.console:
            sys.stderr.write(
                f"--- console of {editor.name} ---\n" + "\n".join(editor.console[-40:]) + "\n"
            )
        try:
            frames = await editor.page.evaluate("() => window.__frames || []")
        except Exception:  # the page is gone
            frames = []
        if frames:
            sys.stderr.write(f"--- frames of {editor.name} ---\n" + "\n".join(frames[-80:]) + "\n")
    for context in contexts:
        await context.close()
    errors = [e for editor in editors for e in editor.page_errors]
    assert not errors, f"uncaught errors in the page: {errors}"


async def _converge(server: Server, doc: str, *editors: Editor) -> str:
    """Waits until every editor has all its ops acked and has caught up with the server's
    revision; checks they all show the server's content, and returns it."""
    import asyncio

    for editor in editors:
        await editor.wait_synced()
    token = server.token("Checker")
    body = await asyncio.to_thread(server.get, f"/documents/{doc}", token)
    for editor in editors:
        await editor.wait(
            """(rev) => { const c = window.collabDemo.client;
                const value = window.collabDemo.shown();
                return c.rev === rev && !c.pending && value === c.text; }""",
            body["rev"],
        )
        assert await editor.value() == body["content"], editor.name
    return str(body["content"])


@pytest.fixture
def converge() -> Callable[..., Any]:
    """`await converge(server, doc, *editors)`: see _converge."""
    return _converge
