"""collab-monaco.js with the real Monaco (built from its pinned npm package) in Chromium: Monaco
and textarea pages converge, line endings stay as the document has them, remote cursors, local
undo, read-only tokens."""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from collab.auth import mint_token
from tests.browser.test_codemirror import CORRUPT_NEXT_DELETE

pytestmark = pytest.mark.browser

TEXT = ".monaco-editor .view-lines"

# A page with one Monaco editor bound to a document; the token comes in the query string.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<link rel="stylesheet" href="/__monaco__/monaco.css">
<style>body { margin: 0 } #editor { width: 900px; height: 500px }</style>
</head><body><div id="editor"></div>
<script type="module">
import * as monaco from "/__monaco__/monaco.js";
import { connect } from "/static/collab-client.js";
import { bindMonaco } from "/static/collab-monaco.js";

self.MonacoEnvironment = {
  getWorker: () => new Worker("/__monaco__/editor.worker.js", { type: "module" }),
};
const params = new URLSearchParams(location.search);
const client = connect({ doc: params.get("doc"), token: params.get("token") });
await client.ready;
const editor = monaco.editor.create(document.getElementById("editor"), {
  model: monaco.editor.createModel(client.text, "plaintext"),
  minimap: { enabled: false },
});
const unbind = bindMonaco(client, editor);
window.collabDemo = {
  client, editor, monaco, unbind,
  shown: () => editor.getModel().getValue(),
  writable: () => !editor.getRawOptions().readOnly,
};
</script></body></html>
"""

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


def new_doc(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def open_monaco(open_editor: Any, monaco_bundle: Path) -> Any:
    """`await open_monaco(server, doc, name, token=None)`: the Monaco page on `doc`."""

    async def serve(route: Any) -> None:
        name = route.request.url.split("/__monaco__/", 1)[1].split("?", 1)[0]
        if name == "page.html":
            await route.fulfill(body=PAGE, content_type="text/html")
            return
        file = monaco_bundle / name
        if file.parent != monaco_bundle or not file.is_file():
            await route.fulfill(status=404, body="not found")
            return
        await route.fulfill(
            body=file.read_bytes(), content_type=CONTENT_TYPES.get(file.suffix, "text/plain")
        )

    async def setup(context: Any) -> None:
        await context.route("**/__monaco__/**", serve)

    async def open_(
        server: Any,
        doc: str,
        name: str,
        token: str | None = None,
        ready: bool = True,
        init_script: str | None = None,
    ) -> Any:
        query = urlencode({"doc": doc, "token": token or server.token(name)})
        return await open_editor(
            server,
            doc,
            name,
            editor="monaco",
            path=f"/__monaco__/page.html?{query}",
            setup=setup,
            ready=ready,
            init_script=init_script,
        )

    return open_


async def caret_offset(editor: Any, name: str) -> int | None:
    """The UTF-16 offset of the remote caret of `name` in `editor`'s model, from its decoration."""
    result = await editor.js(
        """(name) => { const { editor } = window.collabDemo; const model = editor.getModel();
            for (const d of model.getAllDecorations()) {
              const o = d.options;
              if (o.hoverMessage?.value !== name) continue;
              const after = (o.afterContentClassName || '').includes('collab-caret');
              const p = after ? d.range.getEndPosition() : d.range.getStartPosition();
              return model.getOffsetAt(p);
            }
            return null; }""",
        name,
    )
    return None if result is None else int(result)


async def test_monaco_and_textarea_pages_converge(
    live_server: Any, open_monaco: Any, open_editor: Any, converge: Any
) -> None:
    doc = new_doc("monaco-mixed")
    start = "line one\nline two 😀\n"
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": start})
    alice = await open_monaco(live_server, doc, "Alice")
    bob = await open_monaco(live_server, doc, "Bob")
    carol = await open_editor(live_server, doc, "Carol", editor="textarea")
    for editor in (alice, bob, carol):
        await editor.wait_value(start)

    await alice.page.click(TEXT)
    await alice.page.keyboard.press("Control+Home")
    await bob.page.click(TEXT)
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


async def test_line_endings_stay_as_the_document_has_them(
    live_server: Any, open_monaco: Any, converge: Any
) -> None:
    doc = new_doc("monaco-crlf")
    start = "one\r\ntwo 😀\r\n"
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": start})
    alice = await open_monaco(live_server, doc, "Alice")
    bob = await open_monaco(live_server, doc, "Bob")
    await alice.wait_value(start)
    await bob.wait_value(start)
    await alice.page.click(TEXT)
    await alice.page.keyboard.press("Control+End")
    await alice.page.keyboard.type("three")
    await alice.page.keyboard.press("Enter")  # the model's end of line: "\r\n"
    await bob.page.click(TEXT)
    await bob.page.keyboard.press("Control+Home")
    await bob.page.keyboard.press("End")
    await bob.page.keyboard.type(" 1")
    assert await converge(live_server, doc, alice, bob) == "one 1\r\ntwo 😀\r\nthree\r\n"

    # Another editor adds a lone "\n": Monaco cannot hold both kinds, so it shows read-only.
    await asyncio.to_thread(
        live_server.post,
        f"/documents/{doc}/ops",
        live_server.token("Other"),
        {"rev": 0, "op": ["mixed\n"]},
    )
    expected = "mixed\none 1\r\ntwo 😀\r\nthree\r\n"
    for editor in (alice, bob):
        await editor.wait("() => window.collabDemo.client.text.startsWith('mixed')")
        assert await editor.js("window.collabDemo.writable()") is False
        notice = editor.page.locator(".collab-notice")
        await notice.wait_for()
        assert "line endings" in await notice.inner_text()
    await alice.page.click(TEXT)
    await alice.page.keyboard.type("refused")
    assert await alice.js("window.collabDemo.client.text") == expected
    assert await alice.js("window.collabDemo.client.pending") is False


async def test_remote_cursors_show_name_and_place(live_server: Any, open_monaco: Any) -> None:
    doc = new_doc("monaco-cursors")
    live_server.post(
        "/documents", live_server.token("Setup"), {"id": doc, "content": "first line\nsecond 😀 x"}
    )
    alice = await open_monaco(live_server, doc, "Alice")
    bob = await open_monaco(live_server, doc, "Bob")
    await alice.page.click(TEXT)
    await alice.page.keyboard.press("Control+Home")
    await alice.page.keyboard.press("ArrowDown")
    await alice.page.keyboard.press("Home")
    for _ in range(4):
        await alice.page.keyboard.press("ArrowRight")
    for _ in range(20):
        if await caret_offset(bob, "Alice") == 15:
            break
        await bob.page.wait_for_timeout(100)  # polling a value, not synchronising
    assert await caret_offset(bob, "Alice") == 15
    # The caret's flag is drawn with Alice's name.
    flag = await bob.js(
        """() => [...document.querySelectorAll('.collab-caret')]
            .map((e) => getComputedStyle(e, '::after').content)"""
    )
    assert flag == ['"Alice"']

    # A selection of "first" is marked in Bob's editor.
    await alice.page.keyboard.press("Control+Home")
    await alice.page.keyboard.press("Shift+End")
    await bob.wait("() => document.querySelector('.collab-selection') !== null")
    assert await caret_offset(bob, "Alice") == len("first line")

    # Bob types before Alice's caret: the caret moves with the text.
    await bob.page.click(TEXT)
    await bob.page.keyboard.press("Control+Home")
    await bob.page.keyboard.type(">> ")
    await bob.wait_synced()
    assert await caret_offset(bob, "Alice") == len(">> first line")


async def test_undo_removes_only_own_text(
    live_server: Any, open_monaco: Any, converge: Any
) -> None:
    """Bob's edits land before Alice's after she typed: her undo must still find her own text
    (an undo stack that was not moved through his edits would remove the wrong characters)."""
    doc = new_doc("monaco-undo")
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": "[middle]"})
    alice = await open_monaco(live_server, doc, "Alice")
    bob = await open_monaco(live_server, doc, "Bob")
    await alice.page.click(TEXT)
    await alice.page.keyboard.press("Control+End")
    await alice.page.keyboard.type(" alice 😀", delay=10)
    assert await converge(live_server, doc, alice, bob) == "[middle] alice 😀"
    await bob.page.click(TEXT)
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
    await bob.js("window.collabDemo.unbind.redo()")  # the binding's API, for menus
    assert await converge(live_server, doc, alice, bob) == "bob 🎉 [middle] alice 😀"


async def test_read_only_token_refuses_typing(live_server: Any, open_monaco: Any) -> None:
    doc = new_doc("monaco-readonly")
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": "look only"})
    token = mint_token(
        live_server.env["COLLAB_JWT_SECRET"], "reader-2", name="Reader", docs={doc: "read"}
    )
    reader = await open_monaco(live_server, doc, "Reader", token=token, ready=False)
    await reader.wait(
        """() => { const d = window.collabDemo; return d?.client.status === 'online'
            && d.client.access === 'read' && d.shown() === 'look only'; }"""
    )
    assert await reader.js("window.collabDemo.writable()") is False
    await reader.page.click(TEXT)
    await reader.page.keyboard.type("typed")
    await reader.page.keyboard.press("Enter")
    assert await reader.value() == "look only"
    assert await reader.js("window.collabDemo.client.pending") is False


async def test_large_paste_goes_through_in_pieces(
    live_server: Any, open_monaco: Any, converge: Any
) -> None:
    """1.5 MB pasted in one edit: more than one message holds, sent in pieces, nothing lost."""
    doc = new_doc("monaco-paste")
    alice = await open_monaco(live_server, doc, "Alice")
    bob = await open_monaco(live_server, doc, "Bob")
    await alice.js(
        """(n) => { const { editor } = window.collabDemo;
            const text = 'monaco paste line é 😀\\n'.repeat(n / 25);
            editor.executeEdits('paste', [{ range: editor.getModel().getFullModelRange(), text }]);
        }""",
        1_500_000,
    )
    final = await converge(live_server, doc, alice, bob)
    assert final == "monaco paste line é 😀\n" * 60_000
    assert await alice.js("window.collabDemo.client.status") == "online"


async def test_restart_keeps_pending_edits(
    make_server: Any, open_monaco: Any, converge: Any
) -> None:
    server = make_server()
    doc = "monaco-restart"
    alice = await open_monaco(server, doc, "Alice")
    await alice.page.click(TEXT)
    await alice.page.keyboard.type("before 😀 ")
    assert await converge(server, doc, alice) == "before 😀 "

    assert server.stop(signal.SIGTERM) is not None
    await alice.wait("() => window.collabDemo.client.status !== 'online'")
    await alice.page.keyboard.type("during")
    assert await alice.js("window.collabDemo.client.pending") is True

    await asyncio.to_thread(server.start)
    await alice.wait("() => window.collabDemo.client.status === 'online'")
    await alice.page.keyboard.type(" after")
    bob = await open_monaco(server, doc, "Bob")
    assert await converge(server, doc, alice, bob) == "before 😀 during after"
    # The undo stack survived the reconnect: the last burst of typing goes.
    await alice.page.keyboard.press("Control+z")
    assert await converge(server, doc, alice, bob) == "before 😀 during"


async def test_refused_op_resyncs_with_a_notice(
    live_server: Any, open_monaco: Any, converge: Any
) -> None:
    doc = new_doc("monaco-refused")
    live_server.post("/documents", live_server.token("Setup"), {"id": doc, "content": "keep me"})
    alice = await open_monaco(live_server, doc, "Alice", init_script=CORRUPT_NEXT_DELETE)
    bob = await open_monaco(live_server, doc, "Bob")
    await alice.page.click(TEXT)
    await alice.page.keyboard.press("Control+End")
    await alice.js("window.__corruptNextDelete = true")
    await alice.page.keyboard.press("Backspace")  # sent as a delete of "Q": invalid_op
    notice = alice.page.locator(".collab-notice")
    await notice.wait_for()
    assert "invalid_op" in await notice.inner_text()
    assert await converge(live_server, doc, alice, bob) == "keep me"
    await alice.page.click(TEXT)
    await alice.page.keyboard.press("Control+End")
    await alice.page.keyboard.type("!")
    assert await converge(live_server, doc, alice, bob) == "keep me!"
