"""The Telnyx driver: JSON events signed with Ed25519, the fake API v2.

Wire format: the event envelope and the message payloads are tests/fake_telnyx.py's
builders, shaped as the published examples captured in tests/data/providers/telnyx/
(inboundMessage, deliveryUpdate, message.finalized); the signature is Ed25519 over
"{telnyx-timestamp}|{body}" with a key pair made per test. A phone's opt-out is Telnyx's
own classification of an inbound keyword (`autoresponse_type`, "Track opt-out behavior via
webhooks"), a send to it is refused at the API with 40300 "Blocked due to STOP message",
and a report carrying 40300 says the same.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from tests.contract.driver import Driver, Sent, Webhook
from tests.fake_telnyx import API_KEY, FakeTelnyx, TelnyxKeys, event, inbound_payload, status_payload

ERROR_BLOCKED_BY_STOP = 40300

# Neutral delivery status → (event type, to[0].status). message.sent carries the first steps
# (the published deliveryUpdate example is a message.sent at "queued"); message.finalized the end.
STATUSES = {
    "queued": ("message.sent", "queued"),
    "sent": ("message.sent", "sent"),
    "delivered": ("message.finalized", "delivered"),
    "undelivered": ("message.finalized", "delivery_failed"),
    "failed": ("message.finalized", "sending_failed"),
}


class TelnyxDriver(Driver):
    """Telnyx Messaging (API v2) against tests.fake_telnyx.FakeTelnyx."""

    name: ClassVar[str] = "telnyx"
    sender: ClassVar[str] = "+18445550102"
    wire_format: ClassVar[tuple[str, ...]] = (
        "https://developers.telnyx.com/api-reference/callbacks/inbound-message",
        "https://developers.telnyx.com/api-reference/callbacks/delivery-update",
        "https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks",
        "https://developers.telnyx.com/docs/messaging/messages/advanced-opt-in-out",
        "https://developers.telnyx.com/api/errors/40300",
        "tests/data/providers/telnyx/",
        "tests/fake_telnyx.py",
    )
    inbound_path: ClassVar[str] = "/webhooks/telnyx"
    status_path: ClassVar[str] = "/webhooks/telnyx/status"
    signature_headers: ClassVar[tuple[str, ...]] = ("telnyx-signature-ed25519", "telnyx-timestamp")

    def __init__(self) -> None:
        self.keys = TelnyxKeys()
        self.fake = FakeTelnyx()

    def start(self) -> None:
        self.fake.start()

    def close(self) -> None:
        self.fake.close()

    def settings(self) -> dict[str, str]:
        return {"TELNYX_API_KEY": API_KEY, "TELNYX_PUBLIC_KEY": self.keys.public_key,
                "OPTLINE_TELNYX_API_URL": self.fake.url}

    def _post(self, path: str, body: bytes, keys: TelnyxKeys | None = None, message_id: str | None = None) -> Webhook:
        return Webhook(path, (keys or self.keys).headers(body), body, message_id)

    def inbound(self, phone: str, to: str, body: str, **extra: Any) -> Webhook:
        payload = inbound_payload(text=body, from_=phone, to=to, **extra)
        return self._post(self.inbound_path, event("message.received", payload), message_id=payload["id"])

    def _report(self, sent: Sent, event_type: str, status: str, errors: list[dict[str, Any]] | None = None) -> Webhook:
        payload = status_payload(sent.message_id, status, to=sent.to, errors=errors)
        payload["from"]["phone_number"] = sent.from_
        payload["text"] = sent.text
        return self._post(self.status_path, event(event_type, payload))

    def status(self, sent: Sent, neutral: str) -> Webhook | None:
        return self._report(sent, *STATUSES[neutral])

    def opt_out_report(self, sent: Sent) -> Webhook:
        # As tests/data/providers/telnyx/finalized_blocked_40300.json.
        error = {"code": str(ERROR_BLOCKED_BY_STOP), "title": "Blocked due to STOP message",
                 "detail": f"Messages cannot be sent from '{sent.from_}' to '{sent.to}' due to an existing block rule."}
        return self._report(sent, "message.finalized", "sending_failed", [error])

    def opt_out_signal(self, phone: str, to: str, last: Sent) -> Webhook:
        # As tests/data/providers/telnyx/inbound_stop_autoresponse.json.
        return self.inbound(phone, to, "STOP", autoresponse_type="STOP")

    def refuse_next_send(self, phone: str) -> bool:
        self.fake.fail(ERROR_BLOCKED_BY_STOP, to=phone)
        return True

    def forge(self, webhook: Webhook) -> Webhook:
        return self._post(webhook.path, webhook.body, TelnyxKeys(), webhook.message_id)

    def malformed(self, phone: str, to: str) -> Webhook:
        payload = inbound_payload(text="JOIN", from_=phone, to=to)
        del payload["from"]
        return self._post(self.inbound_path, json.dumps({"data": {"event_type": "message.received",
                                                                  "payload": payload}}).encode())

    def sent(self) -> list[Sent]:
        return [Sent(to=m.to, from_=m.from_ or m.profile_id, text=m.text, status_callback=m.webhook_url,
                     message_id=m.id) for m in self.fake.messages()]
