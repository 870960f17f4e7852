"""Dev-mode only: the demo page and a token for whoever opens it. Never mounted otherwise."""

from __future__ import annotations

import re
import secrets
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from collab.auth import mint_token
from collab.deps import SettingsDep
from collab.schemas import DevTokenOut, DevTokenRequest, UserOut

router = APIRouter(tags=["dev"])


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def demo_page() -> HTMLResponse:
    page = files("collab").joinpath("static/index.html")
    if not page.is_file():
        return HTMLResponse("<h1>collab</h1><p>The demo page is not built.</p>")
    return HTMLResponse(page.read_text(encoding="utf-8"))


@router.post("/dev/token", response_model=DevTokenOut)
async def dev_token(body: DevTokenRequest, settings: SettingsDep) -> DevTokenOut:
    """A token that may write every document, for the demo page (dev mode only)."""
    assert settings.jwt_secret is not None
    slug = re.sub(r"[^a-z0-9]+", "-", body.name.lower()).strip("-") or "user"
    user_id = f"{slug}-{secrets.token_hex(3)}"
    token = mint_token(
        settings.jwt_secret,
        user_id,
        name=body.name,
        ttl=12 * 3600,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    return DevTokenOut(token=token, user=UserOut(id=user_id, name=body.name))
