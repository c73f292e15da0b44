"""Unauthenticated routes: health and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router

from api.models import Health

router = Router()  # type: ignore[no-untyped-call]


@router.get("/health", summary="Liveness (no auth)", tags=["meta"])
def health() -> Health:
    return Health()


@router.get("/openapi.json", summary="This API's OpenAPI document (no auth)", tags=["meta"])
def openapi_document() -> dict[str, Any]:
    from api.openapi import document

    return document()
