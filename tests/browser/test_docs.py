"""/docs renders Swagger UI with every request to another host blocked: it needs no internet."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import TIMEOUT_MS, Server

pytestmark = pytest.mark.browser


async def test_the_api_docs_render_offline(browser: Any, live_server: Server) -> None:
    context = await browser.new_context()
    elsewhere: list[str] = []

    async def only_this_server(route: Any) -> None:
        if route.request.url.startswith(live_server.url):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_this_server)
    page = await context.new_page()
    try:
        await page.goto(f"{live_server.url}/docs")
        title = page.locator(".swagger-ui .info .title")
        await title.wait_for(timeout=TIMEOUT_MS)
        assert "collab" in await title.inner_text()
        paths = page.locator(".opblock-summary-path")
        await paths.first.wait_for(timeout=TIMEOUT_MS)
        assert "/documents" in await paths.all_inner_texts()
        assert elsewhere == []
    finally:
        await context.close()
