"""Reading a request's JSON body: size, media type, depth and storable strings checked before any model sees it.

Shared by the brand API (app.web) and the vendor dialects (app.dialects), which must not import the web layer.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from app.errors import InvalidInput, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from app.schemas import DEPTH_MESSAGE, MAX_JSON_DEPTH, field_errors, unstorable

M = TypeVar("M", bound=BaseModel)

MAX_JSON_BYTES = 1024 * 1024


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def json_body(request: Request, *, limit: int = MAX_JSON_BYTES, walk: bool = True) -> Any:
    """The request's JSON body: 413 over `limit` bytes, 415 not JSON, 400 unparseable or too deep.

    With `walk`, a body nested deeper than MAX_JSON_DEPTH is 400 and a string no database can
    store (NUL, a lone surrogate) is 422 naming its field; a route whose model checks both
    itself, item by item, turns it off.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType("expected application/json")
    body = bytearray()
    # Content-Length may be absent (chunked) or lie: count what actually arrives.
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidInput(f"body {DEPTH_MESSAGE}", field="body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    # Only a body with an escape (\u0000, \ud800) or enough brackets can hold what the walk looks for:
    # json.loads refuses a raw NUL in a string, and bytes that would be a lone surrogate are not UTF-8.
    if walk and (body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH or _ESCAPE.search(body)):
        refuse_unstorable(data)
    return data


def refuse_unstorable(data: Any) -> None:
    """400 when parsed JSON is nested too deep, 422 naming the first string no database can store."""
    found = unstorable(data)
    if found is not None:
        field, message = found
        if message == DEPTH_MESSAGE:
            raise InvalidInput(f"body {DEPTH_MESSAGE}", field="body")
        raise Unprocessable(f"{field or 'body'} {message}", field=field or "body")


_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF])")


async def read_json(request: Request, model: type[M], *, limit: int = MAX_JSON_BYTES) -> M:
    """The request body validated as `model` (422 naming each bad field)."""
    return validate(model, await json_body(request, limit=limit))


def validate(model: type[M], data: Any) -> M:
    """Validate `data` as `model`, turning pydantic's errors into one 422 naming every field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [(field or "body", message) for field, message in field_errors(exc)]
        raise Unprocessable(errors[0][1] if len(errors) == 1 else "request has invalid fields", errors=errors) from None


__all__ = ["MAX_JSON_BYTES", "json_body", "read_json", "refuse_unstorable", "validate"]
