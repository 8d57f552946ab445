"""The Vonage driver: JSON webhooks signed with an HS256 JWT, the fake Messages API.

Wire format: the inbound and status bodies are tests/fake_vonage.py's builders (the Messages
API v1 webhooks; checked against the captured bodies in tests/data/providers/vonage/, from
Vonage's Java SDK tests and its status-callback page); numbers go without "+". The signature
is `Authorization: Bearer` a JWT signed with the signature secret whose payload_hash is the
body's SHA-256. Vonage does not classify keywords on the Messages API: its opt-out signal is
the status webhook refusing a text to a number that opted out (`rejected`, with an error
naming the opt-out), and a send to such a number is accepted first (202).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from tests.contract.driver import Driver, Sent, Webhook, from_wire, wire_number
from tests.fake_vonage import APPLICATION_ID, FakeVonage, VonageKeys, body_of, inbound_payload, status_payload

OTHER_SECRET = "bm90LXRoZS1hcHBsaWNhdGlvbi1zaWduYXR1cmUtc2VjcmV0"  # a signature secret not the account's

# Neutral delivery status → the status webhook's `status`; the Messages API reports no
# "queued" (a 202 answer is the acceptance).
STATUSES: dict[str, str | None] = {"queued": None, "sent": "submitted", "delivered": "delivered",
                                   "undelivered": "undeliverable", "failed": "rejected"}


class VonageDriver(Driver):
    """The Vonage Messages API against tests.fake_vonage.FakeVonage."""

    name: ClassVar[str] = "vonage"
    sender: ClassVar[str] = "+18445550104"
    wire_format: ClassVar[tuple[str, ...]] = (
        "https://developer.vonage.com/en/api/messages",
        "https://developer.vonage.com/en/messages/concepts/messages-status-callbacks",
        "https://developer.vonage.com/en/getting-started/concepts/webhooks#signed-webhooks",
        "https://developer.vonage.com/en/opt-out-assist/guides/messaging-opted-out-numbers",
        "tests/data/providers/vonage/",
        "tests/fake_vonage.py",
    )
    inbound_path: ClassVar[str] = "/webhooks/vonage"
    status_path: ClassVar[str] = "/webhooks/vonage/status"
    signature_headers: ClassVar[tuple[str, ...]] = ("authorization",)

    def __init__(self) -> None:
        self.keys = VonageKeys()
        self.fake = FakeVonage(self.keys)

    def start(self) -> None:
        self.fake.start()

    def close(self) -> None:
        self.fake.close()

    def settings(self) -> dict[str, str]:
        return {"VONAGE_APPLICATION_ID": APPLICATION_ID, "VONAGE_PRIVATE_KEY": self.keys.private_pem,
                "VONAGE_SIGNATURE_SECRET": self.keys.signature_secret, "OPTLINE_VONAGE_API_URL": self.fake.url}

    def _post(self, path: str, body: bytes, secret: str | None = None, message_id: str | None = None) -> Webhook:
        return Webhook(path, self.keys.webhook_headers(body, secret=secret), body, message_id)

    def inbound(self, phone: str, to: str, body: str) -> Webhook:
        payload = inbound_payload(to=wire_number(to), text=body, **{"from": wire_number(phone)})
        return self._post(self.inbound_path, body_of(payload), message_id=payload["message_uuid"])

    def _report(self, sent: Sent, status: str, **extra: Any) -> Webhook:
        payload = status_payload(sent.message_id, status, to=wire_number(sent.to), **{"from": wire_number(sent.from_ or "")},
                                 **extra)
        return self._post(self.status_path, body_of(payload))

    def status(self, sent: Sent, neutral: str) -> Webhook | None:
        status = STATUSES[neutral]
        return None if status is None else self._report(sent, status)

    def opt_out_report(self, sent: Sent) -> Webhook:
        # As tests/data/providers/vonage/status_rejected_opted_out.json.
        return self._report(sent, "rejected", error={
            "type": "https://developer.nexmo.com/api-errors/messages-olympus", "title": "Rejected",
            "detail": "The recipient has opted out of receiving messages from this sender.",
            "instance": "bf0ca0bf927b3b52e3cb03217e1a1ddf"})

    def refuse_next_send(self, phone: str) -> bool:
        return False  # accepted (202), then refused in the status webhook (opt_out_report)

    def forge(self, webhook: Webhook) -> Webhook:
        return self._post(webhook.path, webhook.body, OTHER_SECRET, webhook.message_id)

    def malformed(self, phone: str, to: str) -> Webhook:
        payload = inbound_payload(to=wire_number(to), text="JOIN", message_uuid=None, **{"from": wire_number(phone)})
        return self._post(self.inbound_path, json.dumps(payload).encode())

    def sent(self) -> list[Sent]:
        return [Sent(to=from_wire(m.to), from_=from_wire(m.from_), text=m.text, status_callback=m.webhook_url,
                     message_id=m.message_uuid) for m in self.fake.messages()]
