"""The one translator from domain errors to `application/problem+json` responses."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.errors import DatabaseUnavailable, InvalidInput, Unauthorized

log = logging.getLogger("optline.web")

PROBLEM = "application/problem+json"
_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    500: "Internal Server Error", 503: "Service Unavailable",
}


def _utf8(text: str | None) -> str | None:
    # A detail or field name may quote the client's input, and a lone surrogate in it (JSON's
    # "\ud800") has no UTF-8 form: the answer could not be written at all. Shown escaped.
    if text is None or text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def problem(status: int, detail: str, *, errors: list[tuple[str | None, str]] | None = None,
            headers: dict[str, str] | None = None, extra: dict[str, object] | None = None) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": f"https://optline.dev/problems/{status}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": _utf8(detail),
        "errors": [{"field": _utf8(f), "message": _utf8(m)} for f, m in (errors or [])],
    }
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


async def on_invalid_input(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    return problem(exc.status, exc.message, errors=exc.errors, extra=exc.extra)


async def on_unauthorized(_request: Request, exc: Exception) -> Response:
    return problem(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="optline"'})


async def on_database_unavailable(_request: Request, exc: Exception) -> Response:
    log.error("database unavailable: %s", exc)
    return problem(503, "the database is unavailable; retry later", headers={"Retry-After": "5"})


async def on_http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, exc.detail or _TITLES.get(exc.status_code, "Error"), headers=exc.headers)


async def on_unexpected(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal error")


EXCEPTION_HANDLERS = {
    InvalidInput: on_invalid_input,
    Unauthorized: on_unauthorized,
    DatabaseUnavailable: on_database_unavailable,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}
