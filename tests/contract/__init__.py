"""The provider contract suite: one table of conversations that every provider adapter passes.

tests/test_provider_contract.py runs each conversation (JOIN, YES, STOP, HELP, START, the
provider's own opt-out signal, delivery reports in any order, a bad signature, a replay, a
send refused for an opt-out …) through the real app for every driver listed in DRIVERS.

A new provider is one file here (a `Driver`: its signed requests, its fake, its settings,
citing where its wire format comes from), its fake (tests/fake_<provider>.py) and a line in
DRIVERS; the table of conversations stays as it is.
"""

from __future__ import annotations

from tests.contract.driver import Driver
from tests.contract.plivo import PlivoDriver
from tests.contract.telnyx import TelnyxDriver
from tests.contract.twilio import TwilioDriver
from tests.contract.vonage import VonageDriver

DRIVERS: tuple[type[Driver], ...] = (TwilioDriver, TelnyxDriver, PlivoDriver, VonageDriver)
