"""The brand API's proof side: a phone's evidence pack, erasure, the ledger's checkpoints."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.erasure import erase
from app.errors import InvalidInput, Unprocessable
from app.evidence import evidence
from app.ledger import latest_checkpoint, list_checkpoints
from app.phone import to_e164
from app.proof import seal_forever
from app.proof_schemas import CheckpointPage, ErasureOut, EvidenceOut
from app.web.api import _state, api_key
from app.web.state import AppState

log = logging.getLogger("optline.proof")


def _phone(request: Request, region: str | None) -> str:
    try:
        return to_e164(request.path_params["phone"], region)
    except InvalidInput as exc:
        raise Unprocessable(exc.message, field="phone") from None


async def get_evidence(request: Request) -> JSONResponse:
    """GET /v1/contacts/{phone}/evidence: the phone's consent history with every proof, per program."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    phone = _phone(request, brand.default_region)
    pack = await state.read(lambda conn: evidence(conn, brand=brand.key, phone=phone, programs=list(brand.programs)))
    return JSONResponse(EvidenceOut.model_validate(pack).model_dump(mode="json"))


async def post_erase(request: Request) -> JSONResponse:
    """POST /v1/contacts/{phone}/erase: remove the phone's personal data and texts, keep its opt-outs."""
    key = api_key(request)
    state = _state(request)
    brand = state.rules.brand(key.brand)
    phone = _phone(request, brand.default_region)
    counts = await state.writer.run(partial(erase, brand=brand.key, phone=phone, api_key_id=key.id), locks=[phone])
    log.info("erased a number from brand %s: %s", brand.key, counts)
    return JSONResponse(ErasureOut(erased=True, rows=counts).model_dump(mode="json"))


async def get_checkpoints(request: Request) -> JSONResponse:
    """GET /v1/ledger/checkpoints: the ledger's checkpoints, newest first (keep their hashes outside optline)."""
    api_key(request)
    raw_before = request.query_params.get("before")
    raw_limit = request.query_params.get("limit", "100")
    # ASCII digits only: str.isdigit also says yes to "²" and "٣", which int() refuses or reads.
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4) or not 1 <= int(raw_limit) <= 1000:
        raise InvalidInput("limit must be a whole number from 1 to 1000", field="limit")
    if raw_before is not None and not (raw_before.isascii() and raw_before.isdigit() and len(raw_before) <= 18):
        raise InvalidInput("before must be a checkpoint id", field="before")
    before = int(raw_before) if raw_before is not None else None
    limit = int(raw_limit)
    items = await _state(request).read(lambda conn: list_checkpoints(conn, before_id=before, limit=limit + 1))
    more = len(items) > limit
    items = items[:limit]
    page = CheckpointPage.model_validate({"items": [c.json() for c in items], "nextBefore": items[-1].id if more else None})
    return JSONResponse(page.model_dump(mode="json"))


async def seal_periodically(state: AppState) -> None:
    """The serve/worker task: a checkpoint (and body retention) every OPTLINE_CHECKPOINT_SECONDS."""
    await seal_forever(state.writer, lambda: state.rules, every=state.settings.checkpoint_seconds,
                       retention_days=state.settings.body_retention_days, wake=state.wake_sender)


async def observe_checkpoint(state: AppState) -> None:
    """Set the checkpoint gauge from the newest checkpoint (for /metrics)."""
    try:
        checkpoint = await state.read(latest_checkpoint)
    except Exception:  # noqa: BLE001 - the other metrics are still worth serving
        log.warning("ledger checkpoint gauge unavailable", exc_info=True)
        return
    gauge: Any = state.metrics.ledger_checkpoint
    gauge.clear()
    if checkpoint is not None:
        gauge.labels(hash=checkpoint.hash).set(checkpoint.id)


routes = [
    Route("/v1/contacts/{phone}/evidence", get_evidence, methods=["GET"]),
    Route("/v1/contacts/{phone}/erase", post_erase, methods=["POST"]),
    Route("/v1/ledger/checkpoints", get_checkpoints, methods=["GET"]),
]
