"""What the provider contract suite needs from a provider: one `Driver` subclass per adapter.

A driver knows its provider's wire format and nothing of optline's internals. It makes the
requests the provider would post (signed the provider's way), starts the provider's fake
REST API, names the settings that point the adapter at that fake, and reads back what the
fake received, in neutral terms:

    inbound(phone, to, body)      ─▶ Webhook   a signed inbound text
    status(sent, neutral)         ─▶ Webhook   a signed delivery report ("queued" … "failed"),
                                               None when the provider has no such status
    opt_out_signal(phone, to, s)  ─▶ Webhook   the provider's own "this phone opted out"
    opt_out_report(sent)          ─▶ Webhook   a delivery report refusing `sent` with the
                                               provider's opt-out code
    refuse_next_send(phone)       ─▶ bool      script the fake: the next send to `phone` meets
                                               the provider's opt-out refusal; True when the
                                               API refuses it, False when the provider accepts
                                               it and refuses later in a report
    forge(webhook)                ─▶ Webhook   the same body, signed with a key not the account's
    malformed(phone, to)          ─▶ Webhook   correctly signed, a payload the adapter cannot read
    sent()                        ─▶ [Sent]    every text the fake accepted

Every driver cites where its wire format comes from (`wire_format`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

# Delivery statuses in neutral terms; a driver maps each to its provider's word.
NEUTRAL_STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")


@dataclass(frozen=True)
class Webhook:
    """One request as the provider posts it to optline."""

    path: str  # /webhooks/<provider>[/status]
    headers: Mapping[str, str]  # lower-case names, the signature among them
    body: bytes
    message_id: str | None = None  # the provider's id of the inbound text it carries, when it carries one


@dataclass(frozen=True)
class Sent:
    """One text the provider's fake accepted, in neutral terms."""

    to: str  # E.164
    from_: str | None  # our sender as keywords.yaml writes it (E.164 or short code); None through a service
    text: str
    status_callback: str | None  # where the provider will post delivery reports
    message_id: str  # the provider's id for it


class Driver(ABC):
    """How the contract suite speaks to one provider: its requests, its fake, its settings."""

    name: ClassVar[str]  # as in OPTLINE_PROVIDERS and /webhooks/{name}
    sender: ClassVar[str]  # our number on this provider in the suite's keywords.yaml (E.164)
    wire_format: ClassVar[tuple[str, ...]]  # where the payloads and signatures come from: docs URLs, captured files
    inbound_path: ClassVar[str]
    status_path: ClassVar[str]
    signature_headers: ClassVar[tuple[str, ...]]  # what a request without a signature lacks
    acknowledgements: ClassVar[tuple[bytes, ...]] = (b"", b"{}")  # bodies a 200 to the provider may carry
    public_url: str = ""  # OPTLINE_PUBLIC_URL: what the provider signs; set by the deployment

    @abstractmethod
    def start(self) -> None:
        """Start the provider's fake REST API."""

    @abstractmethod
    def close(self) -> None:
        """Stop the fake."""

    @abstractmethod
    def settings(self) -> dict[str, str]:
        """Environment variables (by name) that enable the adapter and point it at the fake."""

    @abstractmethod
    def inbound(self, phone: str, to: str, body: str) -> Webhook:
        """A signed inbound text from `phone` to our number `to`."""

    @abstractmethod
    def status(self, sent: Sent, neutral: str) -> Webhook | None:
        """A signed delivery report moving `sent` to `neutral`; None when the provider has no such status."""

    @abstractmethod
    def opt_out_report(self, sent: Sent) -> Webhook:
        """A signed delivery report refusing `sent` because its recipient opted out at the provider."""

    def opt_out_signal(self, phone: str, to: str, last: Sent) -> Webhook:
        """The provider's own signal that `phone` opted out of `to` (`last`: the latest text we sent them)."""
        return self.opt_out_report(last)

    @abstractmethod
    def refuse_next_send(self, phone: str) -> bool:
        """Script the fake so the next send to `phone` meets an opt-out; True when the API itself refuses it."""

    @abstractmethod
    def forge(self, webhook: Webhook) -> Webhook:
        """`webhook` with its body unchanged and its signature made with another key."""

    @abstractmethod
    def malformed(self, phone: str, to: str) -> Webhook:
        """A correctly signed inbound request whose payload the adapter must refuse (400)."""

    @abstractmethod
    def sent(self) -> list[Sent]:
        """Every text the fake accepted, oldest first."""

    def url(self, path: str) -> str:
        """The URL the provider signs for `path`."""
        return self.public_url + path


def wire_number(e164: str) -> str:
    """A number as Plivo and Vonage write it: the country code and digits, no "+"."""
    return e164.removeprefix("+")


def from_wire(number: str) -> str:
    """A long number Plivo or Vonage wrote without "+" back in E.164."""
    return number if number.startswith("+") or len(number) <= 8 else "+" + number
