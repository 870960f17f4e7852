"""Two demo pages on one document: concurrent typing, presence, and non-ASCII text."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

pytestmark = pytest.mark.browser


def new_doc(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def server_content(server: Any, doc: str) -> str:
    token = server.token("Checker")
    body = await asyncio.to_thread(server.get, f"/documents/{doc}", token)
    return str(body["content"])


async def test_concurrent_typing_converges(live_server: Any, open_editor: Any) -> None:
    doc = new_doc("typing")
    token = live_server.token("Setup")
    live_server.post("/documents", token, {"id": doc, "content": "[start] [end]"})
    alice = await open_editor(live_server, doc, "Alice")
    bob = await open_editor(live_server, doc, "Bob")
    await alice.wait_value("[start] [end]")
    await bob.wait_value("[start] [end]")

    # Alice types after "[start]", Bob at the very end, both at once, key by key.
    await alice.page.click("#editor")
    await alice.page.keyboard.press("Control+Home")
    for _ in range(len("[start]")):
        await alice.page.keyboard.press("ArrowRight")
    await bob.page.click("#editor")
    await bob.page.keyboard.press("Control+End")
    alice_text = " alpha beta gamma delta"
    bob_text = " ONE TWO THREE FOUR"
    await asyncio.gather(
        alice.page.keyboard.type(alice_text, delay=15),
        bob.page.keyboard.type(bob_text, delay=20),
    )

    expected = "[start]" + alice_text + " [end]" + bob_text
    await alice.wait_value(expected)
    await bob.wait_value(expected)
    assert await server_content(live_server, doc) == expected
    # Each client acked every one of its ops and saw every other op: same revision everywhere.
    rev_a = await alice.js("window.collabDemo.client.rev")
    rev_b = await bob.js("window.collabDemo.client.rev")
    assert rev_a == rev_b > 1


async def test_both_type_at_the_same_spot(
    live_server: Any, open_editor: Any, converge: Any
) -> None:
    """Worst case for OT ties: both carets at one position; the result must still agree."""
    doc = new_doc("tie")
    alice = await open_editor(live_server, doc, "Alice")
    bob = await open_editor(live_server, doc, "Bob")
    await alice.page.click("#editor")
    await bob.page.click("#editor")
    await asyncio.gather(
        alice.page.keyboard.type("aaaaaaaaaa", delay=10),
        bob.page.keyboard.type("bbbbbbbbbb", delay=12),
    )
    final = await converge(live_server, doc, alice, bob)
    assert sorted(final) == sorted("a" * 10 + "b" * 10)


async def test_presence_peer_list_and_cursor(live_server: Any, open_editor: Any) -> None:
    doc = new_doc("presence")
    alice = await open_editor(live_server, doc, "Alice")
    bob = await open_editor(live_server, doc, "Bob")

    # Both see each other in the list of people here.
    await alice.page.locator("#peers li", has_text="Bob").wait_for(timeout=20_000)
    await bob.page.locator("#peers li", has_text="Alice").wait_for(timeout=20_000)
    assert await alice.page.locator("#peer-count").inner_text() == "2"

    await alice.page.click("#editor")
    await alice.page.keyboard.type("first line\nsecond")
    await alice.wait_synced()
    await alice.page.keyboard.press("ArrowLeft")
    await alice.page.keyboard.press("ArrowLeft")  # caret at line 2, column 5

    # Bob sees Alice's caret where it is: in the list (line:col) and as a coloured caret.
    row = bob.page.locator("#peers li", has_text="Alice")
    await bob.wait(
        """() => [...document.querySelectorAll('#peers li')]
            .some(li => li.textContent.includes('Alice')
                        && li.querySelector('.pos').textContent === '2:5')"""
    )
    caret = bob.page.locator("#overlay .caret", has_text="Alice")
    await caret.wait_for(state="attached", timeout=20_000)  # a 0-wide element
    peers = await bob.js("window.collabDemo.client.peers")
    assert [p["cursor"] for p in peers if p["name"] == "Alice"] == [{"anchor": 15, "head": 15}]
    # The caret sits between "seco" and "nd": the text before it in the mirror is exactly that.
    before = await bob.js(
        """() => { const c = document.querySelector('#overlay .caret');
            const r = document.createRange();
            r.setStart(document.querySelector('#overlay-inner'), 0);
            r.setEndBefore(c); return r.toString(); }"""
    )
    assert before == "first line\nseco"
    colour = await row.locator(".avatar").evaluate("e => getComputedStyle(e).backgroundColor")
    caret_colour = await caret.locator(".flag").evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == caret_colour

    # Bob types in front of Alice's caret: it moves with the text, without her sending anything.
    await bob.page.click("#editor")
    await bob.page.keyboard.press("Control+Home")
    await bob.page.keyboard.type(">> ")
    await bob.wait_synced()
    peers = await bob.js("window.collabDemo.client.peers")
    assert [p["cursor"] for p in peers if p["name"] == "Alice"] == [{"anchor": 18, "head": 18}]

    # Alice leaves: Bob's list shrinks.
    await alice.page.close()
    await bob.wait("() => document.querySelector('#peer-count').textContent === '1'")


async def test_unicode_lands_in_the_right_place(live_server: Any, open_editor: Any) -> None:
    doc = new_doc("unicode")
    alice = await open_editor(live_server, doc, "Alice")
    bob = await open_editor(live_server, doc, "Bob")

    await alice.page.click("#editor")
    await alice.page.keyboard.type("héllo wörld")
    await bob.wait_value("héllo wörld")

    # Alice types an emoji between the words; Bob, concurrently, a decomposed "é" (e + U+0301)
    # and a thumbs-up with a skin tone (two code points, four UTF-16 units) at the start.
    await alice.page.keyboard.press("Control+End")
    for _ in range(len("wörld")):
        await alice.page.keyboard.press("ArrowLeft")
    await bob.page.click("#editor")
    await bob.page.keyboard.press("Control+Home")
    await asyncio.gather(
        alice.page.keyboard.type("😀 "),
        bob.page.keyboard.type("👍🏽 e\u0301 "),
    )
    expected = "👍🏽 e\u0301 héllo 😀 wörld"
    await alice.wait_value(expected)
    await bob.wait_value(expected)

    # Code point positions through the client API: insert after "😀" (code point 13 of expected).
    assert expected[:13].endswith("😀")
    await bob.js("window.collabDemo.client.insert(13, '🎉')")
    await bob.js("window.collabDemo.client.delete(0, 2)")  # the thumbs-up and its skin tone
    expected = " e\u0301 héllo 😀🎉 wörld"
    await alice.wait_value(expected)
    await bob.wait_value(expected)
    assert await server_content(live_server, doc) == expected

    # Alice's caret did not move inside a surrogate pair: typing goes after her emoji and space.
    await alice.page.keyboard.type("!")
    expected = " e\u0301 héllo 😀🎉 !wörld"
    await bob.wait_value(expected)
    assert await server_content(live_server, doc) == expected
