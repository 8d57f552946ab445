"""The brand API's profile routes (/v1/profiles): thin handlers over app.profiles."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import profiles
from app.db import Job
from app.errors import InvalidInput, NotFound, Unprocessable
from app.events import iso
from app.phone import to_e164
from app.profiles import BatchResult, Changes, ProfileRow
from app.schemas import ProfileBatchIn, field_errors
from app.subscriptions import Status
from app.web.api import (
    _state,
    api_key,
    aware_time,
    bad_cursor,
    decode_cursor,
    encode_cursor,
    json_body,
    page_params,
    query_text,
)
from app.web.problems import problem

MAX_BODY = 1024 * 1024
MAX_BATCH_BODY = 5 * 1024 * 1024
# A batch goes to the writer in slices, so a 1000-item batch never holds the write
# connection long enough to delay a STOP arriving meanwhile: a slice of 250 is a job of
# about 7 ms (creates; 4 ms for updates) on SQLite, and each slice costs a commit.
BATCH_SLICE = 250
PARSE_SLICE = 100  # items validated between two turns of the event loop: ~5 ms with unseen numbers


def _region(request: Request, brand: str) -> str | None:
    found = _state(request).rules.brands.get(brand)
    return found.default_region if found is not None else None


# RFC 3339 in UTC with a Z, as pydantic writes ProfileOut's datetimes; cached, because the
# profiles one batch slice writes share their timestamps and isoformat costs ten lookups.
_utc = functools.lru_cache(maxsize=4096)(iso)


def profile_json(row: ProfileRow) -> dict[str, Any]:
    """A profile as the API shows it (ProfileOut's JSON).

    Built by hand: a ProfileOut validated and dumped per profile cost ~6 µs, a tenth of a
    1000-item batch. tests/test_api_profiles.py checks that both say the same.
    """
    return {
        "id": row.id, "externalId": row.external_id, "phoneNumber": row.phone, "email": row.email,
        "firstName": row.first_name, "lastName": row.last_name, "timezone": row.timezone,
        "attributes": row.attributes, "createdAt": _utc(row.created_at), "updatedAt": _utc(row.updated_at),
    }


def _problem_body(exc: InvalidInput) -> dict[str, Any]:
    # Through the one translator, so a batch item's error reads exactly like a lone request's.
    return json.loads(problem(exc.status, exc.message, errors=exc.errors).body)  # type: ignore[no-any-return]


def _result_json(result: BatchResult) -> dict[str, Any]:
    item: dict[str, Any] = {"index": result.index, "status": result.status}
    if result.profile is not None:
        item["profile"] = profile_json(result.profile)
    if result.error is not None:
        item["error"] = _problem_body(result.error)
    return item


def _profile_cursor(raw: str, request: Request) -> tuple[datetime, str]:
    position = decode_cursor(raw, _state(request).settings)
    if not (isinstance(position, list) and len(position) == 2 and all(isinstance(p, str) for p in position)):
        raise bad_cursor()  # signed, but another route's
    try:
        return aware_time(position[0], "cursor"), position[1]
    except InvalidInput:
        raise bad_cursor() from None


def _ref(request: Request) -> str:
    """The {ref} path parameter; 404 for one that holds NUL, which no stored id or externalId can."""
    ref: str = request.path_params["ref"]
    if "\x00" in ref:
        raise NotFound(f"no profile {ref!r}")
    return ref


def _batch_job(brand: str, piece: list[Changes | InvalidInput], region: str | None, start: int) -> Job[list[BatchResult]]:
    def job(conn: Connection, now: datetime) -> list[BatchResult]:
        return profiles.batch(conn, now, brand=brand, items=piece, region=region, start=start)

    return job


async def upsert_profile(request: Request) -> Response:
    """POST /v1/profiles: create (201) or update (200) the profile the body matches."""
    key = api_key(request)
    region = _region(request, key.brand)
    changes = profiles.parse(await json_body(request, limit=MAX_BODY), region=region)
    profiles.require_identifier(changes)
    row, created = await _state(request).writer.run(
        lambda conn, now: profiles.upsert(conn, now, brand=key.brand, data=changes, region=region),
        locks=changes.locks(key.brand),
    )
    headers = {"Location": f"/v1/profiles/{row.id}"} if created else None
    return JSONResponse(profile_json(row), status_code=201 if created else 200, headers=headers)


async def list_profiles(request: Request) -> Response:
    """GET /v1/profiles: cursor pages by last change; filters updatedSince, program, status."""
    key = api_key(request)
    limit, raw_cursor = page_params(request)
    cursor = _profile_cursor(raw_cursor, request) if raw_cursor is not None else None
    params = request.query_params
    since = aware_time(params["updatedSince"], "updatedSince") if "updatedSince" in params else None
    program = query_text(request, "program")
    brand = _state(request).rules.brands.get(key.brand)
    if program is not None and (brand is None or program not in brand.programs):
        raise InvalidInput(f"program {program!r} is not one of this brand's programs", field="program")
    status = params.get("status")
    if status is not None and status not in {s.value for s in Status}:
        raise InvalidInput("status must be one of none, pendingDOI, subscribed, unsubscribed", field="status")

    def run(conn: Connection) -> tuple[list[ProfileRow], bool]:
        return profiles.list_page(
            conn, brand=key.brand, limit=limit, cursor=cursor, updated_since=since, program=program, status=status,
        )

    rows, more = await _state(request).read(run)
    last = rows[-1] if rows else None
    next_cursor = (encode_cursor([last.updated_at.isoformat(), last.id], _state(request).settings)
                   if more and last else None)
    return JSONResponse({"items": [profile_json(r) for r in rows], "nextCursor": next_cursor})


async def batch_profiles(request: Request) -> Response:
    """POST /v1/profiles/batch: up to 1000 upserts (a bare array or `{"items": [...]}`), one result per item."""
    key = api_key(request)
    region = _region(request, key.brand)
    # Each item checks its own strings and nesting (ProfileIn), so a NUL fails only its item.
    body = await json_body(request, limit=MAX_BATCH_BODY, walk=False)
    if isinstance(body, list):
        body = {"items": body}  # Synerise posts the bare array; Noticia-style clients wrap it in items
    try:
        envelope = ProfileBatchIn.model_validate(body)
    except ValidationError as exc:
        raise Unprocessable("the batch is not valid", errors=field_errors(exc)) from None
    items: list[Any] = envelope.items
    # Validating 1000 items is CPU work (~50 µs an unseen phone number): done on the loop in
    # slices, with other requests let in between. On a thread it competed with the loop for
    # the GIL, and each time the loop let go of it (a socket write, an sqlite3 call) it waited
    # out the switch interval: a fifth fewer batches a second, and erratic.
    parsed: list[Changes | InvalidInput] = []
    for start in range(0, len(items), PARSE_SLICE):
        parsed += profiles.parse_items(items[start:start + PARSE_SLICE], region=region)
        await asyncio.sleep(0)
    writer = _state(request).writer
    results: list[BatchResult] = []
    for start in range(0, len(parsed), BATCH_SLICE):
        piece = parsed[start:start + BATCH_SLICE]
        locks = {k for item in piece if isinstance(item, Changes) for k in item.locks(key.brand)}
        results += await writer.run(_batch_job(key.brand, piece, region, start), locks=locks)
    return JSONResponse({"items": [_result_json(r) for r in results]})


async def get_profile(request: Request) -> Response:
    """GET /v1/profiles/{ref}: by `prof_` id or externalId."""
    key = api_key(request)
    ref = _ref(request)
    row = await _state(request).read(lambda conn: profiles.get(conn, brand=key.brand, ref=ref))
    return JSONResponse(profile_json(row))


async def get_profile_by_phone(request: Request) -> Response:
    """GET /v1/profiles/by-phone/{phone}: by phone number (the brand's default region applies)."""
    key = api_key(request)
    try:
        phone = to_e164(request.path_params["phone"], _region(request, key.brand))
    except InvalidInput as exc:
        raise Unprocessable(exc.message, field="phoneNumber") from None
    row = await _state(request).read(lambda conn: profiles.get_by_phone(conn, brand=key.brand, phone=phone))
    return JSONResponse(profile_json(row))


async def get_profile_by_email(request: Request) -> Response:
    """GET /v1/profiles/by-email/{email}: by email address (case does not matter)."""
    key = api_key(request)
    try:
        email = profiles.normalize_email(request.path_params["email"])
    except ValueError as exc:
        raise Unprocessable(str(exc), field="email") from None
    row = await _state(request).read(lambda conn: profiles.get_by_email(conn, brand=key.brand, email=email))
    return JSONResponse(profile_json(row))


async def patch_profile(request: Request) -> Response:
    """PATCH /v1/profiles/{ref}: change only the fields sent."""
    key = api_key(request)
    ref = _ref(request)
    region = _region(request, key.brand)
    changes = profiles.parse(await json_body(request, limit=MAX_BODY), region=region)
    row = await _state(request).writer.run(
        lambda conn, now: profiles.patch(conn, now, brand=key.brand, ref=ref, data=changes, region=region),
        locks=changes.locks(key.brand),
    )
    return JSONResponse(profile_json(row))


async def delete_profile(request: Request) -> Response:
    """DELETE /v1/profiles/{ref}: erase the personal data; subscriptions and consent events stay."""
    key = api_key(request)
    ref = _ref(request)
    state = _state(request)
    # Lock the profile's phone so the erasure serialises with SMS work on that number.
    phone = await state.read(lambda conn: profiles.phone_of(conn, brand=key.brand, ref=ref))
    await state.writer.run(
        lambda conn, now: profiles.delete(conn, now, brand=key.brand, ref=ref), locks=[phone] if phone else [],
    )
    return Response(status_code=204)


# Order matters: the fixed paths come before /{ref}, which takes any rest of the path
# (an externalId may contain a slash).
routes: list[Route] = [
    Route("/v1/profiles", upsert_profile, methods=["POST"]),
    Route("/v1/profiles", list_profiles, methods=["GET"]),
    Route("/v1/profiles/batch", batch_profiles, methods=["POST"]),
    Route("/v1/profiles/by-phone/{phone}", get_profile_by_phone, methods=["GET"]),
    Route("/v1/profiles/by-email/{email}", get_profile_by_email, methods=["GET"]),
    Route("/v1/profiles/{ref:path}", get_profile, methods=["GET"]),
    Route("/v1/profiles/{ref:path}", patch_profile, methods=["PATCH"]),
    Route("/v1/profiles/{ref:path}", delete_profile, methods=["DELETE"]),
]

__all__ = ["profile_json", "routes"]
