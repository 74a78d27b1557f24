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

from terraseg.errors import TerrasegError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client error: HTTP status and one sentence.

    Args:
        status: HTTP status code (4xx). message: the sentence sent as ``{"error": message}``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


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


def install_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``.

    Args:
        app: the FastAPI app.
    """

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

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


__all__ = ["ApiError", "fail", "install_handlers", "user_error"]
