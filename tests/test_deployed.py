"""The deployed suite: optline as a user runs it, one provider at a time, on both engines.

For each provider (Twilio, Telnyx, Plivo, Vonage) and each engine (a SQLite file, a private
PostgreSQL database) this starts the installed CLI exactly as the docs say: `optline migrate`,
then `optline serve`, with only the environment README and docs/providers.md name for that
provider (the database URL, the keywords file, the public URL, the provider's credentials and
webhook secret, and its API URL pointed at the provider's fake REST server on 127.0.0.1; the
spool, run folder and secret key are put in the test's folder so nothing lands in the
repository). The log level is never set: the server logs at INFO, its default.

It then posts the provider's real captured payloads (tests/data/providers/<provider>/, each
citing where it was captured), with only the text, the message id and the sender's number
changed, signed the provider's own way, and checks what a user would: the answer (200), the
rows stored (the inbound text, the subscription, the consent events), the reply the provider's
fake received, a delivery report applied to the reply, and a server log with no ERROR line
and no traceback. One process per provider and engine serves every case of that pair
(module-scoped); every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx2 as httpx
import pytest
import sqlalchemy as sa
import yaml

from app.settings import PROJECT_ROOT
from tests.conftest import PG_URL
from tests.contract.driver import Driver, Sent, wire_number
from tests.contract.plivo import PlivoDriver
from tests.contract.telnyx import TelnyxDriver
from tests.contract.twilio import TwilioDriver
from tests.contract.vonage import VonageDriver
from tests.fake_plivo import AUTH_TOKEN as PLIVO_TOKEN
from tests.fake_plivo import signed_headers as plivo_headers
from tests.fake_twilio import sign_twilio

pytestmark = pytest.mark.deployed

OPTLINE = Path(sys.executable).with_name("optline")  # the installed CLI of this venv
DATA = PROJECT_ROOT / "tests" / "data" / "providers"
READY_SECONDS = 30.0  # start-up budget of one `optline serve`
REPLY_SECONDS = 20.0  # a reply leaves at the sender's real rate (1 a second for a long code)
FORM = "application/x-www-form-urlencoded"

PROGRAM_MESSAGES = {
    "doi_prompt": "Shop Alerts: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel.",
    "welcome": "Shop Alerts: you're in! Reply STOP to cancel.",
    "stop": "Shop Alerts: you're unsubscribed. Help: help@shop.example",
    "help": "Shop Alerts. Help: help@shop.example. Msg&data rates may apply. Reply STOP to cancel.",
}
BRAND_MESSAGES = {
    "stop": "Shop: you are unsubscribed from all texts. Help: help@shop.example",
    "help": "Shop texts. Help: help@shop.example. Msg&data rates may apply. Reply STOP to cancel.",
}


def keywords(sender: str) -> dict[str, Any]:
    """keywords.yaml as the docs show it: one brand, one double-opt-in program on `sender`, default rates."""
    return {
        "version": 1,
        "brands": {"shop": {
            "name": "Shop", "help_contact": "help@shop.example", "language": "en", "default_region": "US",
            "messages": dict(BRAND_MESSAGES),
            "programs": {"alerts": {
                "name": "Shop Alerts", "senders": [sender],
                "keywords": {"join": ["JOIN"], "confirm": ["YES"]},
                "messages": dict(PROGRAM_MESSAGES),
            }},
        }},
    }


# --- each provider's captured payloads, signed its way ------------------------------------------


def _captured_form(name: str) -> list[tuple[str, str]]:
    """A captured form callback (first line: `# source: …`)."""
    source, body = (DATA / name).read_text().split("\n", 1)
    assert source.startswith("# source: "), name
    return parse_qsl(body.strip(), keep_blank_values=True)


def _captured_json(name: str) -> dict[str, Any]:
    """A captured JSON body ({"source": …, "body": …})."""
    document = json.loads((DATA / name).read_text())
    assert document["source"], name
    return document["body"]  # type: ignore[no-any-return]


def _replace(pairs: list[tuple[str, str]], **values: str) -> list[tuple[str, str]]:
    """`pairs` with the given keys' values replaced, in place and order."""
    return [(key, values.get(key, value)) for key, value in pairs]


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    message_id: str  # the provider's id of the text or report it carries


class Captured:
    """One provider's captured inbound text and delivery report, rewritten and signed."""

    driver: Driver
    sender: str  # our number: the captured inbound's To (E.164, as keywords.yaml writes it)
    phone: str  # the captured inbound's From (E.164)

    def inbound(self, url: str, *, phone: str, text: str) -> Request:
        raise NotImplementedError

    def delivered(self, url: str, sent: Sent) -> Request:
        raise NotImplementedError


class TwilioCaptured(Captured):
    sender, phone = "+12028831111", "+14133881111"  # tests/data/providers/twilio/inbound_sms.txt

    def __init__(self) -> None:
        self.driver = TwilioDriver()

    @staticmethod
    def _signed(url: str, path: str, pairs: list[tuple[str, str]], message_id: str) -> Request:
        headers = {"x-twilio-signature": sign_twilio(url + path, pairs), "content-type": FORM}
        return Request(path, headers, urlencode(pairs).encode(), message_id)

    def inbound(self, url: str, *, phone: str, text: str) -> Request:
        sid = "SM" + uuid.uuid4().hex
        pairs = _replace(_captured_form("twilio/inbound_sms.txt"), Body=text, From=phone, MessageSid=sid,
                         SmsMessageSid=sid, SmsSid=sid)
        return self._signed(url, "/webhooks/twilio", pairs, sid)

    def delivered(self, url: str, sent: Sent) -> Request:
        pairs = _replace(_captured_form("twilio/status_delivered.txt"), MessageSid=sent.message_id)
        return self._signed(url, "/webhooks/twilio/status", pairs, sent.message_id)


class TelnyxCaptured(Captured):
    sender, phone = "+18445550001", "+18665550001"  # tests/data/providers/telnyx/inbound_sms.json

    def __init__(self) -> None:
        self.driver = TelnyxDriver()

    def _signed(self, path: str, document: dict[str, Any], message_id: str) -> Request:
        body = json.dumps(document).encode()
        return Request(path, self.driver.keys.headers(body), body, message_id)  # type: ignore[attr-defined]

    def inbound(self, url: str, *, phone: str, text: str) -> Request:
        document = _captured_json("telnyx/inbound_sms.json")
        data = document["data"]
        data["id"] = str(uuid.uuid4())
        payload = data["payload"]
        payload.update(id=str(uuid.uuid4()), text=text)
        payload["from"]["phone_number"] = phone
        return self._signed("/webhooks/telnyx", document, payload["id"])

    def delivered(self, url: str, sent: Sent) -> Request:
        document = _captured_json("telnyx/finalized_delivered.json")
        data = document["data"]
        data["id"] = str(uuid.uuid4())
        payload = data["payload"]
        payload.update(id=sent.message_id, text=sent.text)
        payload["from"]["phone_number"] = sent.from_
        payload["to"][0]["phone_number"] = sent.to
        return self._signed("/webhooks/telnyx/status", document, sent.message_id)


class PlivoCaptured(Captured):
    sender, phone = "+4759440448", "+4795961111"  # tests/data/providers/plivo/inbound_sms.txt (To, From)

    def __init__(self) -> None:
        self.driver = PlivoDriver()

    @staticmethod
    def _signed(url: str, path: str, pairs: list[tuple[str, str]], message_id: str) -> Request:
        return Request(path, plivo_headers(url + path, pairs), urlencode(pairs).encode(), message_id)

    def inbound(self, url: str, *, phone: str, text: str) -> Request:
        message_id = str(uuid.uuid1())
        pairs = _replace(_captured_form("plivo/inbound_sms.txt"), Text=text, From=wire_number(phone),
                         MessageUUID=message_id)
        return self._signed(url, "/webhooks/plivo", pairs, message_id)

    def delivered(self, url: str, sent: Sent) -> Request:
        pairs = _replace(_captured_form("plivo/status_delivered.txt"), MessageUUID=sent.message_id,
                         ParentMessageUUID=sent.message_id, To=wire_number(sent.to),
                         From=wire_number(sent.from_ or ""))
        return self._signed(url, "/webhooks/plivo/status", pairs, sent.message_id)


class VonageCaptured(Captured):
    sender, phone = "+447700900000", "+447700900001"  # tests/data/providers/vonage/inbound_sms.json

    def __init__(self) -> None:
        self.driver = VonageDriver()

    def _signed(self, path: str, document: dict[str, Any], message_id: str) -> Request:
        body = json.dumps(document).encode()
        headers = {**self.driver.keys.webhook_headers(body), "content-type": "application/json"}  # type: ignore[attr-defined]
        return Request(path, headers, body, message_id)

    def inbound(self, url: str, *, phone: str, text: str) -> Request:
        document = _captured_json("vonage/inbound_sms.json")
        document.update(message_uuid=str(uuid.uuid4()), text=text, **{"from": wire_number(phone)})
        return self._signed("/webhooks/vonage", document, document["message_uuid"])

    def delivered(self, url: str, sent: Sent) -> Request:
        document = _captured_json("vonage/status_delivered.json")
        document.update(message_uuid=sent.message_id, to=wire_number(sent.to),
                        **{"from": wire_number(sent.from_ or "")})
        return self._signed("/webhooks/vonage/status", document, sent.message_id)


PROVIDERS: dict[str, Callable[[], Captured]] = {
    "twilio": TwilioCaptured, "telnyx": TelnyxCaptured, "plivo": PlivoCaptured, "vonage": VonageCaptured,
}
ENGINES = ("sqlite", "postgresql")


# --- one deployment ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def empty_database(engine: str, folder: Path) -> Iterator[str]:
    """An empty database of `engine` (not migrated: `optline migrate` does that); dropped afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{folder / 'optline.db'}"
        return
    if not PG_URL:
        pytest.skip("OPTLINE_TEST_DATABASE_URL is not set")
    name = f"optline_deployed_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class Deployed:
    """`optline serve` for one provider on one database, with the provider's fake, and looks at its state."""

    def __init__(self, captured: Captured, database_url: str, folder: Path) -> None:
        self.captured = captured
        self.driver = captured.driver
        self.database_url = database_url
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "serve.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.engine = sa.create_engine(database_url)
        self.http = httpx.Client(timeout=15.0)

    def environment(self) -> dict[str, str]:
        """What a user sets: the documented variables for this provider, and no OPTLINE_LOG_LEVEL."""
        keywords_path = self.folder / "keywords.yaml"
        keywords_path.write_text(yaml.safe_dump(keywords(self.captured.sender), sort_keys=False))
        return {
            "OPTLINE_DATABASE_URL": self.database_url,
            "OPTLINE_KEYWORDS": str(keywords_path),
            "OPTLINE_PUBLIC_URL": self.url,
            "OPTLINE_PROVIDERS": self.driver.name,
            **self.driver.settings(),  # credentials, webhook secret, API URL pointed at the fake
            "OPTLINE_SPOOL_DIR": str(self.folder / "spool"),
            "OPTLINE_RUN_DIR": str(self.folder / "run"),
            "OPTLINE_SECRET_KEY": "deployed-suite-secret-key-0123456789abcdef",
        }

    def _process_env(self) -> dict[str, str]:
        # Nothing of the test's own environment but what any process needs to run.
        base = {key: os.environ[key] for key in ("PATH", "LANG", "TZ") if key in os.environ}
        return {**base, "HOME": str(self.folder), **self.environment()}

    def start(self) -> None:
        self.driver.start()
        env = self._process_env()
        migrated = subprocess.run([str(OPTLINE), "migrate"], env=env, cwd=self.folder, capture_output=True,
                                  text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert migrated.returncode == 0, f"optline migrate: {migrated.stdout}\n{migrated.stderr}"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen([str(OPTLINE), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                          env=env, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if self.popen.poll() is not None:
                raise AssertionError(f"optline serve exited {self.popen.returncode}\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if self.http.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"optline serve not ready after {READY_SECONDS}s\n{self.log()}")
            time.sleep(0.1)

    def close(self) -> None:
        self.http.close()  # no keep-alive connection left for the server to wait on
        try:
            if self.popen is not None and self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(timeout=10)
        finally:
            self.engine.dispose()
            self.driver.close()

    # --- talking to it ------------------------------------------------------------------------

    def post(self, request: Request) -> httpx.Response:
        return self.http.post(self.url + request.path, content=request.body, headers=request.headers)

    def sent(self, phone: str) -> list[Sent]:
        return [sent for sent in self.driver.sent() if sent.to == phone]

    def text(self, phone: str, body: str) -> tuple[Request, Sent]:
        """Text `body` from `phone`: checks the 200, waits for the one reply the fake receives for it."""
        before = len(self.sent(phone))
        request = self.captured.inbound(self.url, phone=phone, text=body)
        response = self.post(request)
        assert response.status_code == 200, f"{body!r}: {response.status_code} {response.text}\n{self.log()}"
        deadline = time.monotonic() + REPLY_SECONDS
        while len(self.sent(phone)) <= before:
            assert time.monotonic() < deadline, f"no reply to {body!r} within {REPLY_SECONDS}s\n{self.log()}"
            time.sleep(0.05)
        replies = self.sent(phone)[before:]
        assert len(replies) == 1, replies
        self.wait_recorded(replies[0].message_id)
        return request, replies[0]

    def wait_recorded(self, message_id: str) -> None:
        """Wait until the sender recorded the provider's id on the reply's row (it does so once the fake answered)."""
        deadline = time.monotonic() + REPLY_SECONDS
        while not self.rows("SELECT 1 FROM outbox WHERE provider_message_id = :m", m=message_id):
            assert time.monotonic() < deadline, f"the reply {message_id} was never recorded\n{self.log()}"
            time.sleep(0.02)

    # --- its state ------------------------------------------------------------------------------

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params).all())

    def inbound(self, message_id: str) -> Any:
        [row] = self.rows("SELECT provider, brand, program, kind, from_phone, channel, body FROM inbound_messages"
                          " WHERE message_id = :m", m=message_id)
        return row

    def status(self, phone: str) -> str | None:
        rows = self.rows("SELECT status FROM subscriptions WHERE brand = 'shop' AND program = 'alerts'"
                         " AND phone = :p", p=phone)
        return rows[0].status if rows else None

    def consent(self, phone: str) -> list[tuple[str, str, str | None]]:
        return [(row.to_status, row.source, row.provider_message_id) for row in self.rows(
            "SELECT to_status, source, provider_message_id FROM consent_events WHERE phone = :p ORDER BY id",
            p=phone)]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def log_problems(self) -> list[str]:
        """Lines of the server's log at ERROR or above, and any traceback."""
        problems = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            level = str(record.get("level", "")).upper() if isinstance(record, dict) else ""
            if level in ("ERROR", "CRITICAL") or "Traceback" in line or (record is None and "ERROR" in line):
                problems.append(line)
        return problems

    def info_lines(self) -> int:
        """How many INFO records the server logged (the default level shows them)."""
        count = 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                count += isinstance(record, dict) and str(record.get("level", "")).upper() == "INFO"
        return count


@pytest.fixture(scope="module", params=[(p, e) for p in PROVIDERS for e in ENGINES],
                ids=[f"{p}-{e}" for p in PROVIDERS for e in ENGINES])
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    provider, engine = request.param
    folder = tmp_path_factory.mktemp(f"deployed-{provider}-{engine}")
    with empty_database(engine, folder) as url:
        deployment = Deployed(PROVIDERS[provider](), url, folder)
        try:
            deployment.start()
            yield deployment
        finally:
            deployment.close()


def other_phone(phone: str, digit: int) -> str:
    """`phone` with its last digit changed: another subscriber of the same country and range."""
    return phone[:-1] + str((int(phone[-1]) + digit) % 10)


# --- the cases -----------------------------------------------------------------------------------


def test_environment_is_only_what_the_docs_name(deployed: Deployed) -> None:
    documented = (PROJECT_ROOT / "README.md").read_text() + (PROJECT_ROOT / "docs" / "providers.md").read_text()
    for name in deployed.environment():
        assert re.search(rf"\b{name}\b", documented) or name.startswith(f"OPTLINE_{deployed.driver.name.upper()}_API"), name
    assert "OPTLINE_LOG_LEVEL" not in deployed.environment()


def test_join_yes_stop(deployed: Deployed) -> None:
    phone = deployed.captured.phone
    sender = deployed.captured.sender

    join, prompt = deployed.text(phone, "JOIN")
    assert tuple(deployed.inbound(join.message_id)) == (
        deployed.driver.name, "shop", "alerts", "join", phone, "sms", "JOIN")
    assert deployed.status(phone) == "pendingDOI"
    assert deployed.consent(phone) == [("pendingDOI", "sms", join.message_id)]
    assert (prompt.text, prompt.from_) == (PROGRAM_MESSAGES["doi_prompt"], sender)

    yes, welcome = deployed.text(phone, "YES")
    assert deployed.inbound(yes.message_id).kind == "confirm"
    assert deployed.status(phone) == "subscribed"
    assert deployed.consent(phone)[1:] == [("subscribed", "sms", yes.message_id)]
    assert (welcome.text, welcome.from_) == (PROGRAM_MESSAGES["welcome"], sender)

    stop, goodbye = deployed.text(phone, "STOP")
    assert deployed.inbound(stop.message_id).kind == "stop"
    assert deployed.status(phone) == "unsubscribed"
    assert deployed.consent(phone)[2:] == [("unsubscribed", "sms", stop.message_id)]
    assert (goodbye.text, goodbye.from_) == (PROGRAM_MESSAGES["stop"], sender)

    assert deployed.log_problems() == []
    assert deployed.info_lines() > 0  # the default level: a server quiet at INFO would hide what issue 16 found


def test_a_delivery_report_reaches_the_reply(deployed: Deployed) -> None:
    phone = other_phone(deployed.captured.phone, 1)
    _join, prompt = deployed.text(phone, "JOIN")
    response = deployed.post(deployed.captured.delivered(deployed.url, prompt))
    assert response.status_code == 200, response.text
    assert [tuple(row) for row in deployed.rows("SELECT status, purpose FROM outbox WHERE provider_message_id = :m",
                                                m=prompt.message_id)] == [("delivered", "doi_prompt")]
    assert [row.status for row in deployed.rows("SELECT status FROM delivery_reports WHERE message_id = :m",
                                                 m=prompt.message_id)] == ["delivered"]
    assert deployed.log_problems() == []


def test_a_retried_webhook_changes_nothing(deployed: Deployed) -> None:
    phone = other_phone(deployed.captured.phone, 2)
    join, _prompt = deployed.text(phone, "JOIN")
    counts = [deployed.rows(f"SELECT count(*) FROM {table}")[0][0]
              for table in ("inbound_messages", "consent_events", "outbox")]
    again = deployed.post(join)  # the provider retries the same signed request
    assert again.status_code == 200, again.text
    assert [deployed.rows(f"SELECT count(*) FROM {table}")[0][0]
            for table in ("inbound_messages", "consent_events", "outbox")] == counts

    assert len(deployed.sent(phone)) == 1
    assert deployed.log_problems() == []


# --- what only one provider does, on the deployed server ----------------------------------------


def subscribed(deployed: Deployed, phone: str) -> None:
    deployed.text(phone, "JOIN")
    deployed.text(phone, "YES")
    assert deployed.status(phone) == "subscribed"


def twilio_whatsapp_user_id(deployed: Deployed) -> None:
    """A WhatsApp STOP from a business-scoped user id alone ends the phone it was seen with (was 400)."""
    phone = other_phone(deployed.captured.phone, 3)
    subscribed(deployed, phone)
    url = deployed.url + "/webhooks/twilio"
    for name, body in (("twilio/whatsapp_phone_and_bsuid.txt", "hi"), ("twilio/whatsapp_bsuid_only.txt", "STOP")):
        sid = "SM" + uuid.uuid4().hex
        pairs = _replace(_captured_form(name), Body=body, MessageSid=sid, SmsMessageSid=sid, SmsSid=sid,
                         **({"From": f"whatsapp:{phone}"} if "phone_and" in name else {}))
        response = deployed.http.post(url, content=urlencode(pairs).encode(),
                                      headers={"x-twilio-signature": sign_twilio(url, pairs), "content-type": FORM})
        assert response.status_code == 200, response.text
    assert deployed.status(phone) == "unsubscribed"
    assert deployed.consent(phone)[-1] == ("unsubscribed", "whatsapp", sid)


def telnyx_own_opt_out(deployed: Deployed) -> None:
    """Telnyx's own STOP classification (autoresponse_type): a carrier opt-out, and no reply of ours."""
    phone = other_phone(deployed.captured.phone, 3)
    subscribed(deployed, phone)
    sent = len(deployed.sent(phone))
    document = _captured_json("telnyx/inbound_stop_autoresponse.json")
    payload = document["data"]["payload"]
    payload["id"] = str(uuid.uuid4())
    payload["from"]["phone_number"] = phone
    payload["to"][0]["phone_number"] = deployed.captured.sender
    body = json.dumps(document).encode()
    response = deployed.http.post(deployed.url + "/webhooks/telnyx", content=body,
                                  headers=deployed.driver.keys.headers(body))  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    assert deployed.status(phone) == "unsubscribed"
    assert deployed.consent(phone)[-1][:2] == ("unsubscribed", "carrier")
    assert len(deployed.sent(phone)) == sent


def plivo_v2_and_parts(deployed: Deployed) -> None:
    """A V2-signed callback is taken (was 403), and a long text is delivered when its last part is."""
    phone = other_phone(deployed.captured.phone, 3)
    url = deployed.url + "/webhooks/plivo"
    message_id = str(uuid.uuid1())
    pairs = _replace(_captured_form("plivo/inbound_sms.txt"), Text="JOIN", From=wire_number(phone),
                     MessageUUID=message_id)
    nonce = uuid.uuid4().hex
    signature = base64.b64encode(hmac.new(PLIVO_TOKEN.encode(), (url + nonce).encode(), hashlib.sha256).digest())
    response = deployed.http.post(url, content=urlencode(pairs).encode(), headers={
        "x-plivo-signature-v2": signature.decode(), "x-plivo-signature-v2-nonce": nonce, "content-type": FORM})
    assert response.status_code == 200, response.text
    assert deployed.inbound(message_id).kind == "join"
    deadline = time.monotonic() + REPLY_SECONDS
    while not deployed.sent(phone):
        assert time.monotonic() < deadline, deployed.log()
        time.sleep(0.05)
    [prompt] = deployed.sent(phone)
    deployed.wait_recorded(prompt.message_id)
    for part in (2, 1):
        pairs = _replace(_captured_form("plivo/status_delivered.txt"), ParentMessageUUID=prompt.message_id,
                         MessageUUID=prompt.message_id if part == 1 else str(uuid.uuid1()), PartInfo=f"{part} of 2",
                         To=wire_number(prompt.to), From=wire_number(prompt.from_ or ""))
        request = PlivoCaptured._signed(deployed.url, "/webhooks/plivo/status", pairs, prompt.message_id)
        assert deployed.post(request).status_code == 200
        status = deployed.rows("SELECT status FROM outbox WHERE provider_message_id = :m", m=prompt.message_id)[0][0]
        assert status == ("delivered" if part == 1 else "queued"), part


def vonage_sms_api(deployed: Deployed) -> None:
    """An account still on the SMS API is told, in the answer and the log, to switch (was 403/405)."""
    # nyaruka/courier handlers/nexmo/handler_test.go: the SMS API's GET of an inbound text.
    response = deployed.http.get(deployed.url + "/webhooks/vonage?to=2020&msisdn=2349067554729&text=Join"
                                 "&messageId=external1")
    assert response.status_code == 400
    assert "Messages API" in response.json()["detail"]
    assert any("webhook refused (400)" in line and "Messages API" in line
               for line in deployed.log_path.read_text().splitlines())


SPECIFICS: dict[str, Callable[[Deployed], None]] = {
    "twilio": twilio_whatsapp_user_id, "telnyx": telnyx_own_opt_out, "plivo": plivo_v2_and_parts,
    "vonage": vonage_sms_api,
}


def test_what_only_this_provider_does(deployed: Deployed) -> None:
    SPECIFICS[deployed.driver.name](deployed)
    assert deployed.log_problems() == []
