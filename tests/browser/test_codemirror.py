"""The demo page's CodeMirror 6 editor (collab-codemirror.js) with the real packages, in Chromium:
convergence with textarea pages, remote cursors, local undo, read-only tokens, large pastes, a
refused op and a server restart."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from typing import Any

import pytest

from collab.auth import mint_token

pytestmark = pytest.mark.browser

CONTENT = ".cm-content"


def new_doc(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def server_content(server: Any, doc: str) -> str:
    token = server.token("Checker")
    body = await asyncio.to_thread(server.get, f"/documents/{doc}", token)
    return str(body["content"])


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def caret_position(editor: Any, name: str) -> int:
    """Where the remote caret flagged `name` sits in `editor`'s CodeMirror document."""
    await editor.page.locator(".cm-collab-caret", has_text=name).wait_for(state="attached")
    return int(
        await editor.js(
            """(name) => { const view = window.collabDemo.view;
                const caret = [...document.querySelectorAll('.cm-collab-caret')]
                    .find((c) => c.textContent === name);
                return view.posAtDOM(caret); }""",
            name,
        )
    )


async def test_codemirror_and_textarea_pages_converge(
    live_server: Any, open_editor: Any, converge: Any
) -> None:
    """Two CodeMirror pages and a textarea page type at once, with emoji and line breaks."""
    doc = new_doc("cm-mixed")
    start = "line one\nline two 😀\n"
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": start})
    alice = await open_editor(live_server, doc, "Alice", editor="codemirror")
    bob = await open_editor(live_server, doc, "Bob", editor="codemirror")
    carol = await open_editor(live_server, doc, "Carol", editor="textarea")
    for editor in (alice, bob, carol):
        await editor.wait_value(start)

    await alice.page.click(CONTENT)
    await alice.page.keyboard.press("Control+Home")
    await bob.page.click(CONTENT)
    await bob.page.keyboard.press("Control+End")
    await carol.page.click("#editor")
    await carol.page.keyboard.press("Control+Home")
    for _ in range(len("line one")):
        await carol.page.keyboard.press("ArrowRight")

    async def type_alice() -> None:
        await alice.page.keyboard.type("A👍🏽 ", delay=15)
        await alice.page.keyboard.press("Enter")
        await alice.page.keyboard.type("é中", delay=15)

    async def type_bob() -> None:
        await bob.page.keyboard.type("bob 🎉", delay=20)
        await bob.page.keyboard.press("Enter")
        await bob.page.keyboard.type("end", delay=20)

    await asyncio.gather(
        type_alice(), type_bob(), carol.page.keyboard.type(" (carol ☕)", delay=12)
    )
    expected = "A👍🏽 \né中line one (carol ☕)\nline two 😀\nbob 🎉\nend"
    assert await converge(live_server, doc, alice, bob, carol) == expected


async def test_crlf_stays_two_characters(live_server: Any, open_editor: Any, converge: Any) -> None:
    """A document holding "\\r\\n" and a lone "\\r": CodeMirror keeps them as they are, so
    offsets after them agree with the server's."""
    doc = new_doc("cm-crlf")
    start = "one\r\ntwo\rthree 😀\r\n"
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": start})
    alice = await open_editor(live_server, doc, "Alice", editor="codemirror")
    bob = await open_editor(live_server, doc, "Bob", editor="codemirror")
    await alice.wait_value(start)
    await bob.wait_value(start)
    assert (
        await alice.js("window.collabDemo.view.state.doc.length")
        == len(start.encode("utf-16-le")) // 2
    )
    await alice.page.click(CONTENT)
    await alice.page.keyboard.press("Control+Home")
    await alice.page.keyboard.press("ArrowDown")
    await alice.page.keyboard.press("Home")
    await bob.page.click(CONTENT)
    await bob.page.keyboard.press("Control+End")
    await asyncio.gather(
        alice.page.keyboard.type("1️⃣ ", delay=10), bob.page.keyboard.type("four 🎉", delay=10)
    )
    expected = "one\r\n1️⃣ two\rthree 😀\r\nfour 🎉"
    assert await converge(live_server, doc, alice, bob) == expected


async def test_remote_cursors_show_name_and_place(live_server: Any, open_editor: Any) -> None:
    doc = new_doc("cm-cursors")
    live_server.post(
        "/documents", live_server.token("Setup"), {"id": doc, "content": "first line\nsecond 😀 x"}
    )
    alice = await open_editor(live_server, doc, "Alice", editor="codemirror")
    bob = await open_editor(live_server, doc, "Bob", editor="codemirror")

    # Alice's caret after "seco" (line 2), then after the emoji: UTF-16 offsets 15 and 20.
    await alice.page.click(CONTENT)
    await alice.page.keyboard.press("Control+Home")
    await alice.page.keyboard.press("ArrowDown")
    await alice.page.keyboard.press("Home")
    for _ in range(4):
        await alice.page.keyboard.press("ArrowRight")
    await bob.wait(
        """() => [...document.querySelectorAll('.cm-collab-caret')].some((c) =>
            c.textContent === 'Alice' && window.collabDemo.view.posAtDOM(c) === 15)"""
    )
    assert await caret_position(bob, "Alice") == 15
    for _ in range(4):  # "nd", space, emoji (one key press, two UTF-16 units)
        await alice.page.keyboard.press("ArrowRight")
    await bob.wait(
        """() => [...document.querySelectorAll('.cm-collab-caret')].some((c) =>
            c.textContent === 'Alice' && window.collabDemo.view.posAtDOM(c) === 20)"""
    )
    # The flag wears Alice's colour from the list of people here.
    colour = (
        await bob.page.locator("#peers li", has_text="Alice")
        .locator(".avatar")
        .evaluate("e => getComputedStyle(e).backgroundColor")
    )
    flag = bob.page.locator(".cm-collab-caret", has_text="Alice").locator(".cm-collab-flag")
    assert await flag.evaluate("e => getComputedStyle(e).backgroundColor") == colour

    # Alice selects "first": Bob sees the selection marked, and her caret at its head.
    await alice.page.keyboard.press("Control+Home")
    await alice.page.keyboard.press("Shift+Control+ArrowRight")
    await bob.wait(
        """() => [...document.querySelectorAll('.cm-collab-selection')]
            .map((e) => e.textContent).join('') === 'first'"""
    )
    assert await caret_position(bob, "Alice") == 5

    # Bob types before Alice's caret: it moves with the text in his editor.
    await bob.page.click(CONTENT)
    await bob.page.keyboard.press("Control+Home")
    await bob.page.keyboard.type(">> ")
    await bob.wait_synced()
    assert await caret_position(bob, "Alice") == 8


async def test_undo_removes_only_own_text(
    live_server: Any, open_editor: Any, converge: Any
) -> None:
    """Bob's edits land before Alice's after she typed: her undo must still find her own text
    (an undo stack that was not moved through his edits would remove the wrong characters)."""
    doc = new_doc("cm-undo")
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": "[middle]"})
    alice = await open_editor(live_server, doc, "Alice", editor="codemirror")
    bob = await open_editor(live_server, doc, "Bob", editor="codemirror")
    await alice.page.click(CONTENT)
    await alice.page.keyboard.press("Control+End")
    await alice.page.keyboard.type(" alice 😀", delay=10)
    assert await converge(live_server, doc, alice, bob) == "[middle] alice 😀"
    await bob.page.click(CONTENT)
    await bob.page.keyboard.press("Control+Home")
    await bob.page.keyboard.type("bob 🎉 ", delay=10)
    assert await converge(live_server, doc, alice, bob) == "bob 🎉 [middle] alice 😀"

    await alice.page.keyboard.press("Control+z")
    assert await converge(live_server, doc, alice, bob) == "bob 🎉 [middle]"
    await alice.page.keyboard.press("Control+z")  # nothing else of Alice's to undo
    assert await converge(live_server, doc, alice, bob) == "bob 🎉 [middle]"
    await alice.page.keyboard.press("Control+Shift+z")
    assert await converge(live_server, doc, alice, bob) == "bob 🎉 [middle] alice 😀"
    await bob.page.keyboard.press("Control+z")
    assert await converge(live_server, doc, alice, bob) == "[middle] alice 😀"


async def test_read_only_token_refuses_typing(live_server: Any, open_editor: Any) -> None:
    doc = new_doc("cm-readonly")
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": "look only"})
    token = mint_token(
        live_server.env["COLLAB_JWT_SECRET"], "reader-1", name="Reader", docs={doc: "read"}
    )
    # The demo keeps its token in sessionStorage: give it a read-only one.
    entry = {
        "token": token,
        "user": {"id": "reader-1", "name": "Reader"},
        "expires": int(time.time() * 1000) + 3_600_000,
    }
    seed = f"sessionStorage.setItem('collab.token:Reader', {json.dumps(json.dumps(entry))});"
    reader = await open_editor(
        live_server, doc, "Reader", editor="codemirror", ready=False, init_script=seed
    )
    await reader.wait(
        """() => { const d = window.collabDemo; return d.client?.status === 'online'
            && d.client.access === 'read' && d.view && d.shown() === 'look only'; }"""
    )
    assert await reader.js("window.collabDemo.writable()") is False
    await reader.page.click(CONTENT)
    await reader.page.keyboard.type("typed")
    await reader.page.keyboard.press("Backspace")
    await reader.page.keyboard.press("Enter")
    assert await reader.value() == "look only"
    assert await reader.js("window.collabDemo.client.pending") is False
    assert "read only" in await reader.page.locator("#status-text").inner_text()
    assert await server_content(live_server, doc) == "look only"


async def test_large_paste_goes_through_in_pieces(
    live_server: Any, open_editor: Any, converge: Any
) -> None:
    """Pastes of 1 MB (more than COLLAB_MAX_MESSAGE_BYTES once JSON escapes its line breaks) and
    2.5 MB in one transaction each: sent in pieces that each fit in a message, nothing lost."""
    doc = new_doc("cm-paste")
    alice = await open_editor(live_server, doc, "Alice", editor="codemirror")
    bob = await open_editor(live_server, doc, "Bob", editor="codemirror")
    paste = """([at, n]) => { const view = window.collabDemo.view;
        const text = 'collab paste line é 😀\\n'.repeat(Math.ceil(n / 23)).slice(0, n);
        view.dispatch({ changes: { from: at, insert: text }, userEvent: 'input.paste' }); }"""
    await alice.js(paste, [0, 1_000_000])
    first = await converge(live_server, doc, alice, bob)
    assert utf16_length(first) == 1_000_000 and first.startswith("collab paste line é 😀\n")
    assert await alice.js("window.collabDemo.client.status") == "online"

    # 2.5 MB in the middle while Bob types at the start: both land, in every editor.
    await bob.page.click(CONTENT)
    await bob.page.keyboard.press("Control+Home")
    await asyncio.gather(
        alice.js(paste, [500_000, 2_500_000]), bob.page.keyboard.type("bob was here ", delay=5)
    )
    final = await converge(live_server, doc, alice, bob)
    assert utf16_length(final) == len("bob was here ") + 3_500_000
    assert final.startswith("bob was here collab paste line")
    assert await alice.js("window.collabDemo.client.status") == "online"
    assert await alice.page.locator(".cm-collab-notice").count() == 0


# Changes the text of the next delete the page sends, as a client with a stale view would.
CORRUPT_NEXT_DELETE = """
(() => {
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (window.__corruptNextDelete && typeof data === 'string') {
      const frame = JSON.parse(data);
      if (frame.type === 'op' && frame.op.some((c) => typeof c === 'object')) {
        window.__corruptNextDelete = false;
        const wrong = (c) => ({ d: 'Q'.repeat([...c.d].length) });
        frame.op = frame.op.map((c) => (typeof c === 'object' ? wrong(c) : c));
        data = JSON.stringify(frame);
      }
    }
    return send.call(this, data);
  };
})();
"""


async def test_refused_op_resyncs_with_a_notice(
    live_server: Any, open_editor: Any, converge: Any
) -> None:
    doc = new_doc("cm-refused")
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": "keep me"})
    alice = await open_editor(
        live_server, doc, "Alice", editor="codemirror", init_script=CORRUPT_NEXT_DELETE
    )
    bob = await open_editor(live_server, doc, "Bob", editor="codemirror")
    await alice.page.click(CONTENT)
    await alice.page.keyboard.press("Control+End")
    await alice.js("window.__corruptNextDelete = true")
    await alice.page.keyboard.press("Backspace")  # sent as a delete of "Q": invalid_op
    notice = alice.page.locator(".cm-collab-notice")
    await notice.wait_for()
    assert "invalid_op" in await notice.inner_text()
    # The server's text is back in the editor: nothing diverged silently.
    assert await converge(live_server, doc, alice, bob) == "keep me"
    await alice.page.click(CONTENT)
    await alice.page.keyboard.press("Control+End")
    await alice.page.keyboard.type("!")
    assert await converge(live_server, doc, alice, bob) == "keep me!"


async def test_restart_keeps_pending_edits(
    make_server: Any, open_editor: Any, converge: Any
) -> None:
    server = make_server()
    doc = "cm-restart"
    alice = await open_editor(server, doc, "Alice", editor="codemirror")
    bob = await open_editor(server, doc, "Bob", editor="textarea")
    await alice.page.click(CONTENT)
    await alice.page.keyboard.type("before 😀 ")
    assert await converge(server, doc, alice, bob) == "before 😀 "

    assert server.stop(signal.SIGTERM) is not None
    await alice.wait("() => window.collabDemo.client.status !== 'online'")
    await alice.page.keyboard.type("during\r")
    assert await alice.js("window.collabDemo.client.pending") is True

    await asyncio.to_thread(server.start)
    await alice.wait("() => window.collabDemo.client.status === 'online'")
    await alice.page.keyboard.type("after")
    assert await converge(server, doc, alice, bob) == "before 😀 during\nafter"


async def test_demo_joins_only_a_chosen_document(make_server: Any, open_editor: Any) -> None:
    """Opening the page joins nothing and creates nothing; Open joins the document typed in."""
    server = make_server()
    page = await open_editor(server, "", "Alice", editor="codemirror", path="/", ready=False)
    await page.page.locator("#pick").wait_for()
    assert await page.page.locator("#status-text").inner_text() == "no document open"
    assert await page.js("window.__frames") == []
    token = server.token("Checker")
    listed = await asyncio.to_thread(server.get, "/documents", token)
    assert listed["items"] == []

    await page.page.fill("#doc", "chosen-doc")
    await page.page.click("#join-form button[type=submit]")
    await page.wait_ready()
    assert page.page.url.endswith("#doc=chosen-doc")
    await page.page.click(CONTENT)
    await page.page.keyboard.type("hello")
    await page.wait_synced()
    listed = await asyncio.to_thread(server.get, "/documents", token)
    assert [item["id"] for item in listed["items"]] == ["chosen-doc"]
