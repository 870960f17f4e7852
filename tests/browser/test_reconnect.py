"""A page outlives a server restart: what was typed before, during and after is kept."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

pytestmark = pytest.mark.browser


async def test_server_restart_keeps_typing(
    make_server: Any, open_editor: Any, converge: Any
) -> None:
    server = make_server()
    doc = "restart"
    alice = await open_editor(server, doc, "Alice")
    await alice.page.click("#editor")
    await alice.page.keyboard.type("before ")
    assert await converge(server, doc, alice) == "before "

    # SIGTERM: the server closes the socket (1001) and exits; the page goes offline.
    await alice.js(
        """() => { window.statuses = [];
            window.collabDemo.client.on('status', (e) => window.statuses.push(e.status)); }"""
    )
    assert server.stop(signal.SIGTERM) is not None
    await alice.wait("() => window.collabDemo.client.status !== 'online'")

    # Typing goes on while the server is down: the text stays in the page, pending.
    await alice.page.keyboard.type("during ")
    assert await alice.value() == "before during "
    assert await alice.js("window.collabDemo.client.pending") is True

    # Same port, same database: the page reconnects by itself and sends what it kept.
    await asyncio.to_thread(server.start)
    await alice.wait("() => window.collabDemo.client.status === 'online'")
    await alice.page.keyboard.type("after")
    assert await converge(server, doc, alice) == "before during after"
    statuses = await alice.js("window.statuses")
    assert "offline" in statuses and statuses[-1] == "online", statuses

    # A newcomer loads the same text from the restarted server, and edits flow both ways.
    bob = await open_editor(server, doc, "Bob")
    await bob.wait_value("before during after")
    await bob.page.click("#editor")
    await bob.page.keyboard.press("Control+End")
    await bob.page.keyboard.type("!")
    assert await converge(server, doc, alice, bob) == "before during after!"


async def test_restart_while_ops_in_flight(
    make_server: Any, open_editor: Any, converge: Any
) -> None:
    """Stop the server in the middle of fast typing from two pages; nothing is lost or doubled."""
    server = make_server()
    doc = "restart-busy"
    alice = await open_editor(server, doc, "Alice")
    bob = await open_editor(server, doc, "Bob")
    await alice.page.click("#editor")
    await bob.page.click("#editor")
    await alice.page.keyboard.type("A:")
    await converge(server, doc, alice, bob)
    await bob.page.keyboard.press("Control+End")

    typing = asyncio.gather(
        alice.page.keyboard.type("0123456789", delay=30),
        bob.page.keyboard.type(" abcdefghij", delay=30),
    )
    # Stop once some of the keys have been committed, while the rest are still being typed.
    await alice.wait("() => window.collabDemo.client.rev >= 4")
    await asyncio.to_thread(server.stop, signal.SIGTERM)
    await typing
    await asyncio.to_thread(server.start)
    text = await converge(server, doc, alice, bob)
    assert sorted(text) == sorted("A:0123456789 abcdefghij"), text
    assert "0123456789" in text and "abcdefghij" in text
