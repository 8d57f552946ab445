"""The console's printable evidence pack in a real headless Chromium, on screen and as printed.

A real `optline serve` on SQLite; ZOE texts JOIN, YES and STOP (each reply delivered, as
Twilio's status callbacks report it) and is opted into a second program through the API
with an IP address and a form URL as proof. The page must show every text, receipt and
proof, and print one program to a sheet without the console's navigation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from app.migrate import upgrade
from tests.fake_twilio import FakeTwilio, sign_twilio, twilio_status_params
from tests.scenario_support import Proc, Processes, post_text, wait_until
from tests.test_console_browser import (  # noqa: F401 - browser: the fixture, shared
    CHROMIUM, EMAIL, PASSWORD, browser, screenshot_on_failure, sign_in,
)

ZOE = "+14155550213"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set OPTLINE_CHROMIUM)"),
]


def _deliver_all(client: httpx.Client, base: str, fake: FakeTwilio) -> None:
    url = base + "/webhooks/twilio/status"
    for message in fake.messages(to=ZOE):
        params = twilio_status_params(message.sid, "delivered")
        response = client.post(url, data=params, headers={"X-Twilio-Signature": sign_twilio(url, params)})
        assert response.status_code in (200, 204), response.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp_path = tmp_path_factory.mktemp("evidence-server")
    url = f"sqlite:///{tmp_path / 'optline.db'}"
    upgrade(url)
    with FakeTwilio() as fake:
        procs = Processes(database_url=url, fake=fake, workdir=tmp_path,
                          extra_env={"OPTLINE_SECRET_KEY_FILE": str(tmp_path / "secret.key")})
        try:
            def cli(*args: str, stdin: str = "") -> str:
                done = subprocess.run([sys.executable, "-m", "app.cli", *args], input=stdin, capture_output=True,
                                      env=procs.env(OPTLINE_PROVIDER="console"), cwd=tmp_path, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
                return done.stdout

            cli("users", "create", "--brand", "acme", "--email", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
            key = cli("keys", "create", "--brand", "acme").strip().splitlines()[-1]
            proc = procs.serve("serve", inprocess_worker=True)
            with httpx.Client() as client:
                for sent, text in enumerate(["JOIN", "YES", "STOP"], start=1):
                    if text == "STOP":
                        consented = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
                        response = client.post(proc.base_url + "/v1/subscriptions/opt-in", headers={"x-api-key": key},
                                               json={"phoneNumber": ZOE, "program": "news", "consentSource": "web",
                                                     "consentedAt": consented, "consentProof": {
                                                         "sourceText": "Send me the news", "ip": "203.0.113.7",
                                                         "formUrl": "https://acme.example/signup"}})
                        assert response.status_code == 200, response.text
                        wait_until(lambda: len(fake.messages(to=ZOE)) == sent, timeout=20, what="the welcome",
                                   detail=procs.logs)
                        sent += 1
                    assert post_text(client, proc.base_url, text, from_=ZOE).status_code == 200
                    wait_until(lambda: len(fake.messages(to=ZOE)) == sent, timeout=20,  # noqa: B023
                               what=f"the reply to {text}", detail=procs.logs)
                _deliver_all(client, proc.base_url, fake)
            yield proc
        finally:
            procs.close()
            print(procs.logs())


def test_the_evidence_page_shows_every_proof_and_prints_one_program_a_sheet(
        server: Proc, browser: Any, tmp_path: Path) -> None:
    base = server.base_url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    with screenshot_on_failure(page, tmp_path / "evidence-failure.png"):
        sign_in(page, base)
        page.goto(f"{base}/console/phones/{ZOE.replace('+', '%2B')}/evidence")
        assert page.get_by_role("heading", level=1).inner_text() == f"Evidence of consent: {ZOE}"
        assert page.locator("#verification").inner_text().startswith("Intact: 5 events link one to the next")
        sections = page.locator("section.program")
        assert sections.count() == 2
        deals = sections.nth(0)
        assert deals.get_by_role("heading", level=2).inner_text() == "ACME Deals (deals)"
        assert deals.locator("li.event").evaluate_all("els => els.map(e => e.dataset.event)") == [
            "join", "confirm", "stop"]
        text = deals.inner_text()
        for received in ("“JOIN”", "“YES”", "“STOP”"):
            assert received in text or received.strip("“”") in text
        assert text.count("receipt delivered") == 3  # the prompt, the welcome and the stop reply
        assert "you're in!" in text and "reply YES to confirm" in text and "unsubscribed" in text
        assert "twilio id" in text and "Why" in text
        news = sections.nth(1).inner_text()
        assert "ip: 203.0.113.7" in news and "formUrl: https://acme.example/signup" in news
        assert "source web" in news
        assert page.locator("header.top").is_visible()

        # Printed: no console chrome, and each program starts its own sheet.
        page.emulate_media(media="print")
        assert not page.locator("header.top").is_visible()
        assert not page.locator("p.no-print").is_visible()
        breaks = sections.evaluate_all("els => els.map(e => getComputedStyle(e).breakBefore)")
        assert breaks == ["page", "page"]
        if os.environ.get("OPTLINE_KEEP_SCREENSHOTS"):
            page.screenshot(path=str(tmp_path / "evidence-print.png"), full_page=True)
            print(f"printed layout: {tmp_path / 'evidence-print.png'}")
        pdf = page.pdf(format="A4")
        pages = len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))
        assert pages == 3, pages  # the summary, then one sheet a program
        page.emulate_media(media="screen")
        assert sections.evaluate_all("els => els.map(e => getComputedStyle(e).breakBefore)") == ["auto", "auto"]

        # A number that is none: a clear 400 page, not a 500.
        response = page.goto(f"{base}/console/phones/not-a-phone/evidence")
        assert response is not None and response.status == 400
    context.close()
