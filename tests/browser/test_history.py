"""The History tab: a slider over every revision, with who wrote each change."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

pytestmark = pytest.mark.browser

SHOWN_TEXT = """() => { const v = document.querySelector('#history-view');
    const copy = v.cloneNode(true); copy.querySelectorAll('del').forEach((d) => d.remove());
    return copy.textContent; }"""


async def slide_to(editor: Any, rev: int) -> None:
    await editor.js(
        """(rev) => { const s = document.querySelector('#slider');
            s.value = String(rev); s.dispatchEvent(new Event('input', { bubbles: true })); }""",
        rev,
    )
    await editor.wait(
        "(rev) => document.querySelector('#history-view').dataset.rev === String(rev)", rev
    )


async def shown(editor: Any) -> dict[str, Any]:
    result: dict[str, Any] = await editor.js(
        f"""() => ({{
            text: ({SHOWN_TEXT})(),
            inserted: [...document.querySelectorAll('#history-view ins')].map((e) => e.textContent),
            deleted: [...document.querySelectorAll('#history-view del')].map((e) => e.textContent),
            author: document.querySelector('#hist-author').textContent,
            rev: document.querySelector('#hist-rev').textContent,
            time: document.querySelector('#hist-time').textContent,
        }})"""
    )
    return result


async def test_history_slider_shows_older_revisions(live_server: Any, open_editor: Any) -> None:
    doc = f"history-{secrets.token_hex(4)}"
    alice = await open_editor(live_server, doc, "Alice")
    bob = await open_editor(live_server, doc, "Bob")

    # Four revisions with known boundaries, through the client API (one op each).
    steps = [
        (alice, "(c) => c.insert(0, 'Hello')"),
        (alice, "(c) => c.insert(5, ' wörld 😀')"),
        (bob, "(c) => c.insert(13, '!')"),
        (alice, "(c) => c.delete(0, 6)"),
    ]
    for rev, (editor, call) in enumerate(steps, start=1):
        await editor.js(f"() => ({call})(window.collabDemo.client)")
        await editor.wait(
            "(rev) => window.collabDemo.client.rev === rev && !window.collabDemo.client.pending",
            rev,
        )
        await (bob if editor is alice else alice).wait(
            "(rev) => window.collabDemo.client.rev === rev", rev
        )

    await alice.page.click("#tab-history")
    await alice.wait("() => document.querySelector('#history-view').dataset.rev === '4'")
    now = await shown(alice)
    assert now["text"] == "wörld 😀!"
    assert now["deleted"] == ["Hello "]
    assert now["author"] == "Alice"
    assert now["rev"] == "rev 4 / 4"

    await slide_to(alice, 1)
    first = await shown(alice)
    assert first == {
        **first,
        "text": "Hello",
        "inserted": ["Hello"],
        "author": "Alice",
        "rev": "rev 1 / 4",
    }
    assert first["time"]  # created_at, formatted

    await slide_to(alice, 2)
    second = await shown(alice)
    assert (second["text"], second["inserted"]) == ("Hello wörld 😀", [" wörld 😀"])

    await slide_to(alice, 3)
    third = await shown(alice)
    assert (third["text"], third["inserted"], third["author"]) == ("Hello wörld 😀!", ["!"], "Bob")

    # What the page shows is what the REST API says for that revision.
    token = live_server.token("Checker")
    body = await asyncio.to_thread(live_server.get, f"/documents/{doc}/content?rev=3", token)
    assert body == {"rev": 3, "content": third["text"]}

    # Revision 0 is the empty document; "Live" goes back to the newest, and follows new edits.
    await slide_to(alice, 0)
    assert (await shown(alice))["text"] == ""
    await alice.page.click("#live")
    await alice.wait("() => document.querySelector('#history-view').dataset.rev === '4'")
    await bob.js("() => window.collabDemo.client.insert(0, '¡')")
    await alice.wait("() => document.querySelector('#history-view').dataset.rev === '5'")
    assert (await shown(alice))["text"] == "¡wörld 😀!"
