"""A Vonage account still on the SMS API is told to switch to the Messages API, in the answer and the log.

optline reads Vonage's Messages API (JSON signed with a JWT). An account whose default SMS API
is still the SMS API posts every inbound text as `msisdn`, `to`, `messageId`, `text` — by GET
(its default), as a form, or as JSON — with no JWT: each was refused 403 "missing or invalid
vonage signature" (a GET 405), which sent operators looking at secrets. The captured requests:
nyaruka/courier handlers/nexmo/handler_test.go (the GET query and the POST form of "Receive
Valid Message"), and the inbound message object of Vonage's SMS API docs
(https://developer.vonage.com/en/messaging/sms/guides/inbound-sms; Nexmo/nexmo-developer's
inbound SMS tutorial shows the same object).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.web import webhooks
from tests.conftest import FakeClock
from tests.contract.deployment import Deployment
from tests.contract.plivo import PlivoDriver
from tests.contract.vonage import VonageDriver

COURIER_QUERY = "to=2020&msisdn=2349067554729&text=Join&messageId=external1"
DOCS_JSON = {
    "msisdn": "447700900001", "to": "447700900000", "messageId": "0A0000000123ABCD1", "text": "Hello world",
    "type": "text", "keyword": "Hello", "message-timestamp": "2020-01-01T12:00:00.000+00:00",
    "timestamp": "1578787200", "nonce": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "concat": "true",
    "concat-ref": "1", "concat-total": "3", "concat-part": "2", "data": "abc123", "udh": "abc123",
}


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment([VonageDriver(), PlivoDriver()], database_url=database_url, tmp_path=tmp_path,
                            clock=FakeClock())
    yield deployment
    deployment.close()


def sms_api(app: Deployment, how: str, path: str) -> object:
    client = app.client
    if how == "get":
        return client.get(f"{path}?{COURIER_QUERY}")
    if how == "form":
        return client.post(path, content=COURIER_QUERY, headers={"content-type": "application/x-www-form-urlencoded"})
    return client.post(path, content=json.dumps(DOCS_JSON), headers={"content-type": "application/json"})


@pytest.mark.parametrize("path", ["/webhooks/vonage", "/webhooks/vonage/status"])
@pytest.mark.parametrize("how", ["get", "form", "json"])
def test_an_sms_api_webhook_is_told_to_switch(app: Deployment, how: str, path: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    webhooks._last_refusal_log = 0.0  # the refusal line is rate-limited per process; this test wants to see it
    before = app.stored()
    with caplog.at_level(logging.WARNING, logger="optline.webhooks"):
        response = sms_api(app, how, path)
    # Was 403 "missing or invalid vonage signature" (a GET: 405).
    assert response.status_code == 400, response.text  # type: ignore[attr-defined]
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    assert "SMS API" in detail and "Messages API" in detail and "/webhooks/vonage" in detail
    assert app.stored() == before
    lines = [r.getMessage() for r in caplog.records if "Messages API" in r.getMessage()]
    assert lines and "webhook refused (400)" in lines[0] and "msisdn" in lines[0]


def test_a_messages_api_webhook_with_a_bad_signature_is_still_403(app: Deployment) -> None:
    driver = app.drivers[0]
    forged = driver.forge(driver.inbound("+447700900001", driver.sender, "STOP"))
    assert app.post(forged).status_code == 403


def test_a_get_to_another_provider_is_405(app: Deployment) -> None:
    response = app.client.get(f"/webhooks/plivo?{COURIER_QUERY}")
    assert response.status_code == 405 and response.headers["allow"] == "POST"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(provider=st.sampled_from(["vonage", "plivo", "telnyx"]), status=st.booleans(),
       query=st.lists(st.tuples(st.sampled_from(["msisdn", "messageId", "to", "text", "sig", "x"]) | st.text(max_size=8),
                                st.text(max_size=12)), max_size=5))
def test_any_get_is_answered_4xx(app_sqlite: Deployment, provider: str, status: bool,
                                 query: list[tuple[str, str]]) -> None:
    path = f"/webhooks/{provider}" + ("/status" if status else "")
    response = app_sqlite.client.get(path, params=query)
    assert response.status_code in (400, 404, 405), response.text
    assert app_sqlite.stored()["inbound_messages"] == 0


@pytest.fixture(scope="module")
def app_sqlite(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("sms-api-fuzz")
    shutil.copy(sqlite_template, folder / "optline.db")
    deployment = Deployment([VonageDriver(), PlivoDriver()], database_url=f"sqlite:///{folder / 'optline.db'}",
                            tmp_path=folder, clock=FakeClock())
    yield deployment
    deployment.close()
