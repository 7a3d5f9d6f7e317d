"""The ASGI application: API routers under /api (all signed), the ping, the web page, limits and errors."""
from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cyseg.server import page
from cyseg.server.errors import ApiError, PayloadTooLarge
from cyseg.server.routes import annotations, appengine, images, meta, processing, projects, tiles, users
from cyseg.server.routes.deps import authenticated
from cyseg.server.slides import SlideLibrary
from cyseg.server.store import Store

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024


def error_body(status: int, message: str) -> JSONResponse:
    """Cytomine's error shape; the client logs `errors`, people read `message`."""
    return JSONResponse({"success": False, "message": message, "errors": message}, status_code=status,
                        headers={"Cache-Control": "no-store"})


class Limits:
    """ASGI middleware: refuse bodies over `max_body_bytes` (413) and mark every response `no-store`.

    `no-store` matters: the client's HTTP cache would otherwise replay stale answers.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body larger than {self.max_body_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await error_body(PayloadTooLarge.status, message)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            """Bodies without a Content-Length are counted as they arrive (the route answers 413)."""
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.max_body_bytes:
                raise PayloadTooLarge(message)
            return event

        async def marking_send(event: Message) -> None:
            if event["type"] == "http.response.start":
                headers = [(k, v) for k, v in event.get("headers", []) if k.lower() != b"cache-control"]
                event = {**event, "headers": headers + [(b"cache-control", b"no-store")]}
            await send(event)

        await self.app(scope, counting_receive, marking_send)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_body(error.status, error.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = f"{request.url.path}: not found" if error.status_code == 404 else str(error.detail)
        return error_body(error.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_body(400, _validation_message(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_body(500, f"internal error: {type(error).__name__}: {error}")


def create_app(store: Store, slides: SlideLibrary, files_dir: Path,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> ASGIApp:
    """The server over `store` and `slides`, keeping attached files in `files_dir`."""
    app = FastAPI(title="cyseg Cytomine-compatible test server", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.store = store
    app.state.slides = slides
    app.state.files_dir = files_dir
    _install_error_handlers(app)

    api = APIRouter(prefix="/api", dependencies=[Depends(authenticated)])
    for module in (users, projects, images, tiles, annotations, processing, meta):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(page.router)
    appengine.install(app, files_dir.parent / "app-engine")  # the local App Engine (task runs)

    @app.get("/server/ping", include_in_schema=False)
    @app.get("/server/ping.json", include_in_schema=False)
    def ping() -> dict[str, bool]:
        """Liveness, unauthenticated: the client calls it before anything else."""
        return {"alive": True}

    return Limits(app, max_body_bytes)
