"""One sender as configured: what kind of address it is, who sends from it, and how fast (pure).

A sender is a number people text (an E.164 long code or toll-free number, or a short code)
or a Twilio Messaging Service. keywords.yaml may name the provider that sends from it and
its rate; what it leaves out comes from here, so the outbox can pace each sender without
knowing how the file was written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from app.phone import is_toll_free

__all__ = [
    "DEFAULT_RATES",
    "LONG_CODE",
    "MAX_RATE",
    "MG_SID",
    "SERVICE",
    "SERVICE_PROVIDER",
    "SHORT_CODE",
    "SHORT_CODE_DIGITS",
    "TOLL_FREE",
    "SenderConfig",
    "sender_key",
    "sender_kind",
]

# The kinds of sender (SenderConfig.kind).
LONG_CODE = "long_code"  # an ordinary E.164 number (US 10DLC, any other country's mobile or landline)
TOLL_FREE = "toll_free"  # an E.164 number in a toll-free range (US/CA +1 800, 833, 844, 855, 866, 877, 888)
SHORT_CODE = "short_code"  # 3 to 8 digits, as Twilio posts them in To
SERVICE = "service"  # a Twilio Messaging Service (MG…): Twilio picks the number from its pool

# A Messaging Service SID: MG and 32 hex digits. Twilio writes the hex in lower case; a
# config may not.
MG_SID = re.compile(r"MG[0-9a-fA-F]{32}")
# A short code: 3 to 8 digits (5 or 6 in the US and Canada, 3 to 8 elsewhere), no plus.
SHORT_CODE_DIGITS = re.compile(r"[0-9]{3,8}")
# Messaging Services are Twilio's: no other provider can send through an MG… SID.
SERVICE_PROVIDER = "twilio"

# Default sending rates, in messages a second, by kind. Carriers and providers count message
# segments (MPS); optline's replies are one segment each (`optline check` warns otherwise), so
# one message a second is one segment a second. Going faster does not send faster: the
# provider queues the excess (Twilio up to 10 hours a number, then error 21611 / 30001), so
# pacing at the sender's own rate keeps a burst of replies from sitting in a queue that a
# STOP confirmation then waits behind.
DEFAULT_LONG_CODE_RATE = 1.0
# A long code sends one segment a second: Twilio, "Error 21611"
# (https://www.twilio.com/docs/api/errors/21611: "a US long code number can send one message
# segment per second"); AWS End User Messaging, "What are the Message Parts per Second (MPS)
# limits" (https://docs.aws.amazon.com/sms-voice/latest/userguide/sms-limitations-mps.html:
# US 10DLC, default 1 MPS a number; Canada 1 MPS). A registered 10DLC campaign may get more
# from the carriers: set `rate` then.
DEFAULT_TOLL_FREE_RATE = 3.0
# Twilio, "Toll-Free SMS and MMS messaging throughput (MPS)"
# (https://support.twilio.com/hc/en-us/articles/4411046744987-Toll-Free-SMS-and-MMS-messaging-throughput-MPS:
# a US toll-free number sends 3 MPS to the US and Canada by default; "high-throughput"
# toll-free is bought separately); the AWS page above gives the same 3 MPS.
DEFAULT_SHORT_CODE_RATE = 100.0
# Twilio, "Account Based Throughput Overview"
# (https://www.twilio.com/docs/messaging/guides/account-based-throughput-overview: "short
# code numbers have a current available throughput of 100 Messages per Second"); the AWS
# page above: US and Canada short codes, 100 MPS.
DEFAULT_SERVICE_RATE = 100.0
# A Messaging Service sends from its pool of senders, each at its own rate (the same Twilio
# page: a pool of four short codes is 4 x 100 MPS), and Twilio paces the pool itself
# ("Understanding Twilio Rate Limits and Message Queues",
# https://support.twilio.com/hc/en-us/articles/115002943027-Understanding-Twilio-Rate-Limits-and-Message-Queues).
# optline cannot see the pool, so it assumes the rate of one short code: high enough not to
# hold back a pool of long codes, which Twilio then paces.

DEFAULT_RATES: Mapping[str, float] = MappingProxyType(
    {
        LONG_CODE: DEFAULT_LONG_CODE_RATE,
        TOLL_FREE: DEFAULT_TOLL_FREE_RATE,
        SHORT_CODE: DEFAULT_SHORT_CODE_RATE,
        SERVICE: DEFAULT_SERVICE_RATE,
    }
)
# The most a config may set: above any provider's single-sender throughput (Telnyx sells
# short codes at 1,000 MPS, Twilio high-throughput toll-free at 150), low enough that a typo
# (100000 for 100) is caught.
MAX_RATE = 10_000.0


def sender_key(sender: str) -> str:
    """The form a sender is looked up by: an MG SID with lower-case hex (as Twilio posts it), anything else as is."""
    return "MG" + sender[2:].lower() if MG_SID.fullmatch(sender) else sender


def sender_kind(sender: str) -> str:
    """LONG_CODE, TOLL_FREE, SHORT_CODE or SERVICE, for a sender id already known to be well formed."""
    if MG_SID.fullmatch(sender):
        return SERVICE
    if SHORT_CODE_DIGITS.fullmatch(sender):
        return SHORT_CODE
    return TOLL_FREE if is_toll_free(sender) else LONG_CODE


@dataclass(frozen=True)
class SenderConfig:
    """One sender of keywords.yaml: its id, kind, provider and rate, defaults applied."""

    id: str  # as configured: "+15005550006", "384387", "MG…"
    kind: str  # LONG_CODE, TOLL_FREE, SHORT_CODE or SERVICE
    provider: str | None  # a name of app.settings.PROVIDER_NAMES; None: the deployment's default provider
    rate: float  # the most messages a second sent from it; the default for its kind when not configured

    @classmethod
    def of(cls, sender: str, provider: str | None = None, rate: float | None = None) -> SenderConfig:
        """The config of a well-formed sender id, with the default rate of its kind when `rate` is None."""
        kind = sender_kind(sender)
        return cls(id=sender, kind=kind, provider=provider, rate=float(rate) if rate is not None else DEFAULT_RATES[kind])
