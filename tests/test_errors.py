"""The one error vocabulary: the JS client's copy is generated from collab.errors, never edited."""

from __future__ import annotations

from pathlib import Path

from collab import errors

STATIC = Path(errors.__file__).parent / "static"


def test_js_codes_module_is_generated_from_the_python_tables() -> None:
    committed = (STATIC / "collab-codes.js").read_text(encoding="utf-8")
    assert committed == errors.js_module(), (
        "collab/static/collab-codes.js is stale: run "
        "`python -m collab.errors > collab/static/collab-codes.js`"
    )


def test_every_error_code_has_an_http_status() -> None:
    assert set(errors.HTTP_STATUS) == set(errors.ErrorCode)


def test_a_close_code_is_either_soon_or_stop_never_both() -> None:
    assert not errors.RECONNECT_SOON & errors.STOP
    assert errors.CloseCode.DELETED in errors.STOP


def test_collab_error_keeps_its_code_and_message() -> None:
    error = errors.CollabError("too old", code=errors.ErrorCode.BAD_REVISION)
    assert (error.code, error.message, str(error)) == ("bad_revision", "too old", "too old")
