"""The Twilio driver: form-encoded webhooks signed with X-Twilio-Signature, the fake REST API.

Wire format: the inbound and status-callback forms are tests/fake_twilio.py's builders
(every field Twilio posts, in its order: https://www.twilio.com/docs/messaging/guides/webhook-request,
https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks);
the signature is the official `twilio` package's RequestValidator
(https://www.twilio.com/docs/usage/security#validating-requests). Its own opt-out signal is
`OptOutType=STOP` on an inbound text, which Advanced Opt-Out adds
(https://www.twilio.com/docs/messaging/tutorials/advanced-opt-out); a send to a phone that
texted STOP is refused with error 21610 (https://www.twilio.com/docs/api/errors/21610), at
the API or, through a Messaging Service, in the `failed` status callback.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import parse_qsl, urlencode

from tests.contract.driver import Driver, Sent, Webhook
from tests.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilio,
    sign_twilio,
    twilio_inbound_params,
    twilio_status_params,
)

ERROR_UNSUBSCRIBED = 21610
OTHER_TOKEN = "0" * 32  # an auth token that is not the account's

# Neutral delivery status → Twilio's MessageStatus (the same words).
STATUSES = {"queued": "queued", "sent": "sent", "delivered": "delivered", "undelivered": "undelivered",
            "failed": "failed"}


class TwilioDriver(Driver):
    """Twilio Programmable Messaging against tests.fake_twilio.FakeTwilio."""

    name: ClassVar[str] = "twilio"
    sender: ClassVar[str] = "+18445550101"
    wire_format: ClassVar[tuple[str, ...]] = (
        "https://www.twilio.com/docs/messaging/guides/webhook-request",
        "https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks",
        "https://www.twilio.com/docs/usage/security#validating-requests",
        "https://www.twilio.com/docs/messaging/tutorials/advanced-opt-out",
        "https://www.twilio.com/docs/api/errors/21610",
        "tests/fake_twilio.py",
    )
    inbound_path: ClassVar[str] = "/webhooks/twilio"
    status_path: ClassVar[str] = "/webhooks/twilio/status"
    signature_headers: ClassVar[tuple[str, ...]] = ("x-twilio-signature",)
    acknowledgements: ClassVar[tuple[bytes, ...]] = (b'<?xml version="1.0" encoding="UTF-8"?><Response/>',)  # empty TwiML

    def __init__(self) -> None:
        self.fake = FakeTwilio()

    def start(self) -> None:
        self.fake.start()

    def close(self) -> None:
        self.fake.close()

    def settings(self) -> dict[str, str]:
        return {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "OPTLINE_TWILIO_API_URL": self.fake.url}

    def _post(self, path: str, params: dict[str, str], token: str = AUTH_TOKEN) -> Webhook:
        headers = {"x-twilio-signature": sign_twilio(self.url(path), params, auth_token=token),
                   "content-type": "application/x-www-form-urlencoded"}
        return Webhook(path, headers, urlencode(params).encode(), params.get("MessageSid"))

    def inbound(self, phone: str, to: str, body: str) -> Webhook:
        return self._post(self.inbound_path, twilio_inbound_params(Body=body, From=phone, To=to))

    def status(self, sent: Sent, neutral: str) -> Webhook | None:
        return self._post(self.status_path, twilio_status_params(
            sent.message_id, STATUSES[neutral], To=sent.to, From=sent.from_))

    def opt_out_report(self, sent: Sent) -> Webhook:
        return self._post(self.status_path, twilio_status_params(
            sent.message_id, "failed", To=sent.to, From=sent.from_, ErrorCode=str(ERROR_UNSUBSCRIBED)))

    def opt_out_signal(self, phone: str, to: str, last: Sent) -> Webhook:
        return self._post(self.inbound_path, twilio_inbound_params(Body="STOP", From=phone, To=to, OptOutType="STOP"))

    def refuse_next_send(self, phone: str) -> bool:
        self.fake.fail(ERROR_UNSUBSCRIBED, to=phone)
        return True

    def forge(self, webhook: Webhook) -> Webhook:
        return self._post(webhook.path, dict(parse_qsl(webhook.body.decode(), keep_blank_values=True)), OTHER_TOKEN)

    def malformed(self, phone: str, to: str) -> Webhook:
        # A From that is neither a phone number nor a channel address.
        return self._post(self.inbound_path, twilio_inbound_params(Body="JOIN", From="not-a-number", To=to))

    def sent(self) -> list[Sent]:
        return [Sent(to=m.to, from_=m.from_ or m.service_id, text=m.body, status_callback=m.status_callback,
                     message_id=m.sid) for m in self.fake.messages()]
