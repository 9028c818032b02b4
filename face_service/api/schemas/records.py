"""Bodies of the detection record routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from face_service.gallery import Record


class RecordFacePublic(BaseModel):
    bbox: list[float]
    det_score: float
    landmarks: list[list[float]]
    embedding: list[float] | None


class RecordPublic(BaseModel):
    record_id: str
    filename: str
    width: int
    height: int
    channels: int
    faces: list[RecordFacePublic]
    created_at: datetime

    @classmethod
    def from_record(cls, record: Record) -> RecordPublic:
        return cls(
            record_id=record.record_id,
            filename=record.filename,
            width=record.width,
            height=record.height,
            channels=record.channels,
            faces=[RecordFacePublic(**vars(face)) for face in record.faces],
            created_at=record.created_at,
        )


class RecordPagePublic(BaseModel):
    items: list[RecordPublic]
    total: int
    offset: int
    limit: int
