"""The Plivo driver: form callbacks signed with X-Plivo-Signature-V3, the fake Message API.

Wire format: the inbound and status-callback forms are tests/fake_plivo.py's builders (the
attributes of Plivo's "handling incoming" and "message status callbacks" pages, checked
against the captured callbacks in tests/data/providers/plivo/); numbers go without "+".
The signature is HMAC-SHA256 of URL, sorted parameters and nonce keyed by the Auth Token,
rebuilt by tests/fake_plivo.sign_plivo independently of the SDK the adapter checks with.
A phone's opt-out is Plivo's own classification of an inbound keyword (`MessageIntent=optout`);
a later send to it is accepted, then reported `failed` with error 200 by the DND service.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar
from urllib.parse import parse_qsl

from tests.contract.driver import Driver, Sent, Webhook, from_wire, wire_number
from tests.fake_plivo import AUTH_ID, AUTH_TOKEN, FakePlivo, form_body, inbound_pairs, signed_headers, status_pairs

ERROR_BLOCKED_BY_STOP = 200  # the DND service's code for a recipient who texted STOP
OTHER_TOKEN = "bm90LXRoZS1hY2NvdW50LXRva2VuLTAxMjM0NQ"  # an Auth Token that is not the account's

# Neutral delivery status → Plivo's Status (the same words).
STATUSES = {"queued": "queued", "sent": "sent", "delivered": "delivered", "undelivered": "undelivered",
            "failed": "failed"}


class PlivoDriver(Driver):
    """Plivo Messaging against tests.fake_plivo.FakePlivo."""

    name: ClassVar[str] = "plivo"
    sender: ClassVar[str] = "+18445550103"
    wire_format: ClassVar[tuple[str, ...]] = (
        "https://plivo.com/docs/messaging/api/message/handling-incoming",
        "https://plivo.com/docs/messaging/api/message/message-status-callbacks",
        "https://docs.plivo.com/docs/voice/xml/request/validation",
        "https://docs.plivo.com/docs/messaging/concepts/dnd-service/",
        "tests/data/providers/plivo/",
        "tests/fake_plivo.py",
    )
    inbound_path: ClassVar[str] = "/webhooks/plivo"
    status_path: ClassVar[str] = "/webhooks/plivo/status"
    signature_headers: ClassVar[tuple[str, ...]] = ("x-plivo-signature-v3", "x-plivo-signature-v3-nonce")

    def __init__(self) -> None:
        self.fake = FakePlivo()

    def start(self) -> None:
        self.fake.start()

    def close(self) -> None:
        self.fake.close()

    def settings(self) -> dict[str, str]:
        return {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": AUTH_TOKEN, "OPTLINE_PLIVO_API_URL": self.fake.url}

    def _post(self, path: str, pairs: Iterable[tuple[str, str]], token: str = AUTH_TOKEN) -> Webhook:
        pairs = list(pairs)
        return Webhook(path, signed_headers(self.url(path), pairs, token), form_body(pairs),
                       dict(pairs).get("MessageUUID") if path == self.inbound_path else None)

    def inbound(self, phone: str, to: str, body: str) -> Webhook:
        return self._post(self.inbound_path, inbound_pairs(From=wire_number(phone), To=wire_number(to), Text=body))

    def _report(self, sent: Sent, status: str, error_code: str = "") -> Webhook:
        return self._post(self.status_path, status_pairs(sent.message_id, status, To=wire_number(sent.to),
                                                         From=wire_number(sent.from_ or ""), ErrorCode=error_code))

    def status(self, sent: Sent, neutral: str) -> Webhook | None:
        return self._report(sent, STATUSES[neutral])

    def opt_out_report(self, sent: Sent) -> Webhook:
        # As tests/data/providers/plivo/status_failed_dnd_200.txt.
        return self._report(sent, "failed", str(ERROR_BLOCKED_BY_STOP))

    def opt_out_signal(self, phone: str, to: str, last: Sent) -> Webhook:
        # As tests/data/providers/plivo/inbound_stop_intent.txt.
        return self._post(self.inbound_path, inbound_pairs(From=wire_number(phone), To=wire_number(to), Text="STOP",
                                                           MessageIntent="optout"))

    def refuse_next_send(self, phone: str) -> bool:
        return False  # Plivo accepts the send and reports it failed with error 200 (opt_out_report)

    def forge(self, webhook: Webhook) -> Webhook:
        return self._post(webhook.path, parse_qsl(webhook.body.decode(), keep_blank_values=True), OTHER_TOKEN)

    def malformed(self, phone: str, to: str) -> Webhook:
        return self._post(self.inbound_path, inbound_pairs(From=wire_number(phone), To=wire_number(to), Text="JOIN",
                                                           MessageUUID=None))

    def sent(self) -> list[Sent]:
        return [Sent(to=from_wire(m.dst), from_=from_wire(m.src) if m.src else m.powerpack_uuid, text=m.text,
                     status_callback=m.url, message_id=m.uuid) for m in self.fake.messages()]
