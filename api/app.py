"""The HTTP API: a Litestar app factory (no module-level state).

    app = create_app()                        # LedgerSettings from LEDGER_* variables
    app = create_app(settings, ledger=ledger, read_models=read_models, run_projections=False)

The Ledger, the read models and (unless `run_projections=False`) the projection runner are
created on startup and closed on shutdown (`api.services`). Litestar because its handlers take
msgspec Structs natively, it has lifecycle hooks, one table of exception handlers, a request
body limit and OpenAPI 3.1 with browsable UIs built in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Litestar, Response, Router
from litestar.enums import MediaType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api.command_routes import COMMAND_ROUTES
from api.fast_path import FastPath
from api.gate import gate
from api.limits import MAX_REQUEST_BODY_BYTES
from api.metrics import HEAD_REQUEST, Metrics
from api.ops_routes import OPS_ROUTES
from api.problems import NOT_FOUND, exception_handlers, problem_response
from api.read_routes import READ_ROUTES
from api.services import Services
from ledger_core.ledger import Ledger
from ledger_core.settings import LedgerSettings

if TYPE_CHECKING:
    from projections.queries import ReadModels

API_VERSION = "1.0.0"


def create_app(
    settings: LedgerSettings | None = None,
    *,
    ledger: Ledger | None = None,
    read_models: ReadModels | None = None,
    run_projections: bool = True,
) -> Litestar:
    """Build the app. A given `ledger`/`read_models` is used and left open at shutdown."""
    services = Services(
        settings=settings or LedgerSettings(),
        metrics=Metrics(),
        run_projections=run_projections,
        ledger_given=ledger,
        read_models_given=read_models,
    )
    app = LedgerApp(
        route_handlers=[*COMMAND_ROUTES, *READ_ROUTES, *OPS_ROUTES],
        on_startup=[services.on_startup],
        on_shutdown=[services.on_shutdown],
        before_request=gate,
        exception_handlers=exception_handlers(),
        middleware=[services.metrics.middleware],
        request_max_body_size=MAX_REQUEST_BODY_BYTES,
        openapi_config=_openapi_config(),
        debug=False,
    )
    app.services = services
    app.fast_path = FastPath(app, services.metrics.middleware)
    return app


class LedgerApp(Litestar):
    """Litestar, answering HEAD on every GET route: as GET, without the body (RFC 9110 9.3.2:
    same status and headers, Content-Length included). Litestar routes HEAD only to handlers
    declared for it, before any middleware runs, so this is done at the app's entry. Where GET
    is not allowed, HEAD is not either (405)."""

    #: What this app serves with (`api.services.services_of`).
    services: Services

    #: The hottest routes answered at the entry (api.fast_path); None: through Litestar only.
    fast_path: FastPath | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope["method"] = "GET"
            scope[HEAD_REQUEST] = True  # the metrics count it as HEAD
            send = _without_body(send)
        if self.fast_path is not None and (fast := self.fast_path.route(scope)) is not None:
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _without_body(send: Any) -> Any:
    async def without_body(message: Any) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return without_body


def _openapi_config() -> OpenAPIConfig:
    bearer: Any = SecurityScheme(type="http", scheme="bearer", description="An API token")
    return OpenAPIConfig(
        title="Ledger API",
        version=API_VERSION,
        description="An event-sourced double-entry ledger (see API.md for the contract).",
        path="/schema",
        render_plugins=[
            SwaggerRenderPlugin(path=["/", "/swagger"]),
            ScalarRenderPlugin(path="/scalar"),
            JsonRenderPlugin(path="/openapi.json"),
        ],
        components=Components(security_schemes={"bearer": bearer}),
        security=[{"bearer": []}],
        use_handler_docstrings=True,
        openapi_router=Router(
            "/schema", route_handlers=[], include_in_schema=False, after_request=_schema_not_found
        ),
    )


def _schema_not_found(response: Response[Any]) -> Response[Any]:
    """Litestar answers a path under /schema that no UI serves with an HTML 404 page; API.md
    says unknown routes answer problem+json, as they do everywhere else."""
    if response.status_code == 404 and response.media_type == MediaType.HTML:
        return problem_response(None, NOT_FOUND, "no such page of the API's documentation")
    return response
