"""Request and response bodies of the REST API (SPEC §5), as they appear in /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from collab.protocol import DOC_ID_DESCRIPTION, DOC_ID_PATTERN, MAX_INT

DocId = Annotated[str, Field(pattern=DOC_ID_PATTERN, description=DOC_ID_DESCRIPTION)]
Revision = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentCreate(_Body):
    id: DocId | None = None
    title: Annotated[str, Field(max_length=512)] = ""
    content: str = ""

    @field_validator("title", "content")
    @classmethod
    def _no_lone_surrogates(cls, value: str) -> str:
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            raise ValueError("text must not hold lone surrogates")
        return value


class DocumentSummary(BaseModel):
    id: str
    title: str
    rev: int
    created_at: datetime
    updated_at: datetime


class DocumentOut(DocumentSummary):
    content: str


class DocumentPage(BaseModel):
    items: list[DocumentSummary]
    next_cursor: str | None


class OpSubmit(_Body):
    rev: Revision
    op: list[Any] = Field(description="A text operation (SPEC §3)")
    src: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    seq: Annotated[StrictInt, Field(ge=1, le=MAX_INT)] | None = None

    @model_validator(mode="after")
    def _src_with_seq(self) -> OpSubmit:
        # A src alone would give every op seq 1, so each after the first would pass for a
        # resend and be dropped.
        if (self.src is None) != (self.seq is None):
            raise ValueError("give src and seq together, or neither")
        return self


class OpAccepted(BaseModel):
    rev: int


class HistoryOp(BaseModel):
    rev: int
    op: list[Any]
    src: str
    seq: int
    user: str
    created_at: datetime


class History(BaseModel):
    ops: list[HistoryOp]
    next: int | None = Field(description="pass as ?since= for the next page; null at the end")


class ContentAt(BaseModel):
    rev: int
    content: str


class SnapshotOut(BaseModel):
    rev: int
    created_at: datetime


class TicketRequest(_Body):
    doc: DocId


class TicketOut(BaseModel):
    ticket: str
    expires_in: int


class DevTokenRequest(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64)]


class UserOut(BaseModel):
    id: str
    name: str


class DevTokenOut(BaseModel):
    token: str
    user: UserOut


class ErrorOut(BaseModel):
    """Every error answer (SPEC §5): a message, or FastAPI's list of validation problems."""

    detail: str | list[dict[str, Any]] | dict[str, str]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Declares error answers in /openapi.json; a declared 422 replaces FastAPI's own, whose
    list-only ``detail`` does not describe the 422 of an op that does not fit its document."""
    return {code: {"model": ErrorOut} for code in codes}
