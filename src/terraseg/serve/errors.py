"""Errors of the web service, mapped to HTTP in one place.

Every client error is an :class:`ApiError` (status + one sentence); :func:`install_handlers` turns
it, a request-validation failure, a :class:`terraseg.errors.TerrasegError` from the core (a bad
upload: 422) and any unexpected exception (500, logged, the worker stays up) into a JSON body
``{"error": "..."}``.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from terraseg.errors import TerrasegError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client error: HTTP status and one sentence.

    Args:
        status: HTTP status code (4xx).
        message: the sentence sent as ``{"error": message}``.
        headers: extra response headers (e.g. Retry-After).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class ServerBusy(Exception):
    """Too many requests are queued for a model (answered 503 with Retry-After).

    Args:
        name: the model.
        pending: requests waiting or running.
        retry_after: seconds to wait.
    """

    def __init__(self, name: str, pending: int, retry_after: int) -> None:
        super().__init__(f"model '{name}' has {pending} requests queued; retry in {retry_after} s.")
        self.retry_after = retry_after


def fail(status: int, message: str) -> NoReturn:
    """Raise :class:`ApiError` (``status``, ``message``).

    Args:
        status: HTTP status (4xx).
        message: one sentence for the client.

    Raises:
        ApiError: always.
    """
    raise ApiError(status, message)


def user_error(e: TerrasegError, path: object, name: str) -> NoReturn:
    """Raise a 422 for a core error about an upload, naming the client's file instead of the server's temp path.

    Args:
        e: the core's error.
        path: the server-side file it names.
        name: the client's file name.

    Raises:
        ApiError: 422 with the message.
    """
    raise ApiError(422, str(e).replace(str(path), f"'{name}'"))


# every status the API answers, for the OpenAPI schema of each route
ERROR = {"content": {"application/json": {"example": {"error": "one sentence naming the problem."}}}}
RESPONSES: dict[int | str, dict] = {
    400: {"description": "Bad request (a file name with a path, an empty file).", **ERROR},
    401: {"description": "Missing or wrong X-API-Key (when the server has a key).", **ERROR},
    404: {"description": "Unknown model or result.", **ERROR},
    413: {"description": "Upload over the size, pixel or time limit.", **ERROR},
    415: {"description": "Not a supported image type.", **ERROR},
    422: {"description": "An input the model cannot take, or invalid parameters.", **ERROR},
    429: {"description": "Too many wrong API keys from this client (Retry-After).", **ERROR},
    500: {"description": "Unexpected server error (logged); the request was not processed.", **ERROR},
    503: {"description": "Too many requests queued for the model (Retry-After).", **ERROR},
}


def install_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``.

    Args:
        app: the FastAPI app.
    """

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:  # 404 / 405 of unknown routes: same shape
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(ServerBusy)
    async def _busy(_: Request, e: ServerBusy) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=503, headers={"Retry-After": str(e.retry_after)})

    @app.exception_handler(TerrasegError)
    async def _core_error(_: Request, e: TerrasegError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in err['loc'][1:]) or err['loc'][0]}: {err['msg']}" for err in e.errors()]
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:  # never a bare 500 page or a dead worker
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error ({type(e).__name__}); the request was not processed."}, status_code=500)


__all__ = ["ApiError", "RESPONSES", "ServerBusy", "fail", "install_handlers", "user_error"]
