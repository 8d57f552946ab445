"""What the dialects share: reading the vendor's way of passing a key, time formats, and the
vendor-only fields a profile keeps in its attributes under a `vendor:` prefix.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.requests import Request

from app.auth import ApiKeyInfo
from app.errors import InvalidInput, NotFound, Unauthorized, Unprocessable
from app.keywords import Brand
from app.models import profiles
from app.phone import to_e164
from app.profiles import ProfileRow

# Attributes whose name starts with one of these hold a vendor's own profile fields (Sonar's
# picture_url, Synerise's uuid): kept, shown by that vendor's dialect, never as custom attributes.
VENDOR_PREFIXES = ("noticia:", "synerise:", "cordial:", "sonar:")


def state(request: Request) -> Any:
    """The app's shared state (app.web.state.AppState), without importing the web layer."""
    return request.app.state.optline


def authenticate(request: Request, secret: str | None, how: str) -> tuple[ApiKeyInfo, Brand]:
    """The optline API key `secret` and its brand; 401 naming `how` the vendor passes it."""
    app = state(request)
    if not secret:
        raise Unauthorized(f"missing API key: send it as {how}")
    info = app.keys.authenticate(secret)
    brand = app.rules.brands.get(info.brand)
    if brand is None:
        raise Unauthorized(f"this key's brand {info.brand!r} is not configured")
    return info, brand


def header_key(request: Request, name: str) -> str | None:
    """A key passed in its own header (Noticia's x-api-key, Sonar's X-Token)."""
    value = request.headers.get(name)
    return value.strip() if value is not None else None


def bearer_key(request: Request) -> str | None:
    """A key passed as `Authorization: Bearer <key>` (Synerise)."""
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def basic_key(request: Request) -> str | None:
    """A key passed as the user of HTTP Basic auth, the password ignored (Cordial)."""
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded.split(":", 1)[0].strip() or None


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def millis(value: datetime | None) -> str | None:
    """`2026-05-28T10:00:00.000Z` (Noticia), or None."""
    if value is None:
        return None
    when = utc(value)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def seconds_z(value: datetime | None) -> str | None:
    """`2020-07-30T11:23:51Z` (Synerise), or None."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def plus0000(value: datetime | None) -> str | None:
    """`2020-04-16T20:52:21+0000` (Cordial), or None."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%S+0000") if value is not None else None


def phone(raw: Any, brand: Brand, field: str) -> str:
    """A phone number in E.164 (the brand's default region for national numbers); 422 naming `field`."""
    if not isinstance(raw, str) or not raw.strip():
        raise Unprocessable(f"{field} must be a phone number", field=field)
    try:
        return to_e164(raw, brand.default_region)
    except InvalidInput as exc:
        raise Unprocessable(exc.message, field=field) from None


def own_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The brand's custom attributes, without any vendor's fields."""
    return {k: v for k, v in attributes.items() if not k.startswith(VENDOR_PREFIXES)}


def vendor_fields(attributes: Mapping[str, Any], vendor: str) -> dict[str, Any]:
    """One vendor's fields kept in `attributes`, by their own names."""
    prefix = f"{vendor}:"
    return {k[len(prefix):]: v for k, v in attributes.items() if k.startswith(prefix)}


def refuse_vendor_keys(attributes: Mapping[str, Any], field: str) -> None:
    """422 when custom attributes try to write a vendor's reserved names (a non-object is the model's to refuse)."""
    if not isinstance(attributes, Mapping):
        return
    for key in attributes:
        if isinstance(key, str) and key.startswith(VENDOR_PREFIXES):
            raise Unprocessable(f"attribute names starting with {key.split(':', 1)[0]}: are reserved",
                                field=f"{field}.{key}")


def find_by_vendor_field(conn: Connection, *, brand: str, vendor: str, name: str, value: str) -> ProfileRow:
    """The live profile whose vendor field `name` holds `value` (Synerise's uuid, clientId); NotFound otherwise."""
    key = f"{vendor}:{name}"
    if conn.dialect.name == "postgresql":
        held = profiles.c.attributes.op("->>")(key)
    else:
        held = sa.func.json_extract(profiles.c.attributes, f'$."{key}"')
    row = conn.execute(sa.select(profiles).where(
        profiles.c.brand == brand, profiles.c.deleted_at.is_(None), sa.cast(held, sa.String) == value,
    ).limit(1)).first()
    if row is None:
        raise NotFound(f"no profile with {name} {value}")
    return ProfileRow.of(row)


def reject_empty_strings(value: Any, path: str = "") -> None:
    """422 naming the first `""` anywhere in `value` (Synerise: "Empty strings are not accepted")."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str) and not item.strip():
            raise Unprocessable(f"{where or 'body'} must not be an empty string; send null to clear it",
                                field=where or "body")
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))


def object_body(data: Any, what: str = "body") -> dict[str, Any]:
    """`data` when it is a JSON object; 422 otherwise."""
    if not isinstance(data, dict):
        raise Unprocessable(f"{what} must be a JSON object", field=what)
    return data


def operation(method: str, path: str, summary: str, tag: str, security: str, *, ok: int = 200,
              errors: tuple[int, ...] = (400, 401, 404, 409, 413, 415, 422), body: bool = False) -> dict[str, Any]:
    """One route as app.web.openapi documents it."""
    return {"method": method, "path": path, "summary": summary, "tag": tag, "security": security, "ok": ok,
            "errors": errors, "body": body}
