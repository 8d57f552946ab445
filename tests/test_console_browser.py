"""The console in a real headless Chromium (Debian's `chromium`, driven by Playwright).

A real `optline serve` on SQLite, a user made with the CLI, texts posted the way Twilio
posts them; then a person's path through the console: sign in, read the counts, follow a
phone's timeline, filter the ledger, download the CSV, create and revoke a key, and the
same pages at a phone's width. On failure a screenshot is kept under the test's tmp_path.

Needs `apt-get install -y chromium` (Playwright's own browser downloads are never used).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from app.console.queries import LEDGER_COLUMNS
from app.migrate import upgrade
from tests.fake_twilio import FakeTwilio
from tests.scenario_support import Proc, Processes, post_text, wait_until

CHROMIUM = os.environ.get("OPTLINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EMAIL, PASSWORD = "ada@acme.example", "correct horse battery staple"
ADA, BOB, ZOE = "+14155550201", "+14155550202", "+14155550203"
PHONE_VIEWPORT = {"width": 375, "height": 740}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set OPTLINE_CHROMIUM)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Processes]]:
    """`optline serve` on a new SQLite database, with a console user made by `optline users create`.

    Shared by this module's tests (they only read, but for the key each makes its own).
    """
    tmp_path = tmp_path_factory.mktemp("console-server")
    url = f"sqlite:///{tmp_path / 'optline.db'}"
    upgrade(url)
    with FakeTwilio() as fake:
        procs = Processes(database_url=url, fake=fake, workdir=tmp_path,
                          extra_env={"OPTLINE_SECRET_KEY_FILE": str(tmp_path / "secret.key")})
        try:
            created = subprocess.run(
                [sys.executable, "-m", "app.cli", "users", "create", "--brand", "acme", "--email", EMAIL,
                 "--role", "owner", "--password-stdin"], input=PASSWORD + "\n", env=procs.env(OPTLINE_PROVIDER="console"), cwd=tmp_path,
                capture_output=True, text=True, timeout=60)
            assert created.returncode == 0, created.stderr
            assert created.stdout.strip() == f"created console user {EMAIL} (owner) for brand acme"
            proc = procs.serve("serve", inprocess_worker=True)
            with httpx.Client() as client:
                for phone, texts in ((ADA, ["JOIN", "YES"]), (BOB, ["JOIN"]), (ZOE, ["JOIN", "YES", "STOP"])):
                    for sent, text in enumerate(texts, start=1):
                        assert post_text(client, proc.base_url, text, from_=phone).status_code == 200
                        # Each reply out before the next text: a welcome still queued when a STOP lands is cancelled.
                        wait_until(lambda: len(fake.messages(to=phone)) == sent, timeout=20,  # noqa: B023
                                   what=f"the reply to {text} from {phone}", detail=procs.logs)
            yield proc, procs
        finally:
            procs.close()
            print(procs.logs())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def screenshot_on_failure(page: Any, path: Path) -> Iterator[None]:
    """Keep what the browser showed when an assertion failed."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of the failure: {path}")
        raise


def sign_in(page: Any, base_url: str) -> None:
    page.goto(base_url + "/console/")
    assert page.url.startswith(base_url + "/console/login")
    page.get_by_label("Email", exact=True).fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base_url + "/console/programs")


def unlabelled_fields(page: Any) -> list[str]:
    """Visible form fields a screen reader could not name."""
    return page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
        .map(el => el.outerHTML)""")


def test_a_person_uses_the_console(server: tuple[Proc, Processes], browser: Any, tmp_path: Path) -> None:
    proc, _procs = server
    base = proc.base_url
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((base, "data:")) else elsewhere.append(r.url))
    with screenshot_on_failure(page, tmp_path / "console-failure.png"):
        sign_in(page, base)
        nav = page.get_by_role("navigation", name="Console")

        # Programs: counts per status, and the month's chart.
        deals = page.locator('tr[data-program="deals"]')
        counts = {s: deals.locator(f'td[data-status="{s}"]').inner_text()
                  for s in ("none", "pendingDOI", "subscribed", "unsubscribed")}
        assert counts == {"none": "0", "pendingDOI": "1", "subscribed": "1", "unsubscribed": "1"}
        assert page.locator("#total-joins").inner_text() == "2"
        assert page.locator("#total-optouts").inner_text() == "1"
        assert page.locator("svg rect.joins").count() == 30
        assert unlabelled_fields(page) == []
        if os.environ.get("OPTLINE_KEEP_SCREENSHOTS"):
            page.screenshot(path=str(tmp_path / "programs.png"), full_page=True)

        # A phone's timeline, the number typed as people type it.
        nav.get_by_role("link", name="Phone").click()
        page.get_by_label("Phone number", exact=True).fill("(415) 555-0203")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**/console/phones/*")
        assert page.get_by_role("heading", level=1).inner_text() == f"Phone {ZOE}"
        kinds = page.locator("ol.timeline > li").evaluate_all("items => items.map(i => i.dataset.kind)")
        assert kinds == list(reversed(["inbound", "consent", "outbound", "inbound", "consent", "outbound",
                                       "inbound", "consent", "consent", "outbound"]))  # newest first
        assert "pendingDOI → subscribed" in page.locator("ol.timeline").inner_text()
        header = page.locator('#phone-header li[data-program="deals"]')
        assert header.locator('[data-field="status"]').inner_text() == "unsubscribed"
        assert "keyword JOIN" in header.locator('[data-field="how"]').inner_text()
        assert "by sms (stop)" in header.locator('[data-field="opt-out"]').inner_text()
        assert page.locator("#evidence-link").get_attribute("href").endswith("/evidence")

        # The ledger, filtered by event, and its CSV.
        nav.get_by_role("link", name="Consent ledger").click()
        page.get_by_label("Event", exact=True).select_option("stop")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**/console/ledger?*event=stop*")
        rows = page.locator("table.ledger tbody tr")
        assert rows.count() == 2
        assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.event)")) == {"stop"}
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download CSV").click()
        download = download_info.value
        assert download.suggested_filename.startswith("consent-acme-")
        table = list(csv.reader(io.StringIO(Path(download.path()).read_text())))
        assert table[0] == list(LEDGER_COLUMNS)
        assert [(r[LEDGER_COLUMNS.index("event")], r[LEDGER_COLUMNS.index("phone")]) for r in table[1:]] == [
            ("stop", ZOE), ("stop", ZOE)]

        # The keyword playground: what a STOP from a subscriber would do, and nothing is stored.
        nav.get_by_role("link", name="Playground").click()
        page.get_by_label("Text", exact=True).fill("Stop")
        page.get_by_label("From phone", exact=True).fill("(415) 555-0201")
        page.get_by_role("button", name="Try it").click()
        assert page.locator('[data-fact="normalized"]').inner_text() == "stop"
        assert page.locator('[data-fact="matched"]').inner_text().startswith("stop by keyword")
        assert page.locator("table.transitions tbody tr").first.inner_text().split("\t")[:4] == [
            "deals", "stop", "subscribed", "unsubscribed"]
        assert unlabelled_fields(page) == []

        # A flagged text (a negated stop from ADA, still subscribed after the playground) treated as an opt-out.
        with httpx.Client() as client:
            assert post_text(client, base, "don't stop the deals!!", from_=ADA).status_code == 200
        nav.get_by_role("link", name="Flagged texts").click()
        assert page.locator("ul.flagged > li").count() == 1
        assert page.locator("ul.flagged [data-field=why]").inner_text()
        page.get_by_role("button", name=f"Treat the text from {ADA} as an opt-out").click()
        assert f"{ADA} is unsubscribed from every program" in page.locator("#consequences").inner_text()
        page.get_by_label("Reason (kept in the consent ledger)").fill("asked us by email")
        page.get_by_role("button", name=f"Opt {ADA} out").click()
        page.wait_for_url("**/console/flagged?resolved=opted_out")
        assert "treated as an opt-out" in page.get_by_role("status").inner_text()
        assert page.locator("#flagged-empty").is_visible()
        page.goto(base + "/console/phones/" + ADA.replace("+", "%2B"))
        assert f"console:{EMAIL}" in page.locator("ol.timeline").inner_text()
        assert "asked us by email" in page.locator('#phone-header [data-field="opt-out"]').first.inner_text()

        # API keys: create one (shown once), use it, revoke it, and the API refuses it at once.
        nav.get_by_role("link", name="API keys").click()
        page.get_by_label("Name (optional)", exact=True).fill("crm")
        page.get_by_role("button", name="Create key").click()
        key = page.locator("#new-key").input_value()
        prefix = key.split("_")[1]
        page.reload()  # a refresh after creating a key neither shows it again nor makes another
        assert page.locator("#new-key").count() == 0
        assert page.locator("table.keys tbody tr").count() == 1
        assert httpx.get(base + "/v1/programs", headers={"x-api-key": key}).status_code == 200
        page.get_by_role("button", name=f"Revoke key {prefix}").click()
        assert "refused (401)" in page.locator("#consequences").inner_text()
        page.get_by_role("button", name=f"Revoke key {prefix}").click()
        page.wait_for_url(f"**/console/keys?revoked={prefix}")
        assert page.get_by_role("status").inner_text().startswith(f"Key {prefix} is revoked")
        assert page.locator(f'tr[data-prefix="{prefix}"] .key-status').inner_text().startswith("revoked")
        assert httpx.get(base + "/v1/programs", headers={"x-api-key": key}).status_code == 401
        assert key not in page.content()

        # Sign out: back to the sign-in page, and the console is closed.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(base + "/console/login")
        page.goto(base + "/console/keys")
        assert page.url.startswith(base + "/console/login?next=")
    assert elsewhere == [], "the console must load nothing from elsewhere (no CDN, no fonts)"
    context.close()


def test_the_console_fits_a_phone_screen(server: tuple[Proc, Processes], browser: Any, tmp_path: Path) -> None:
    proc, _procs = server
    context = browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    with screenshot_on_failure(page, tmp_path / "phone-failure.png"):
        sign_in(page, proc.base_url)
        for path in ("/console/programs", f"/console/phones/{ZOE.replace('+', '%2B')}", "/console/ledger",
                     "/console/playground", "/console/flagged", "/console/keys"):
            page.goto(proc.base_url + path)
            # The page itself never scrolls sideways: wide tables scroll inside their own region.
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= PHONE_VIEWPORT["width"], f"{path} is {width}px wide on a {PHONE_VIEWPORT['width']}px screen"
            nav = page.get_by_role("navigation", name="Console")
            assert nav.is_visible()
            box = nav.get_by_role("link", name="API keys").bounding_box()
            assert box is not None and box["x"] + box["width"] <= PHONE_VIEWPORT["width"]
            assert unlabelled_fields(page) == []
        # A focused control shows where it is (keyboard users).
        page.goto(proc.base_url + "/console/ledger")
        page.get_by_label("Phone", exact=True).focus()
        outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid"
        if os.environ.get("OPTLINE_KEEP_SCREENSHOTS"):
            page.screenshot(path=str(tmp_path / "phone-ledger.png"), full_page=True)
    context.close()


def console_pages() -> dict[str, str]:
    """Every console page a signed-in owner opens (the forms' results are reached by clicking)."""
    zoe = ZOE.replace("+", "%2B")
    return {
        "programs": "/console/programs", "subscribers": "/console/programs/deals",
        "subscribers-filtered": "/console/programs/deals?status=unsubscribed&number=1415",
        "phone": f"/console/phones/{zoe}", "phone-search": "/console/phone", "ledger": "/console/ledger",
        "analytics": "/console/analytics", "analytics-weekly": "/console/analytics?by=week&program=deals",
        "operations": "/console/operations", "playground": "/console/playground", "flagged": "/console/flagged",
        "keywords": "/console/keywords", "keys": "/console/keys", "account": "/console/account",
        "not-found": "/console/nowhere",
    }


def _visit_all(page: Any, base: str, check: Any) -> None:
    for name, path in console_pages().items():
        page.goto(base + path)
        check(name)
    # Pages reached through forms: a playground result, a confirmation, and the signed-out ones.
    page.goto(base + "/console/playground")
    page.get_by_label("Text", exact=True).fill("JOIN")
    page.get_by_label("From phone", exact=True).fill("+33612345678")
    # Each of these buttons posts a form: wait for the page it leads to before looking at it
    # (looking at once could find no document between the two pages).
    with page.expect_navigation():
        page.get_by_role("button", name="Try it").click()
    check("playground-result")
    page.goto(base + f"/console/phones/{BOB.replace('+', '%2B')}")
    with page.expect_navigation():
        page.get_by_role("button", name="Opt out…").click()
    check("confirm")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    check("login")


@pytest.mark.timeout(300)
def test_every_page_passes_axe_and_fits_a_phone_and_200_percent_zoom(server: tuple[Proc, Processes], browser: Any,
                                                                     tmp_path: Path) -> None:
    from tests.axe_core import axe_script, serious_violations

    axe_script()
    proc, _procs = server
    base = proc.base_url
    found: dict[str, list[str]] = {}
    # axe is injected as a script of the test's own: the console's CSP (script-src 'self') would refuse it.
    for label, options in (("desktop", {"viewport": {"width": 1280, "height": 900}}),
                           ("375px", {"viewport": PHONE_VIEWPORT, "device_scale_factor": 2, "is_mobile": True,
                                      "has_touch": True}),
                           # 200 % zoom of a 1280 px window: the page lays out in 640 CSS pixels.
                           ("200%", {"viewport": {"width": 640, "height": 450}, "device_scale_factor": 2})):
        context = browser.new_context(bypass_csp=True, **options)
        page = context.new_page()
        width = options["viewport"]["width"]  # type: ignore[index]

        def check(name: str, label: str = label, page: Any = page, width: int = width) -> None:
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            if wide > width:
                found.setdefault(f"{label} {name}", []).append(f"the page is {wide}px wide")
            if label != "200%":  # axe's verdicts do not depend on the zoom; twice is enough
                problems = serious_violations(page)
                if problems:
                    found.setdefault(f"{label} {name}", []).extend(problems)

        with screenshot_on_failure(page, tmp_path / f"axe-{label}.png"):
            sign_in(page, base)
            _visit_all(page, base, check)
            if label == "desktop":  # the check itself can fail: an image without a text alternative is caught
                page.evaluate("() => document.body.append(Object.assign(document.createElement('img'), "
                              "{src: 'data:,'}))")
                assert any(v.startswith("image-alt (critical)") for v in serious_violations(page))
        context.close()
    assert found == {}, "\n".join(f"{k}: {v}" for k, v in found.items())
