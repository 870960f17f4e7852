"""Regenerates docs/img/editors.png, history.png and codemirror.png from a real server.

    COLLAB_SCREENSHOTS=1 .venv/bin/python -m pytest tests/browser/test_screenshots.py

Skipped otherwise, so the normal suite never rewrites tracked files.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"
WIDTH, HEIGHT = 900, 600


async def call(editor: Any, js: str) -> None:
    """Runs `js` with the client as `c`, then waits until it is acked."""
    await editor.js(f"() => {{ const c = window.collabDemo.client; {js}; }}")
    await editor.wait_synced()


async def select(editor: Any, needle: str, length: int) -> None:
    """Selects `length` UTF-16 units from `needle` in the CodeMirror demo page `editor`."""
    await editor.page.click(".cm-content")
    await editor.js(
        """([needle, length]) => { const view = window.collabDemo.view;
            const at = view.state.doc.toString().indexOf(needle); view.focus();
            view.dispatch({ selection: { anchor: at, head: at + length } }); }""",
        [needle, length],
    )


def composite_html(left: bytes, right: bytes) -> str:
    def img(png: bytes) -> str:
        data = base64.b64encode(png).decode()
        return f'<img src="data:image/png;base64,{data}" width="{WIDTH}" height="{HEIGHT}">'

    return (
        "<!doctype html><html><body style='margin:0;padding:16px;display:flex;gap:16px;"
        "background:#cfd4de'>"
        f"<div style='box-shadow:0 4px 18px rgba(20,30,60,.18);line-height:0'>{img(left)}</div>"
        f"<div style='box-shadow:0 4px 18px rgba(20,30,60,.18);line-height:0'>{img(right)}</div>"
        "</body></html>"
    )


@pytest.mark.skipif(os.environ.get("COLLAB_SCREENSHOTS") != "1", reason="set COLLAB_SCREENSHOTS=1")
async def test_screenshots(make_server: Any, open_editor: Any, browser: Any, converge: Any) -> None:
    server = make_server()
    doc = "welcome"
    alice, bob, chloe = [
        await open_editor(server, doc, name, width=WIDTH, height=HEIGHT, editor="codemirror")
        for name in ("Alice", "Bob", "Chloé")
    ]

    await call(alice, "c.insert(0, 'Meeting notes — Friday ☕\\n\\n')")
    await call(
        bob,
        "c.insert(c.length, 'Agenda\\n• Ship the collab demo 🚀\\n• Review the OT client\\n\\n')",
    )
    await call(
        alice,
        "c.insert(c.length, 'Action items\\n- Alice: screenshots for the docs\\n"
        "- Bob: reconnect tests\\n')",
    )
    # indexOf counts UTF-16 units; the client API counts code points: convert with fromUtf16.
    await call(bob, "c.insert(c.fromUtf16(c.text.indexOf('OT client') + 9), ' (ot-text.js)')")
    await call(
        chloe,
        "c.insert(c.fromUtf16(c.text.indexOf('Action items')),"
        " 'Café at 15:00 with the whole team.\\n\\n')",
    )
    await converge(server, doc, alice, bob, chloe)

    # Alice selects "collab demo", Bob writes at the end of his line, Chloé rests on hers.
    await select(alice, "collab demo", len("collab demo"))
    await select(chloe, "the whole team", 0)
    await select(bob, "reconnect tests", len("reconnect tests"))
    await bob.page.keyboard.press("End")
    await bob.page.keyboard.type(" ✅")
    await converge(server, doc, alice, bob, chloe)
    for editor, others in ((alice, ("Bob", "Chloé")), (bob, ("Alice", "Chloé"))):
        for name in others:
            await editor.page.locator(".cm-collab-caret", has_text=name).wait_for(state="attached")
    await alice.wait("() => document.querySelector('.cm-collab-selection') === null")
    await bob.wait("() => document.querySelector('.cm-collab-selection') !== null")

    OUT.mkdir(parents=True, exist_ok=True)
    shots = [await e.page.screenshot() for e in (alice, bob)]
    page = await browser.new_page(viewport={"width": 2 * WIDTH + 48, "height": HEIGHT + 32})
    await page.set_content(composite_html(*shots))
    await page.screenshot(path=str(OUT / "editors.png"))
    await page.close()

    # The history view at Bob's insertion in the middle of a line (revision 4).
    await bob.page.click("#tab-history")
    await bob.wait("() => document.querySelector('#history-view').dataset.rev !== undefined")
    await bob.js(
        """() => { const s = document.querySelector('#slider'); s.value = '4';
            s.dispatchEvent(new Event('input')); }"""
    )
    await bob.wait("() => document.querySelector('#history-view').dataset.rev === '4'")
    await bob.page.screenshot(path=str(OUT / "history.png"))


@pytest.mark.skipif(os.environ.get("COLLAB_SCREENSHOTS") != "1", reason="set COLLAB_SCREENSHOTS=1")
async def test_codemirror_screenshot(make_server: Any, open_editor: Any, converge: Any) -> None:
    """docs/img/codemirror.png: the CodeMirror demo with two remote cursors, one selecting."""
    server = make_server()
    doc = "welcome"
    alice, bob, chloe = [
        await open_editor(server, doc, name, width=WIDTH + 200, height=HEIGHT, editor="codemirror")
        for name in ("Alice", "Bob", "Chloé")
    ]
    await call(
        alice,
        "c.insert(0, 'Release notes — collab 0.2\\n\\nEditors\\n"
        "• CodeMirror 6: remote cursors, local undo\\n• Monaco: the same, with its own stack\\n\\n"
        'Line endings\\n• "\\\\r\\\\n" stays two characters on every side\\n\\n'
        "Thanks to everyone who tested it ☕\\n')",
    )
    await converge(server, doc, alice, bob, chloe)

    await select(bob, "remote cursors", len("remote cursors"))
    await select(chloe, "everyone", 0)
    await select(alice, "Monaco", 0)
    for name in ("Bob", "Chloé"):
        await alice.page.locator(".cm-collab-caret", has_text=name).wait_for(state="attached")
    await alice.wait("() => document.querySelector('.cm-collab-selection') !== null")
    OUT.mkdir(parents=True, exist_ok=True)
    await alice.page.screenshot(path=str(OUT / "codemirror.png"))
