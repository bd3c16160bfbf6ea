"""Operations routes, no token needed (API.md "Operations"): /health (the process answers),
/ready (the database answers; the projections' lag), /metrics (Prometheus text)."""

from __future__ import annotations

import logging
from typing import Any, Final

from litestar import Request, Response, get
from litestar.concurrency import sync_to_thread
from litestar.openapi.datastructures import ResponseSpec

from api import auth, wire
from api.metrics import METRICS_CONTENT_TYPE
from api.services import Services, services_of
from ledger_core import errors

logger = logging.getLogger("api")

Req = Request[Any, Any, Any]
#: The OpenAPI document's security of these routes: none (the app's default is a bearer token).
NO_TOKEN: Final[list[dict[str, list[str]]]] = [{}]


@get("/health", sync_to_thread=False, security=NO_TOKEN)
def health() -> wire.Health:
    """The process is alive and answering."""
    return wire.Health(status="ok")


@get(
    "/ready",
    security=NO_TOKEN,
    responses={
        503: ResponseSpec(
            data_container=wire.Readiness,
            description="The database does not answer",
            generate_examples=False,
        )
    },
)
async def ready(request: Req) -> Response[wire.Readiness]:
    """Ready when the database answers; says how far the projections lag behind the log and
    which projection, if any, stopped on an event it could not apply (it is still ready: the
    writes go on, and reads answer what was applied); why it stopped only to an admin token."""
    authorization = request.headers.get("authorization")
    readiness = await sync_to_thread(_readiness, services_of(request), authorization)
    return Response(readiness, status_code=200 if readiness.database else 503)


def _is_admin(services: Services, authorization: str | None) -> bool:
    """Whether the request carries an admin token granted every space (no token, or any other,
    is not an error here: /ready answers everyone, it only says less)."""
    if authorization is None:
        return False
    try:
        principal = auth.authenticate(authorization, services.ledger, services.admin_token_hash)
    except errors.LedgerError:  # an unknown, revoked or malformed token
        return False
    return principal.is_global_admin  # the reason may quote any space's rows


def _readiness(services: Services, authorization: str | None) -> wire.Readiness:
    try:
        log_position = services.ledger.store.max_position()
        applied = services.read_models.applied_position()
        failures = services.read_models.projection_failures()
    except Exception:  # any failure to reach the database means: not ready
        logger.warning("readiness check failed", exc_info=True)
        return wire.Readiness(
            status="unavailable",
            database=False,
            applied_position=None,
            log_position=None,
            projection_lag=None,
        )
    admin = bool(failures) and _is_admin(services, authorization)
    return wire.Readiness(
        status="ready",
        database=True,
        applied_position=applied,
        log_position=log_position,
        projection_lag=max(0, log_position - applied),
        failed_projections=[
            wire.FailedProjection(
                name=name, position=position, topic=topic, reason=reason if admin else None
            )
            for name, position, topic, reason in failures
        ],
    )


@get("/metrics", media_type=METRICS_CONTENT_TYPE, security=NO_TOKEN)
async def metrics(request: Req) -> Response[bytes]:
    """Prometheus text: request counts and latencies, postings, declines, projection lag."""
    registry = services_of(request).metrics
    body = await sync_to_thread(registry.render)
    # The content type as given: Litestar would append a second `charset` to a text/ type that
    # already names one, and a scraper may refuse a media type with a repeated parameter.
    return Response(body, media_type=METRICS_CONTENT_TYPE,
                    headers={"content-type": METRICS_CONTENT_TYPE})  # fmt: skip


OPS_ROUTES: Final = (health, ready, metrics)
