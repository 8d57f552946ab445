"""The brand API's consent rules: the send check, the brand's reported sends, opt-out lists in and out.

Thin: parse, call app.sendcheck / app.suppression, render. See docs/compliance.md.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import sendcheck, suppression
from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.jsonbody import json_body, refuse_unstorable, validate
from app.schemas_rules import OptOutImportOut, OptOutOut, OptOutPage, SendCheckIn, SendsIn, SendsOut, plain_send_checks
from app.web.api import _state, api_key, aware_time, decode_cursor, encode_cursor, page_params, read_json

MAX_IMPORT_BYTES = 200 * 1024 * 1024  # a million rows of phone, time and program
IDEMPOTENT_IMPORT_BYTES = 5 * 1024 * 1024  # app.web.idempotency.MAX_BODY, less its one byte of slack


async def post_send_check(request: Request) -> JSONResponse:
    """POST /v1/send-check: may these sends go now (or at `at`), and if not, why and when."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    data = await json_body(request, walk=False)
    plain = plain_send_checks(data)
    if plain is None:  # not plainly valid: the model (after the storable walk json_body skipped) has the answer
        refuse_unstorable(data)
        plain = [(i.phone_number, i.program, i.at) for i in validate(SendCheckIn, data).items]
    now = state.clock()
    items = sendcheck.parse_items(brand, plain, now)
    results = await state.read(lambda conn: sendcheck.check(conn, now, brand=brand, items=items))
    # Built JSON-ready by the service in the SendCheckOut shape (tests/test_openapi.py checks it).
    return JSONResponse({"items": results})


async def post_sends(request: Request) -> JSONResponse:
    """POST /v1/sends: texts the brand sent itself; they count toward the program's caps."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    body = await read_json(request, SendsIn)
    now = state.clock()
    planned = sendcheck.parse_items(brand, [(i.phone_number, i.program, i.sent_at) for i in body.items], now)
    opted_out = await state.writer.run(partial(
        lambda conn, now_: sendcheck.record_sends(conn, now_, brand=brand, items=planned,
                                                  external_ids=[i.external_id for i in body.items],
                                                  api_key_id=key.id)))
    return JSONResponse(SendsOut(recorded=len(planned), opted_out=opted_out).model_dump(mode="json"))


def _kind(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type in ("application/json", "") or content_type.endswith("+json"):
        return "json"
    if content_type in ("text/csv", "application/csv"):
        return "csv"
    raise UnsupportedMediaType("send a JSON array (application/json) or a CSV file (text/csv)")


async def _limited(request: Request) -> AsyncIterator[bytes]:
    # The Idempotency-Key middleware holds a body of at most 5 MB (and would hand on a longer one
    # cut short): with a key, an import is refused past that. A re-import changes nothing, so a
    # large list needs no key.
    limit = IDEMPOTENT_IMPORT_BYTES if "idempotency-key" in request.headers else MAX_IMPORT_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes" + (" with an Idempotency-Key" if limit < MAX_IMPORT_BYTES
                                                             else ""))
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        yield chunk


async def post_opt_out_import(request: Request) -> JSONResponse:
    """POST /v1/opt-outs/import: a JSON array or CSV of opt-outs, streamed, applied in chunks."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    reader = suppression.Reader(_kind(request))
    now = state.clock()
    batch_id = await state.writer.run(partial(lambda conn, now_: suppression.start(
        conn, now_, brand=brand.key, origin="api", api_key_id=key.id)))
    tally = suppression.Tally(batch_id=batch_id)
    chunk: list[suppression.Row] = []

    async def apply(rows: list[suppression.Row]) -> None:
        applied, unchanged = await state.writer.run(
            partial(lambda conn, now_: suppression.apply_rows(conn, now_, brand=brand, rows=rows, batch_id=batch_id,
                                                              api_key_id=key.id)),
            locks=sorted({row.phone for row in rows}), timeout=120)
        tally.applied += applied
        tally.unchanged += unchanged

    async for line, record in suppression.stream_records(reader, _limited(request)):
        tally.rows += 1
        if tally.rows > suppression.MAX_ROWS:
            raise InvalidInput(f"an import holds at most {suppression.MAX_ROWS:,} rows", field="body")
        row = record if isinstance(record, suppression.Bad) else suppression.parse_record(brand, line, record, now)
        if isinstance(row, str):
            tally.reject(line, row)
            continue
        chunk.append(row)
        if len(chunk) >= suppression.CHUNK:
            await apply(chunk)
            chunk = []
    if chunk:
        await apply(chunk)
    await state.writer.run(partial(lambda conn, now_: suppression.finish(conn, now_, brand=brand, tally=tally)))
    state.wake_sender(urgent=False)
    return JSONResponse(OptOutImportOut.model_validate(tally.as_json()).model_dump(mode="json"))


async def get_opt_outs(request: Request) -> Response:
    """GET /v1/opt-outs: the brand's suppression list by time of opt-out (JSON pages, or CSV)."""
    key = api_key(request)
    state = _state(request)
    limit, cursor = page_params(request)
    raw_since = request.query_params.get("since")
    since = aware_time(raw_since, "since") if raw_since is not None else None
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidInput("format must be json or csv", field="format")
    after = None
    if cursor is not None:
        position = decode_cursor(cursor, state.settings)
        try:
            after = (datetime.fromisoformat(position[0]), str(position[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            raise InvalidInput("cursor is not valid", field="cursor") from None
    rows = await state.read(lambda conn: suppression.export_page(conn, brand=key.brand, since=since, after=after,
                                                                 limit=limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (encode_cursor([rows[-1]["opted_out_at"].isoformat(), rows[-1]["id"]], state.settings)
                   if more else None)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["phoneNumber", "program", "optedOutAt", "source"])
        for r in rows:
            writer.writerow([r["phone"], r["program"], r["opted_out_at"].isoformat(), r["source"] or ""])
        headers = {"Next-Cursor": next_cursor} if next_cursor else {}
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
    items = [OptOutOut(phone_number=r["phone"], program=r["program"], opted_out_at=r["opted_out_at"],
                       source=r["source"]) for r in rows]
    return JSONResponse(OptOutPage(items=items, next_cursor=next_cursor).model_dump(mode="json"))


routes = [
    Route("/v1/send-check", post_send_check, methods=["POST"]),
    Route("/v1/sends", post_sends, methods=["POST"]),
    Route("/v1/opt-outs/import", post_opt_out_import, methods=["POST"]),
    Route("/v1/opt-outs", get_opt_outs, methods=["GET"]),
]
