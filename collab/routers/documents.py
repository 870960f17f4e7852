"""Documents, their ops and their history (SPEC §5)."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from collab import ot
from collab.actor import DocumentGone, DocumentNotFound
from collab.deps import DOC_ID_RE, DocIdPath, PrincipalDep, ServicesDep, StoreDep, require
from collab.document import Submission, SubmitError
from collab.schemas import (
    ContentAt,
    DocumentCreate,
    DocumentOut,
    DocumentPage,
    DocumentSummary,
    History,
    HistoryOp,
    OpAccepted,
    OpSubmit,
    SnapshotOut,
    error_responses,
)
from collab.types import DocumentInfo, utcnow

router = APIRouter(
    prefix="/documents",
    tags=["documents"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422),
)

_SUBMIT_STATUS = {"invalid_op": 422, "bad_revision": 409, "read_only": 403}


def _not_found(doc_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no document {doc_id!r}")


def _summary(info: DocumentInfo) -> DocumentSummary:
    return DocumentSummary(
        id=info.id,
        title=info.title,
        rev=info.rev,
        created_at=info.created_at,
        updated_at=info.updated_at,
    )


def _encode_cursor(doc_id: str) -> str:
    return base64.urlsafe_b64encode(doc_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        doc_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:  # binascii.Error, UnicodeDecodeError, or a non-ASCII cursor
        doc_id = ""
    if not DOC_ID_RE.match(doc_id):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor")
    return doc_id


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DocumentOut)
async def create_document(
    body: DocumentCreate, principal: PrincipalDep, store: StoreDep
) -> DocumentOut:
    """Create a document, optionally with an id, a title and initial content."""
    doc_id = body.id or secrets.token_urlsafe(12)
    require(principal, doc_id, "write")
    info = await store.create_document(doc_id, body.title, body.content, utcnow())
    if info is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"document {doc_id!r} already exists")
    return DocumentOut(**_summary(info).model_dump(), content=body.content)


@router.get("", response_model=DocumentPage)
async def list_documents(
    principal: PrincipalDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> DocumentPage:
    """List the documents this token may read, in id order, a page at a time."""
    after = _decode_cursor(cursor) if cursor else None
    rows = await store.list_documents(after, limit + 1, principal.readable_ids())
    more = len(rows) > limit
    rows = rows[:limit]
    return DocumentPage(
        items=[_summary(r) for r in rows],
        next_cursor=_encode_cursor(rows[-1].id) if more else None,
    )


@router.get("/{doc_id}", response_model=DocumentOut)
async def get_document(
    doc_id: DocIdPath, principal: PrincipalDep, services: ServicesDep
) -> DocumentOut:
    """The document with its current content."""
    require(principal, doc_id, "read")
    info = await services.store.get_document(doc_id)
    if info is None:
        raise _not_found(doc_id)
    actor = services.registry.loaded(doc_id)
    content, rev = None, info.rev
    if actor is not None:
        try:
            content, rev = await actor.read()
        except DocumentGone:
            content = None
    if content is None:
        content = await services.store.content_at(doc_id, info.rev)
    return DocumentOut(**_summary(info).model_dump(exclude={"rev"}), rev=rev, content=content)


@router.post("/{doc_id}/ops", response_model=OpAccepted)
async def submit_op(
    doc_id: DocIdPath, body: OpSubmit, principal: PrincipalDep, services: ServicesDep
) -> OpAccepted:
    """Submit an op made at revision `rev`; it is transformed, stored and broadcast."""
    require(principal, doc_id, "write")
    try:
        ot.check(body.op)
    except ot.InvalidOp as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    submission = Submission(
        op=body.op,
        base_rev=body.rev,
        src=body.src or f"rest-{secrets.token_hex(8)}",
        seq=body.seq or 1,
        user_id=principal.sub,
    )
    try:
        async with services.registry.lease(doc_id) as actor:
            reply = await actor.submit(submission, origin=None)
            rev = await reply
    except DocumentNotFound:
        raise _not_found(doc_id) from None
    except DocumentGone as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from None
    except SubmitError as error:
        raise HTTPException(_SUBMIT_STATUS.get(error.code, 400), error.message) from None
    return OpAccepted(rev=rev)


@router.get("/{doc_id}/history", response_model=History)
async def get_history(
    doc_id: DocIdPath,
    principal: PrincipalDep,
    store: StoreDep,
    since: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> History:
    """The ops after revision `since`, oldest first."""
    require(principal, doc_id, "read")
    if await store.get_document(doc_id) is None:
        raise _not_found(doc_id)
    # One more than asked shows whether there is a next page, so the last one says null.
    ops = await store.load_ops(doc_id, after=since, limit=limit + 1)
    more = len(ops) > limit
    ops = ops[:limit]
    return History(
        ops=[
            HistoryOp(
                rev=o.rev, op=o.op, src=o.src, seq=o.seq, user=o.user_id, created_at=o.created_at
            )
            for o in ops
        ],
        next=ops[-1].rev if more else None,
    )


@router.get("/{doc_id}/content", response_model=ContentAt)
async def get_content(
    doc_id: DocIdPath,
    principal: PrincipalDep,
    store: StoreDep,
    rev: Annotated[int | None, Query(ge=0)] = None,
    at: datetime | None = None,
) -> ContentAt:
    """The content as it was at revision `rev`, or at the moment `at` (ISO 8601)."""
    require(principal, doc_id, "read")
    if rev is not None and at is not None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "give rev or at, not both")
    info = await store.get_document(doc_id)
    if info is None:
        raise _not_found(doc_id)
    if at is not None:
        if at.tzinfo is None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "at needs a time zone, e.g. Z")
        found = await store.rev_at(doc_id, at)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "the document did not exist then")
        rev = found
    if rev is None:
        rev = info.rev
    if rev > info.rev:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no revision {rev} (latest {info.rev})")
    return ContentAt(rev=rev, content=await store.content_at(doc_id, rev))


@router.get("/{doc_id}/snapshots", response_model=list[SnapshotOut])
async def list_snapshots(
    doc_id: DocIdPath, principal: PrincipalDep, store: StoreDep
) -> list[SnapshotOut]:
    """The stored snapshots of the document."""
    require(principal, doc_id, "read")
    if await store.get_document(doc_id) is None:
        raise _not_found(doc_id)
    snapshots = await store.list_snapshots(doc_id)
    return [SnapshotOut(rev=s.rev, created_at=s.created_at) for s in snapshots]


@router.delete("/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(
    doc_id: DocIdPath, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Delete the document and its history; connected clients are closed with 4404."""
    require(principal, doc_id, "write")
    actor = services.registry.loaded(doc_id)
    deleted = False
    if actor is not None:
        try:
            deleted = await actor.delete()
        except DocumentGone:
            actor = None
    if actor is None:
        deleted = await services.store.delete_document(doc_id)
    if not deleted:
        raise _not_found(doc_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
