"""No request to /webhooks/{provider} is a 5xx: validly signed but bent payloads for every JSON and form provider.

A signature only proves who sent a body, not that the body is sane: each provider's real
payload (the fakes' builders, shaped like the captured ones in tests/data/providers/) is bent
as the API fuzz bends its bodies (tests/test_fuzz.py `bent`: fields replaced by other types,
removed, added, at any depth), cut off or nested too deep, then signed the provider's way. Every answer must be 2xx, or a 4xx problem+json; nothing may crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ACME, PUBLIC_URL, Gateway
from tests.test_fuzz import NASTY, bent
from tests.fake_plivo import AUTH_ID as PLIVO_ID, AUTH_TOKEN as PLIVO_TOKEN
from tests.fake_plivo import FakePlivo, fake_plivo, signed_headers  # noqa: F401
from tests.fake_plivo import inbound_pairs as plivo_inbound, status_pairs as plivo_status
from tests.fake_telnyx import FakeTelnyx, TelnyxKeys, event, fake_telnyx  # noqa: F401
from tests.fake_telnyx import inbound_payload as telnyx_inbound, status_payload as telnyx_status
from tests.fake_vonage import APPLICATION_ID, FakeVonage, VonageKeys, fake_vonage, vonage_keys  # noqa: F401
from tests.fake_vonage import inbound_payload as vonage_inbound, status_payload as vonage_status

PROBLEM = "application/problem+json"
PHONE = "+14155550123"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])

@pytest.fixture
def everyone(gateway_factory: Callable[..., Gateway], sqlite_url: str, fake_telnyx: FakeTelnyx,
             fake_plivo: FakePlivo, fake_vonage: FakeVonage, vonage_keys: VonageKeys) -> tuple[Gateway, TelnyxKeys]:
    keys = TelnyxKeys()
    gateway = gateway_factory(
        sqlite_url, providers="twilio,telnyx,plivo,vonage", telnyx_api_key="KEY_test",
        telnyx_public_key=keys.public_key, telnyx_api_url=fake_telnyx.url, plivo_auth_id=PLIVO_ID,
        plivo_auth_token=PLIVO_TOKEN, plivo_api_url=fake_plivo.url, vonage_application_id=APPLICATION_ID,
        vonage_private_key=vonage_keys.private_pem, vonage_signature_secret=vonage_keys.signature_secret,
        vonage_api_url=fake_vonage.url)
    return gateway, keys


def check(response: Any, what: str) -> None:
    ok = response.status_code < 400 or (
        response.status_code < 500 and response.headers.get("content-type", "").startswith(PROBLEM))
    assert ok, f"{response.status_code} for {what[:300]}: {response.text[:300]}"


def test_telnyx_bent_events_are_never_a_5xx(everyone: tuple[Gateway, TelnyxKeys]) -> None:
    gateway, keys = everyone
    templates = [json.loads(event("message.received", telnyx_inbound(text="STOP", from_=PHONE, to=ACME))),
                 json.loads(event("message.finalized", telnyx_status("40385f64-5717-4562-b3fc-2c963f66afa6",
                                                                     "delivery_failed", to=PHONE,
                                                                     errors=[{"code": "40300"}])))]

    @FUZZ
    @given(document=st.sampled_from(templates).flatmap(bent), cut=st.integers(0, 40))
    def run(document: Any, cut: int) -> None:
        body = json.dumps(document).encode()
        body = body[:-cut] if cut > 30 else body  # now and then cut off
        check(gateway.client.post("/webhooks/telnyx", content=body, headers=keys.headers(body)), repr(body))

    run()
    deep = b'{"data": ' * 5000 + b"1" + b"}" * 5000  # nested past the decoder's stack: a 400, not a crash
    assert gateway.client.post("/webhooks/telnyx", content=deep, headers=keys.headers(deep)).status_code == 400


def test_vonage_bent_messages_are_never_a_5xx(everyone: tuple[Gateway, TelnyxKeys], vonage_keys: VonageKeys) -> None:
    gateway, _ = everyone
    templates = [vonage_inbound(text="STOP", **{"from": PHONE[1:], "to": ACME[1:]}),
                 vonage_status("aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "rejected")]

    @FUZZ
    @given(document=st.sampled_from(templates).flatmap(bent), deep=st.integers(0, 9))
    def run(document: Any, deep: int) -> None:
        body = json.dumps(document).encode()
        if deep == 9:
            body = b"[" * 5000 + b"]" * 5000  # deep JSON: refused, not a RecursionError
        check(gateway.client.post("/webhooks/vonage", content=body, headers=vonage_keys.webhook_headers(body)),
              repr(body))

    run()


def test_plivo_bent_forms_are_never_a_5xx(everyone: tuple[Gateway, TelnyxKeys]) -> None:
    gateway, _ = everyone
    templates = [plivo_inbound(From=PHONE[1:], To=ACME[1:], Text="STOP"),
                 plivo_status("7a242edc-2f57-11e7-98c9-06ab0bf64327", "failed", ErrorCode="200")]
    text = st.text(max_size=20) | st.sampled_from(NASTY)

    @FUZZ
    @given(pairs=st.sampled_from(templates), edits=st.lists(st.tuples(st.integers(0, 30), text), max_size=4),
           path=st.sampled_from(["/webhooks/plivo", "/webhooks/plivo/status"]))
    def run(pairs: list[tuple[str, str]], edits: list[tuple[int, str]], path: str) -> None:
        pairs = list(pairs)
        for index, value in edits:
            if index < len(pairs):
                pairs[index] = (pairs[index][0], value)
            else:
                pairs.append((value or "X", value))
        body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()
        url = PUBLIC_URL + path
        check(gateway.client.post(path, content=body, headers=signed_headers(url, pairs)), repr(body))

    run()


# Digits that are not ASCII digits: str.isdigit says yes to "²" (int() refuses it) and to "٣" (int()
# reads 3); a run of 5,000 digits is more than int() reads and more than the column holds.
NOT_ASCII_NUMBERS = ["²", "٣", "１２", "9" * 5000, "99999999999", " 30007 "]


@pytest.mark.parametrize("code", NOT_ASCII_NUMBERS, ids=["superscript", "arabic-indic", "fullwidth", "5000-digits",
                                                         "over-int32", "spaced"])
def test_a_provider_error_code_that_is_no_plain_number_is_never_a_5xx(
        everyone: tuple[Gateway, TelnyxKeys], vonage_keys: VonageKeys, code: str) -> None:
    gateway, keys = everyone
    pairs = plivo_status("7a242edc-2f57-11e7-98c9-06ab0bf64327", "failed", ErrorCode=code)
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()
    url = PUBLIC_URL + "/webhooks/plivo/status"
    check(gateway.client.post("/webhooks/plivo/status", content=body, headers=signed_headers(url, pairs)), code)
    telnyx = event("message.finalized", telnyx_status("40385f64-5717-4562-b3fc-2c963f66afa6", "delivery_failed",
                                                      to=PHONE, errors=[{"code": code}]))
    check(gateway.client.post("/webhooks/telnyx", content=telnyx, headers=keys.headers(telnyx)), code)
    vonage = json.dumps(vonage_status("aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "rejected",
                                      error={"type": f"https://developer.vonage.com/api-errors#{code}",
                                             "title": code})).encode()
    check(gateway.client.post("/webhooks/vonage", content=vonage, headers=vonage_keys.webhook_headers(vonage)), code)
