"""The detection records that /extract saves with store=true: find, read, delete."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response

from face_service.api.auth import AUTH_ERRORS, require_scope
from face_service.api.deps import GalleryDep
from face_service.api.openapi import error_responses
from face_service.api.schemas.records import RecordPagePublic, RecordPublic

router = APIRouter(tags=["records"], responses={**AUTH_ERRORS, **error_responses(404, 422, 503)})


@router.get(
    "/records",
    response_model=RecordPagePublic,
    summary="Detection records by file name",
    dependencies=[require_scope("read")],
)
async def find_records(
    gallery: GalleryDep,
    filename: Annotated[str | None, Query(max_length=1000, description="substring")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RecordPagePublic:
    items, total = await asyncio.to_thread(
        gallery.find_records, filename_contains=filename, offset=offset, limit=limit
    )
    return RecordPagePublic(
        items=[RecordPublic.from_record(r) for r in items], total=total, offset=offset, limit=limit
    )


@router.get(
    "/records/{record_id}",
    response_model=RecordPublic,
    summary="One detection record",
    dependencies=[require_scope("read")],
)
async def get_record(record_id: str, gallery: GalleryDep) -> RecordPublic:
    return RecordPublic.from_record(
        await asyncio.to_thread(gallery.get_record, record_id=record_id)
    )


@router.delete(
    "/records/{record_id}",
    status_code=204,
    summary="Delete a detection record",
    dependencies=[require_scope("write", audit="record.delete")],
)
async def delete_record(record_id: str, gallery: GalleryDep) -> Response:
    await asyncio.to_thread(gallery.delete_record, record_id=record_id)
    return Response(status_code=204)
