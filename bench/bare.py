"""The yardstick: a bare Starlette endpoint that parses the same form and answers the same TwiML."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def webhook(request: Request) -> Response:
    await request.form()
    return Response(EMPTY_TWIML, media_type="text/xml")


app = Starlette(routes=[Route("/webhooks/twilio", webhook, methods=["POST"])])
