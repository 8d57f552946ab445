"""One optline deployment for the contract suite: a brand per driver, each on its provider's fake.

`Deployment(drivers, database_url, tmp_path, clock)` writes a keywords.yaml with one brand
per driver (brand key = provider name), whose two programs share the driver's sender
`{id: <driver.sender>, provider: <driver.name>, rate: TEST_RATE}` (every conversation with a
driver goes through that one sender, which would send 3 texts a second by default); enables
every driver's provider (OPTLINE_PROVIDERS, in the order given) with the settings that point
it at its fake; and runs the real app (lifespan, in-process outbox sender) under starlette's
TestClient on the given database. Replies are read back from each driver's fake, state from
the database.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import TEST_RATE, FakeClock
from tests.contract.driver import Driver, Sent, Webhook

PUBLIC_URL = "https://optline.example.test"
HELP_CONTACT = "help@{brand}.example"

# Every brand's replies; {program} and {brand} are the names below, so a reply names its brand.
PROGRAM_MESSAGES = {
    "doi_prompt": "{program}: reply YES to confirm. Msg&data rates may apply. Reply HELP for help, STOP to cancel.",
    "welcome": "{program}: you're in! Reply STOP to cancel.",
    "stop": "{program}: you're unsubscribed. Help: {help_contact}",
    "help": "{program}. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel.",
}
BRAND_MESSAGES = {
    "stop": "{brand}: you are unsubscribed from all texts. Help: {help_contact}",
    "help": "{brand} texts. Help: {help_contact}. Msg&data rates may apply. Reply STOP to cancel.",
}
PROGRAMS = {"alerts": "JOIN", "news": "NEWS"}  # program key → its join keyword


def brand_name(driver: Driver) -> str:
    return f"{driver.name.capitalize()} Shop"


def program_name(driver: Driver, program: str) -> str:
    return f"{brand_name(driver)} {program.capitalize()}"


def reply_text(driver: Driver, kind: str, program: str | None = "alerts") -> str:
    """The reply `kind` of `program` of the driver's brand (the brand-level one when `program` is None)."""
    template = BRAND_MESSAGES[kind] if program is None else PROGRAM_MESSAGES[kind]
    return template.format(brand=brand_name(driver), help_contact=HELP_CONTACT.format(brand=driver.name),
                           program=program_name(driver, program or ""))


def keywords(drivers: Sequence[Driver]) -> dict[str, Any]:
    """keywords.yaml: one brand per driver, its programs on the driver's sender, routed to its provider."""
    brands = {}
    for driver in drivers:
        programs = {
            key: {
                "name": program_name(driver, key),
                "senders": [{"id": driver.sender, "provider": driver.name, "rate": TEST_RATE}],
                "keywords": {"join": [join]},
                "messages": dict(PROGRAM_MESSAGES),
            }
            for key, join in PROGRAMS.items()
        }
        brands[driver.name] = {
            "name": brand_name(driver), "help_contact": HELP_CONTACT.format(brand=driver.name), "language": "en",
            "default_region": "US", "allowed_countries": ["US"], "messages": dict(BRAND_MESSAGES),
            "programs": programs,
        }
    return {"version": 1, "defaults": {"double_opt_in": True, "keywords": {"confirm": ["YES"]}}, "brands": brands}


class Deployment:
    """optline running with every given driver's provider enabled, on one database."""

    def __init__(self, drivers: Sequence[Driver], *, database_url: str, tmp_path: Path, clock: FakeClock) -> None:
        self.drivers = list(drivers)
        self.clock = clock
        tmp_path.mkdir(parents=True, exist_ok=True)
        path = tmp_path / "keywords.yaml"
        path.write_text(yaml.safe_dump(keywords(self.drivers), sort_keys=False, allow_unicode=True))
        self._stack = contextlib.ExitStack()
        env: dict[str, Any] = {}
        for driver in self.drivers:
            driver.public_url = PUBLIC_URL
            driver.start()
            self._stack.callback(driver.close)
            env.update(driver.settings())
        env.update({
            "OPTLINE_DATABASE_URL": database_url, "OPTLINE_KEYWORDS": str(path), "OPTLINE_PUBLIC_URL": PUBLIC_URL,
            "OPTLINE_PROVIDERS": ",".join(driver.name for driver in self.drivers),
            "OPTLINE_POLL_SECONDS": 0.05, "OPTLINE_RETRY_BASE_SECONDS": 0.05, "OPTLINE_RETRY_CAP_SECONDS": 0.2,
            "OPTLINE_LEASE_SECONDS": 30.0, "OPTLINE_SPOOL_DIR": str(tmp_path / "spool"),
            "OPTLINE_RUN_DIR": str(tmp_path / "run"), "OPTLINE_SECRET_KEY": "contract-suite-secret-key-0123456789abcdef",
        })
        self.settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
        self.client = TestClient(create_app(self.settings, clock=clock), raise_server_exceptions=False)
        try:
            self._stack.enter_context(self.client)
        except BaseException:
            self._stack.close()
            raise

    def close(self) -> None:
        """Stop the app, then the fakes."""
        self._stack.close()

    # --- talking to it ------------------------------------------------------------------------

    def post(self, webhook: Webhook) -> Any:
        """POST `webhook` as the provider would."""
        return self.client.post(webhook.path, content=webhook.body, headers=dict(webhook.headers))

    def text(self, driver: Driver, phone: str, body: str) -> list[Sent]:
        """Text `body` from `phone` to the driver's sender; the replies to `phone` its fake received for it."""
        before = len(self.sent(driver, phone))
        response = self.post(driver.inbound(phone, driver.sender, body))
        assert response.status_code == 200, f"{driver.name} inbound {body!r}: {response.status_code} {response.text}"
        self.drain()
        return self.sent(driver, phone)[before:]

    @staticmethod
    def sent(driver: Driver, phone: str) -> list[Sent]:
        """The texts to `phone` the driver's fake accepted, oldest first."""
        return [sent for sent in driver.sent() if sent.to == phone]

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until no outbox row is due or being sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.count("outbox WHERE status IN ('pending', 'sending', 'dispatching')"):
                return
            time.sleep(0.01)
        raise AssertionError(f"outbox did not drain: {self.query('SELECT id, status, error_reason FROM outbox')}")

    # --- reading its state --------------------------------------------------------------------

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.client.app.state.optline.reader.connect() as conn:  # type: ignore[attr-defined]
            return list(conn.execute(sa.text(sql), params).all())

    def count(self, table_and_where: str, **params: Any) -> int:
        return int(self.query(f"SELECT count(*) FROM {table_and_where}", **params)[0][0])

    def subs(self, phone: str, brand: str) -> dict[str, str]:
        """program → status of `phone`'s subscriptions in `brand`."""
        rows = self.query("SELECT program, status FROM subscriptions WHERE phone = :p AND brand = :b", p=phone, b=brand)
        return {row.program: row.status for row in rows}

    def consent(self, phone: str, brand: str) -> list[tuple[str, str, str, str]]:
        """(program, event, to_status, source) of `phone`'s consent events in `brand`, oldest first."""
        rows = self.query("SELECT program, event, to_status, source FROM consent_events WHERE phone = :p AND brand = :b"
                          " ORDER BY id", p=phone, b=brand)
        return [(row.program, row.event, row.to_status, row.source) for row in rows]

    def outbox_status(self, message_id: str) -> str:
        """The status of the outbox row the provider knows as `message_id`."""
        rows = self.query("SELECT status FROM outbox WHERE provider_message_id = :m", m=message_id)
        assert len(rows) == 1, f"outbox rows for {message_id}: {rows}"
        return str(rows[0].status)

    def stored(self) -> dict[str, int]:
        """How many rows each table a webhook writes holds (compare before and after a request)."""
        return {table: self.count(table) for table in ("inbound_messages", "outbox", "consent_events",
                                                       "subscriptions", "delivery_reports")}
