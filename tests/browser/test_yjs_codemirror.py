"""Chromium: CodeMirror on y-codemirror.next over WebsocketProvider, and the demo page on
collab's own OT binding, edit one document at once and converge.

The Yjs page is the bundle tests/yjs_node/build_page.mjs makes from the pinned npm packages
(yjs, y-websocket, @codemirror/*, y-codemirror.next), served to the page at the server's own
origin through Playwright's routing, so the WebSocket's Origin is the server's.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM_ARGS
from tests.yjs_harness import build_codemirror_page

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Yjs CodeMirror</title></head>
<body><div id="cm"></div>
<script type="module">
  import { open } from '/yjs-test/codemirror-yjs.js'
  const options = JSON.parse(decodeURIComponent(location.hash.slice(1)))
  window.yjsEditor = open(document.getElementById('cm'), options)
</script></body></html>
"""


@pytest.fixture
async def yjs_browser(chromium: str) -> Any:
    """A Chromium of this module's own: the page it is given by Playwright's routing counts as
    public to Chromium's local network access checks, which would then block its WebSocket to
    127.0.0.1."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=chromium,
            args=[*CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_yjs_page(browser: Any, server: Any, bundle: Path, doc: str, name: str) -> Any:
    context = await browser.new_context()
    page = await context.new_page()
    script = await asyncio.to_thread(bundle.read_bytes)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}"))
    page.errors = errors

    async def serve(route: Any) -> None:
        if route.request.url.endswith("/codemirror-yjs.js"):
            await route.fulfill(body=script, content_type="text/javascript")
        else:
            await route.fulfill(body=PAGE, content_type="text/html")

    await page.route(f"{server.url}/yjs-test/**", serve)
    options = {
        "base": server.url.replace("http://", "ws://") + "/ws/yjs",
        "doc": doc,
        "token": server.token(name),
        "name": name,
    }
    await page.goto(f"{server.url}/yjs-test/index.html#{json.dumps(options)}")
    try:
        await page.wait_for_function(
            "() => window.yjsEditor && window.yjsEditor.synced()", timeout=20_000
        )
    except Exception:
        raise AssertionError(f"the Yjs page did not sync: {errors}") from None
    return page


async def test_codemirror_on_yjs_and_the_ot_demo_converge(
    live_server: Any, open_editor: Any, yjs_browser: Any
) -> None:
    bundle = await asyncio.to_thread(build_codemirror_page)
    doc = f"cm-yjs-{secrets.token_hex(4)}"
    start = "héllo 😀 world"
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": start})
    otto = await open_editor(live_server, doc, "Otto")
    await otto.wait_value(start)
    yasmin = await open_yjs_page(yjs_browser, live_server, bundle, doc, "Yasmin")
    assert await yasmin.evaluate("() => window.yjsEditor.value()") == start

    await yasmin.click(".cm-content")
    await yasmin.keyboard.press("Control+End")
    await otto.page.click("#editor")
    await otto.page.keyboard.press("Control+Home")
    await asyncio.gather(
        yasmin.keyboard.type(" yjs 𝄞 text", delay=25),
        otto.page.keyboard.type("OT ", delay=30),
    )
    expected = "OT " + start + " yjs 𝄞 text"
    await otto.wait_value(expected)
    await yasmin.wait_for_function(
        "(t) => window.yjsEditor.value() === t && window.yjsEditor.text() === t",
        arg=expected,
        timeout=20_000,
    )
    body = await asyncio.to_thread(live_server.get, f"/documents/{doc}", live_server.token("C"))
    assert body["content"] == expected
    assert yasmin.errors == []
    await yasmin.context.close()
