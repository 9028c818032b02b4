"""GET /metrics: the service's Prometheus metrics (face_service.metrics) and what is read at
scrape time (face_service.scrape_metrics), in Prometheus's text format. It needs the ``metrics``
scope (admin implies it) when keys are required, takes no admission slot and is outside the rate
limit, so that a scrape still answers when the service is saturated."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from face_service.api.auth import AUTH_ERRORS, require_scope
from face_service.api.deps import SettingsDep, TritonDep
from face_service.metrics import exposition
from face_service.scrape_metrics import scrape_collectors

router = APIRouter(tags=["metrics"])

# The text format every Prometheus (2.x and 3.x) parses.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[require_scope("metrics")],
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **AUTH_ERRORS,
    },
    summary="Prometheus metrics: requests, latency, admission, faces, Triton, gallery",
)
async def prometheus_metrics(
    request: Request, triton: TritonDep, settings: SettingsDep
) -> Response:
    collectors = await scrape_collectors(
        triton, request.app.state.gallery_counter, settings.health_timeout_s
    )
    # Merging the processes' files (PROMETHEUS_MULTIPROC_DIR) reads the disk: not on the loop.
    body = await asyncio.to_thread(exposition, collectors)
    return Response(body, media_type=CONTENT_TYPE)
