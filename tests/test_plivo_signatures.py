"""Plivo callbacks signed the ways Plivo signs them: X-Plivo-Signature-V2 and X-Plivo-Signature-V3.

Plivo's messaging docs (https://docs.plivo.com/docs/messaging/concepts/signature-validation)
describe V2: base64 HMAC-SHA256, keyed by the Auth Token, of the URL without its query followed
by the nonce. V3 signs the URL, the sorted parameters and the nonce. The captured examples are
the official SDKs' own test vectors: plivo/plivo-python tests/resources/test_signature.py
(commit 2d8d37f2f61455ff35fac8bbf197b2579dca6097; the same V2 vector is in plivo/plivo-go
utils_test.go) and plivo/plivo-go utils_test.go (commit bb6d824e04c9b585a51d2107b2d4df1f3c7b6f0c,
TestValidateSignatureV3Pass1 and Pass3: a callback Plivo's staging servers signed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from app.providers.base import WebhookRequest
from app.providers.plivo import signature_valid
from tests.conftest import FakeClock
from tests.contract.deployment import Deployment
from tests.contract.driver import Webhook, wire_number
from tests.contract.plivo import PlivoDriver
from tests.fake_plivo import AUTH_TOKEN, inbound_pairs

# plivo-python's V2 vector: URL, nonce, signature, Auth Token.
V2_URL, V2_NONCE, V2_SIGNATURE, V2_TOKEN = (
    "https://answer.url", "12345", "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=", "my_auth_token")
# plivo-go's V3 vectors: one callback's parameters, signed for a URL with a query and without.
V3_TOKEN, V3_NONCE = "Y2Q2ZDgxZmY5YWRiOTI5YmQ1Njg0MTAxZWIyOTc4", "31627761595286130198"
V3_PARAMS = {
    "Direction": "outbound", "From": "19792014278", "ALegUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
    "CallStatus": "in-progress", "BillRate": "0.002", "ParentAuthID": "MANWVLYTK4ZWU1YTY4QA",
    "To": "sip:PlivoSignature382029104058171078704104@phone-qa.voice.plivodev.com",
    "ALegRequestUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36", "CallUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
    "RequestUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
    "SIP-H-To": "<sip:PlivoSignature382029104058171078704104@52.9.11.55;transport=udp>;tag=1",
    "SessionStart": "2020-04-08 11:34:33.238707", "Event": "StartApp",
}
V3_URL = "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml"
V3_VECTORS = [(V3_URL + "/?a=b&c=d", "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c="),
              (V3_URL, "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0=")]


def v2_request(url: str, nonce: str, signature: str, form: tuple[tuple[str, str], ...] = ()) -> WebhookRequest:
    return WebhookRequest(url=url, headers={"x-plivo-signature-v2": signature, "x-plivo-signature-v2-nonce": nonce},
                          body=urlencode(form).encode(), form=form)


def sign_v2(url: str, nonce: str, token: str = AUTH_TOKEN) -> str:
    """V2 as Plivo's docs describe it, independently of the SDK the adapter checks with."""
    parts = urlsplit(url)
    message = f"{parts.scheme}://{parts.netloc}{parts.path}{nonce}".encode()
    return base64.b64encode(hmac.new(token.encode(), message, hashlib.sha256).digest()).decode()


# --- the captured vectors --------------------------------------------------------------------------


def test_the_captured_v2_signature_is_accepted() -> None:
    assert signature_valid(V2_TOKEN, v2_request(V2_URL, V2_NONCE, V2_SIGNATURE))  # was refused: V3 only
    assert sign_v2(V2_URL, V2_NONCE, V2_TOKEN) == V2_SIGNATURE  # the helper below signs as Plivo does


@pytest.mark.parametrize(("url", "nonce", "signature", "token"), [
    (V2_URL, V2_NONCE, V2_SIGNATURE, V2_TOKEN + "s"),  # another account's token
    (V2_URL + "/other", V2_NONCE, V2_SIGNATURE, V2_TOKEN),  # another URL
    (V2_URL, "12346", V2_SIGNATURE, V2_TOKEN),  # another nonce
    (V2_URL, V2_NONCE, "", V2_TOKEN),
    (V2_URL, "", V2_SIGNATURE, V2_TOKEN),
    (V2_URL, V2_NONCE, "\u00e9\u00e9", V2_TOKEN),
], ids=["other-token", "other-url", "other-nonce", "no-signature", "no-nonce", "not-ascii"])
def test_a_wrong_v2_signature_is_refused(url: str, nonce: str, signature: str, token: str) -> None:
    assert not signature_valid(token, v2_request(url, nonce, signature))


@pytest.mark.parametrize(("url", "signature"), V3_VECTORS, ids=["with-query", "without-query"])
def test_the_captured_v3_signatures_are_accepted(url: str, signature: str) -> None:
    form = tuple(V3_PARAMS.items())
    request = WebhookRequest(url=url, headers={"x-plivo-signature-v3": signature, "x-plivo-signature-v3-nonce": V3_NONCE},
                             body=urlencode(form).encode(), form=form)
    assert signature_valid(V3_TOKEN, request)
    changed = WebhookRequest(url=url, headers=request.headers, body=request.body,
                             form=tuple({**V3_PARAMS, "CallStatus": "completed"}.items()))
    assert not signature_valid(V3_TOKEN, changed)  # V3 signs the parameters


# --- through the app, on both engines -------------------------------------------------------------


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment([PlivoDriver()], database_url=database_url, tmp_path=tmp_path, clock=FakeClock())
    yield deployment
    deployment.close()


def v2_inbound(app: Deployment, text: str, *, token: str = AUTH_TOKEN, path: str = "/webhooks/plivo") -> Webhook:
    driver = app.drivers[0]
    pairs = inbound_pairs(From=wire_number("+14155550188"), To=wire_number(driver.sender), Text=text,
                          MessageUUID=str(uuid.uuid4()))
    nonce = str(secrets.randbelow(10**20))
    headers = {"x-plivo-signature-v2": sign_v2(driver.url(path), nonce, token),
               "x-plivo-signature-v2-nonce": nonce, "content-type": "application/x-www-form-urlencoded"}
    return Webhook("/webhooks/plivo", headers, urlencode(pairs).encode(), dict(pairs)["MessageUUID"])


def test_a_v2_signed_inbound_text_is_taken(app: Deployment) -> None:
    webhook = v2_inbound(app, "JOIN")
    response = app.post(webhook)
    assert response.status_code == 200, response.text  # was 403: "missing or invalid plivo signature"
    app.drain()
    assert app.subs("+14155550188", "plivo") == {"alerts": "pendingDOI"}
    assert app.count("inbound_messages WHERE message_id = :m", m=webhook.message_id) == 1


@pytest.mark.parametrize("forged", ["other-token", "other-path"])
def test_a_wrong_v2_signature_stores_nothing(app: Deployment, forged: str) -> None:
    webhook = (v2_inbound(app, "STOP", token="bm90LXRoZS1hY2NvdW50LXRva2Vu") if forged == "other-token"
               else v2_inbound(app, "STOP", path="/webhooks/plivo/status"))
    before = app.stored()
    assert app.post(webhook).status_code == 403
    assert app.stored() == before


def test_a_v2_nonce_replayed_with_another_body_is_refused_and_a_retry_is_taken(app: Deployment) -> None:
    """V2 signs no parameter: captured headers on another body (a forged JOIN) are refused; Plivo's retry passes."""
    real = v2_inbound(app, "HELP")
    assert app.post(real).status_code == 200
    assert app.post(real).status_code == 200  # Plivo retrying the same callback
    forged_pairs = inbound_pairs(From=wire_number("+14155550199"), To=wire_number(app.drivers[0].sender), Text="JOIN",
                                 MessageUUID=str(uuid.uuid4()))
    forged = Webhook(real.path, real.headers, urlencode(forged_pairs).encode(), dict(forged_pairs)["MessageUUID"])
    before = app.stored()
    assert app.post(forged).status_code == 403
    assert app.stored() == before
