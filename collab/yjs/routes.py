"""``GET /documents/{id}/yjs[?rev=R]``: the document's Yjs state as one binary update."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from collab.deps import DocIdPath, PrincipalDep, ServicesDep, StoreDep, require
from collab.schemas import error_responses
from collab.yjs.store import RevisionCompacted, YjsStore

router = APIRouter(
    prefix="/documents", tags=["yjs"], responses=error_responses(401, 403, 404, 409, 422)
)


@router.get(
    "/{doc_id}/yjs",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "a Yjs update"}},
)
async def get_yjs_state(
    doc_id: DocIdPath,
    principal: PrincipalDep,
    services: ServicesDep,
    store: StoreDep,
    rev: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The Yjs state (every root) as one update for `Y.applyUpdate`, now or at revision `rev`."""
    require(principal, doc_id, "read")
    info = await store.get_document(doc_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {doc_id!r}")
    if rev is not None and rev > info.rev:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no revision {rev} (latest {info.rev})")
    try:
        state = await YjsStore(services.sessions).state_at(doc_id, rev)
    except RevisionCompacted:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"the Yjs state at revision {rev} is no longer held"
        ) from None
    if state is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"document {doc_id!r} has no Yjs state: no Yjs client joined it",
        )
    return Response(state, media_type="application/octet-stream")
