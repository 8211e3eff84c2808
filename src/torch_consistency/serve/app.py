"""The ASGI app of `cm serve` (FastAPI on Starlette, run by uvicorn): the page, its static files and the JSON API.

Errors reach the client as {"error": "one line"}: 422 for a field that fails validation, 400 for a value the model
refuses (any UserInputError), 413 for a body over the limit, 503 when too many requests wait; anything else is
logged here and answered 500 without a traceback. The model runs on one worker thread, so requests queue and the
model computes one batch at a time while the event loop keeps answering.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import UserInputError
from ..model import Model
from .schemas import EditRequest, GenerateRequest
from .service import Service

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_WAITING = 32  # requests queued for the model before new ones are turned away
log = logging.getLogger("torch_consistency.serve")
Result = TypeVar("Result")


class BodyTooLarge(HTTPException):
    """Raised while a body streams in past the limit; an HTTPException so that FastAPI's body parsing lets it
    through to the 413 handler instead of turning it into a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, by its Content-Length before reading anything,
    and by counting while it streams in (chunked bodies, or a Content-Length that lies)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self.refuse(send)
            return
        received, started = 0, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if not started:
                await self.refuse(send)

    async def refuse(self, send: Send) -> None:
        error = BodyTooLarge(self.limit)
        await error_response(error.status_code, error.detail)({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b""}


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def validation_message(error: RequestValidationError) -> str:
    """The first validation error in one line: where it is (`steps`, `label`) and what is wrong."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid value')}"


class Worker:
    """One thread for the model: calls run in arrival order, one at a time; at most `max_waiting` wait."""

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.max_waiting, self.waiting = max_waiting, 0

    async def run(self, call: Callable[[], Result]) -> tuple[Result, dict[str, float]]:
        """The result of `call()` and its timing: seconds queued, and when it started and ended (perf_counter)."""
        if self.waiting >= self.max_waiting:
            raise HTTPException(503, f"the server is busy: {self.waiting} requests are waiting for the model")
        self.waiting += 1
        queued = time.perf_counter()

        def timed() -> tuple[Result, dict[str, float]]:
            started = time.perf_counter()
            result = call()
            return result, {"queue_ms": 1000 * (started - queued), "started": started, "finished": time.perf_counter()}

        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, timed)
        finally:
            self.waiting -= 1


def create_app(
    model: Model,
    *,
    data_path: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_waiting: int = MAX_WAITING,
) -> FastAPI:
    """The app serving `model` (loaded once); `data_path` overrides where the run's held-out images are read."""
    service = Service(model, data_path)
    worker = Worker(max_waiting)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.executor.shutdown(wait=True)

    app = FastAPI(title="torch-consistency", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")  # fmt: skip
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.state.service, app.state.worker = service, worker

    @app.exception_handler(RequestValidationError)
    async def invalid_field(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(error))

    @app.exception_handler(UserInputError)
    async def refused_value(request: Request, error: UserInputError) -> JSONResponse:
        return error_response(400, str(error))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(error).__name__}); the server log has the details")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/model", response_class=JSONResponse)
    async def describe() -> JSONResponse:
        """The model: method, shapes, classes, guidance range, stored σ's, edit tasks and held-out images."""
        return JSONResponse(service.info())

    @app.get("/api/held-out/{index}", response_class=JSONResponse)
    async def held_out(index: int) -> JSONResponse:
        """Held-out image `index` of the run's data (a PNG data URL) and its label."""
        return JSONResponse(await run_in_threadpool(service.held_out_image, index))

    @app.post("/api/generate", response_class=JSONResponse)
    async def generate(request: GenerateRequest) -> JSONResponse:
        """Samples as PNG data URLs, their labels, σ's, NFE, times and the settings that reproduce them."""
        result, timing = await worker.run(lambda: service.generate(request))
        return JSONResponse({**result, **timing})  # plain JSON: no response-model pass over the images

    @app.post("/api/edit", response_class=JSONResponse)
    async def edit(request: EditRequest) -> JSONResponse:
        """An edited image as a PNG data URL, with its σ's, NFE, times and the settings that reproduce it."""
        prepared = await run_in_threadpool(service.prepare_edit, request)
        result, timing = await worker.run(lambda: service.edit(prepared))
        return JSONResponse({**result, **timing})

    return app
