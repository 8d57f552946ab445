"""The webhook edge: signatures, content types, sizes, malformed payloads, replays.

Every refused request gets a clear 4xx and stores nothing; every accepted one is answered
with the empty TwiML only after its transaction committed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.web.webhooks import parse_form
from tests.conftest import ACME, PUBLIC_URL, Gateway
from tests.fake_twilio import sign_twilio, twilio_inbound_params

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def _stored(gateway: Gateway) -> int:
    return gateway.query("SELECT count(*) FROM inbound_messages")[0][0]


def _post(gateway: Gateway, params: dict[str, str], *, signature: str | None, path: str = "/webhooks/twilio",
          headers: dict[str, str] | None = None) -> Any:
    sent = dict(headers or {})
    if signature is not None:
        sent["X-Twilio-Signature"] = signature
    return gateway.client.post(path, data=params, headers=sent)


def _resign_with(params: dict[str, str], **changes: str) -> str:
    return sign_twilio(PUBLIC_URL + "/webhooks/twilio", {**params, **changes})


BAD_SIGNATURES = [
    pytest.param(lambda p: None, id="missing"),
    pytest.param(lambda p: "", id="empty"),
    pytest.param(lambda p: "bm90IGEgc2lnbmF0dXJl", id="garbage"),
    pytest.param(lambda p: sign_twilio(PUBLIC_URL + "/webhooks/twilio", p, auth_token="x" * 32), id="wrong-token"),
    pytest.param(lambda p: sign_twilio("https://evil.example/webhooks/twilio", p), id="other-url"),
    pytest.param(lambda p: _resign_with(p, Body="STOP"), id="tampered-body"),
    pytest.param(lambda p: sign_twilio(PUBLIC_URL + "/webhooks/twilio", {k: v for k, v in p.items() if k != "NumMedia"}),
                 id="param-added-after-signing"),
]


@pytest.mark.parametrize("signature", BAD_SIGNATURES)
def test_bad_signature_is_403_and_stores_nothing(gateway: Gateway, signature: Any) -> None:
    params = twilio_inbound_params(Body="JOIN")
    response = _post(gateway, params, signature=signature(params))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "X-Twilio-Signature" in response.json()["detail"]
    assert _stored(gateway) == 0


def test_signature_is_checked_against_public_url_not_host_header(gateway: Gateway) -> None:
    params = twilio_inbound_params(Body="HELP")
    # Signed for the Host the request claims, not for OPTLINE_PUBLIC_URL: refused.
    forged = sign_twilio("http://testserver/webhooks/twilio", params)
    assert _post(gateway, params, signature=forged).status_code == 403
    good = sign_twilio(PUBLIC_URL + "/webhooks/twilio", params)
    assert _post(gateway, params, signature=good, headers={"Host": "attacker.example"}).status_code == 200


def test_query_string_is_part_of_the_signed_url(gateway: Gateway) -> None:
    params = twilio_inbound_params(Body="HELP")
    signature = sign_twilio(PUBLIC_URL + "/webhooks/twilio?tenant=acme", params)
    ok = gateway.client.post("/webhooks/twilio?tenant=acme", data=params, headers={"X-Twilio-Signature": signature})
    assert ok.status_code == 200
    moved = gateway.client.post("/webhooks/twilio?tenant=other", data=params, headers={"X-Twilio-Signature": signature})
    assert moved.status_code == 403


@pytest.mark.parametrize("content_type,body", [
    ("application/json", b'{"Body": "STOP"}'),
    ("text/plain", b"Body=STOP"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=\"Body\"\r\n\r\nSTOP\r\n--x--\r\n"),
    ("", b"Body=STOP"),
], ids=["json", "text", "multipart", "none"])
def test_non_form_body_is_415(gateway: Gateway, content_type: str, body: bytes) -> None:
    response = gateway.client.post("/webhooks/twilio", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 415
    assert _stored(gateway) == 0


def test_oversized_body_is_413(gateway: Gateway) -> None:
    params = twilio_inbound_params(Body="x" * (70 * 1024))
    response = _post(gateway, params, signature=sign_twilio(PUBLIC_URL + "/webhooks/twilio", params))
    assert response.status_code == 413
    assert _stored(gateway) == 0


def test_oversized_chunked_body_without_length_is_413(gateway: Gateway) -> None:
    def chunks() -> Any:
        yield b"Body="
        for _ in range(80):
            yield b"x" * 1024

    response = gateway.client.post("/webhooks/twilio", content=chunks(),
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413


def test_invalid_utf8_is_400(gateway: Gateway) -> None:
    response = gateway.client.post("/webhooks/twilio", content=b"Body=%FF%FE&From=%2B14155550123",
                                   headers={"Content-Type": "application/x-www-form-urlencoded",
                                            "X-Twilio-Signature": "x"})
    # Undecodable percent-escapes decode with replacement characters; the signature still fails.
    assert response.status_code in (400, 403)
    raw = gateway.client.post("/webhooks/twilio", content=b"Body=\xff\xfe",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert raw.status_code == 400
    assert _stored(gateway) == 0


@pytest.mark.parametrize("field,value", [
    ("From", "not-a-number"),
    ("From", ""),
    ("From", "+1"),
    ("From", "+999999999999999999"),
    ("MessageSid", ""),
    ("To", ""),
], ids=["from-letters", "from-empty", "from-too-short", "from-too-long", "sid-empty", "to-empty"])
def test_malformed_fields_are_400_with_the_field_named(gateway: Gateway, field: str, value: str) -> None:
    params = twilio_inbound_params(Body="STOP", **{field: value})
    response = gateway.post_signed("/webhooks/twilio", params)
    assert response.status_code == 400
    problem = response.json()
    assert problem["status"] == 400
    assert field in [e["field"] for e in problem["errors"]]
    assert _stored(gateway) == 0


@pytest.mark.parametrize("body", [
    "STOP 🛑", "🙏 stop", "ＳＴＯＰ", "S\u200bTOP", "stop\u200f", "Stop!!!", "  stop  ",
], ids=["emoji-after", "emoji-before", "fullwidth", "zero-width-inside", "rtl-mark", "punctuation", "spaces"])
def test_unicode_stop_variants_opt_out(gateway: Gateway, body: str) -> None:
    phone = "+14155550140"
    gateway.text("JOIN", from_=phone)
    gateway.text("YES", from_=phone)
    assert gateway.text(body, from_=phone).status_code == 200
    assert gateway.subs(phone)["deals"] == "unsubscribed"


def test_unicode_body_is_stored_verbatim(gateway: Gateway) -> None:
    body = "J'adore ☕️ — ça marche? 👍🏽"
    response = gateway.text(body, from_="+33612345678")
    assert response.status_code == 200
    assert gateway.query("SELECT body FROM inbound_messages")[0][0] == body


def test_a_nul_character_is_kept_as_a_replacement_character_and_the_stop_still_counts(gateway: Gateway) -> None:
    # PostgreSQL's text cannot hold NUL: this was a 500 there, which Twilio retries for ever.
    phone = "+14155550141"
    gateway.text("JOIN", from_=phone)
    gateway.text("YES", from_=phone)
    assert gateway.text("STOP\x00", from_=phone).status_code == 200
    assert gateway.subs(phone)["deals"] == "unsubscribed"
    assert gateway.query("SELECT body FROM inbound_messages ORDER BY id")[-1][0] == "STOP\ufffd"


def test_replayed_message_sid_changes_nothing(gateway: Gateway) -> None:
    phone = "+14155550150"
    first = gateway.text("JOIN", from_=phone)
    params = first.params
    again = gateway.post_signed("/webhooks/twilio", params)
    assert again.status_code == 200 and again.text == EMPTY_TWIML
    gateway.drain()
    assert len(gateway.fake.messages(to=phone)) == 1
    assert _stored(gateway) == 1


def test_ten_parallel_copies_of_one_text_act_once(gateway: Gateway) -> None:
    phone = "+14155550151"
    params = twilio_inbound_params(Body="JOIN", From=phone, To=ACME)
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda _: gateway.post_signed("/webhooks/twilio", params), range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert all(r.text == EMPTY_TWIML for r in responses)
    gateway.drain()
    assert len(gateway.fake.messages(to=phone)) == 1
    assert _stored(gateway) == 1
    assert gateway.query("SELECT count(*) FROM consent_events")[0][0] == 1


def test_status_callback_needs_a_signature_too(gateway: Gateway) -> None:
    response = gateway.client.post("/webhooks/twilio/status", data={"MessageSid": "SM" + "0" * 32,
                                                                   "MessageStatus": "delivered"})
    assert response.status_code == 403


def test_unknown_sender_is_stored_and_answered(gateway: Gateway) -> None:
    response = gateway.text("STOP", to="+15005550009")
    assert response.status_code == 200
    assert gateway.query("SELECT kind FROM inbound_messages")[0][0] == "unrouted"


def test_webhook_without_configured_auth_token_fails_closed(gateway_factory: Any, sqlite_url: str) -> None:
    gateway = gateway_factory(sqlite_url, twilio_auth_token=None, provider="console")
    params = twilio_inbound_params(Body="JOIN")
    assert gateway.post_signed("/webhooks/twilio", params).status_code == 403


_FORM_TEXT = st.text(alphabet=st.sampled_from("ab=&+%20%2Bz%zz%E2%9C%85%FF ;é✅"), max_size=40)
_PAIRS = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=12)), max_size=6)


@settings(max_examples=400, deadline=None)
@given(text=_FORM_TEXT | _PAIRS.map(urlencode))
def test_form_parser_reads_bodies_as_parse_qsl_does(text: str) -> None:
    assert parse_form(text) == parse_qsl(text, keep_blank_values=True)


def test_repeated_keys_are_all_signed_and_the_last_one_is_used(gateway: Gateway) -> None:
    params = twilio_inbound_params(Body="JOIN", From="+14155550199", To=ACME)
    pairs = [*params.items(), ("Body", "STOP")]
    signature = sign_twilio(PUBLIC_URL + "/webhooks/twilio", pairs)
    forged = sign_twilio(PUBLIC_URL + "/webhooks/twilio", params)  # signs one Body only
    body = urlencode(pairs)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert gateway.client.post("/webhooks/twilio", content=body,
                               headers={**headers, "X-Twilio-Signature": forged}).status_code == 403
    assert gateway.client.post("/webhooks/twilio", content=body,
                               headers={**headers, "X-Twilio-Signature": signature}).status_code == 200
    assert gateway.query("SELECT body FROM inbound_messages") == [("STOP",)]


def test_a_signature_refusal_is_logged_with_the_url_checked(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    import app.web.webhooks as webhooks

    webhooks._last_refusal_log = 0.0
    params = twilio_inbound_params(Body="STOP")
    with caplog.at_level("WARNING", logger="optline.webhooks"):
        for _ in range(3):
            assert gateway.client.post("/webhooks/twilio", data=params,
                                       headers={"X-Twilio-Signature": "forged"}).status_code == 403
    refusals = [r.getMessage() for r in caplog.records if "webhook refused" in r.getMessage()]
    assert len(refusals) == 1  # rate-limited
    assert "https://optline.example.test/webhooks/twilio" in refusals[0] and "does not match" in refusals[0]


def test_a_missing_auth_token_is_warned_at_start_up(sqlite_url: str, fake_twilio: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from starlette.testclient import TestClient

    from app.main import create_app
    from tests.conftest import make_settings

    settings = make_settings(sqlite_url, fake_twilio, provider="console", twilio_auth_token=None,
                             twilio_account_sid=None)
    with caplog.at_level("WARNING", logger="optline"), TestClient(create_app(settings)) as client:
        assert client.post("/webhooks/twilio", data={"Body": "STOP"}).status_code == 403
    assert any("TWILIO_AUTH_TOKEN is not set" in r.getMessage() for r in caplog.records)


SHARED_KEY = "webhooks-shared-key-secret-0123456789"


@pytest.mark.parametrize("case", ["sha256-good", "sha256-wrong-key", "sha256-no-key-configured", "sha1-still-works",
                                  "unknown-algorithm"])
def test_webhook_setting_shared_key_signatures(gateway_factory: Any, sqlite_url: str, case: str) -> None:
    """A Twilio Webhooks Rule signs with its Setting's SharedKey (HMAC-SHA256) and says so in a header."""
    from twilio.request_validator import RequestValidator

    from tests.conftest import PUBLIC_URL

    gateway = gateway_factory(sqlite_url, twilio_webhook_shared_key=None if case == "sha256-no-key-configured"
                              else SHARED_KEY)
    params = twilio_inbound_params(Body="JOIN")
    url = PUBLIC_URL + "/webhooks/twilio"
    key = "another-key" if case == "sha256-wrong-key" else SHARED_KEY
    algorithm = {"unknown-algorithm": "HMAC_MD5"}.get(case, "HMAC_SHA256")
    headers = {"X-Twilio-Webhooks-Signature-Settings": f"key=webhooks_sharedkey_1,algorithm={algorithm}",
               "X-Twilio-Signature": RequestValidator(key).compute_signature(url, params, algorithm="HMAC_SHA256")}
    if case == "sha1-still-works":
        headers = {"X-Twilio-Signature": sign_twilio(url, params)}
    status = gateway.client.post("/webhooks/twilio", data=params, headers=headers).status_code
    assert status == (200 if case in ("sha256-good", "sha1-still-works") else 403)
