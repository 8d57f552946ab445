"""Operations: /metrics after real conversations, JSON logs with request ids and masked numbers."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from app.db import make_engine
from app.logs import json_handler, mask_text, request_id
from app.metrics import Metrics, error_code, note_transition
from app.providers.base import SendError
from tests.conftest import ACME, Gateway
from tests.fake_twilio import AUTH_TOKEN, sign_twilio, twilio_inbound_params

PHONE = "+14155550123"
MASKED = "+1415***0123"


def scrape(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics, parsed: (sample name, labels) -> value."""
    response = gateway.client.get("/metrics")
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def settle(gateway: Gateway) -> None:
    """Wait until nothing is due or in flight, moving the fake clock past the retry backoff (cap 0.2 s)."""

    def settled() -> bool:
        gateway.clock.advance(seconds=0.25)
        return gateway.query("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending', 'dispatching')")[0][0] == 0

    wait_until(settled)


# --- /metrics ----------------------------------------------------------------------------


def test_a_conversation_is_counted_by_kind_transition_and_send(gateway: Gateway) -> None:
    for sent, body in enumerate(("JOIN", "YES", "STOP"), start=1):
        assert gateway.text(body, from_=PHONE).status_code == 200
        gateway.fake.wait_for(sent, to=PHONE)  # each reply out before the next text, or STOP cancels it
    gateway.drain()
    wait_until(lambda: value(scrape(gateway), "optline_sends_total", channel="sms", outcome="sent") == 3)
    samples = scrape(gateway)
    for kind in ("join", "confirm", "stop"):
        assert value(samples, "optline_inbound_total", kind=kind) == 1
    transitions = {labels: v for (name, labels), v in samples.items() if name == "optline_transitions_total"}
    assert transitions == {
        frozenset({"brand": "acme", "program": "deals", "event": "join", "from_status": "none",
                   "to_status": "pendingDOI"}.items()): 1,
        frozenset({"brand": "acme", "program": "deals", "event": "confirm", "from_status": "pendingDOI",
                   "to_status": "subscribed"}.items()): 1,
        frozenset({"brand": "acme", "program": "deals", "event": "stop", "from_status": "subscribed",
                   "to_status": "unsubscribed"}.items()): 1,
        # ACME's number hosts two programs: a plain STOP leaves news too.
        frozenset({"brand": "acme", "program": "news", "event": "stop", "from_status": "none",
                   "to_status": "unsubscribed"}.items()): 1,
    }
    assert value(samples, "optline_send_seconds_count", channel="sms") == 3
    assert value(samples, "optline_provider_errors_total", code="none") is None
    for channel in ("sms", "event"):
        assert value(samples, "optline_outbox_oldest_due_seconds", channel=channel) == 0
        for status in ("pending", "sending"):
            assert value(samples, "optline_outbox_depth", channel=channel, status=status) == 0


def test_a_duplicate_is_counted_once_and_changes_no_transition(gateway: Gateway) -> None:
    first = gateway.text("JOIN", from_=PHONE)
    gateway.post_signed("/webhooks/twilio", first.params)  # type: ignore[attr-defined]
    samples = scrape(gateway)
    assert value(samples, "optline_inbound_total", kind="join") == 1
    assert value(samples, "optline_inbound_duplicates_total") == 1
    assert value(samples, "optline_transitions_total", brand="acme", program="deals", event="join", from_status="none",
                 to_status="pendingDOI") == 1


def test_transitions_carry_their_brand(gateway: Gateway) -> None:
    gateway.text("JOIN", from_=PHONE)
    gateway.text("MENU", from_="+33612345678", to="+15005550007")  # bistro: French numbers only
    samples = scrape(gateway)
    for brand, program in (("acme", "deals"), ("bistro", "menu")):
        assert value(samples, "optline_transitions_total", brand=brand, program=program, event="join",
                     from_status="none", to_status="pendingDOI") == 1
    assert value(samples, "optline_transitions_total", brand="bistro", program="deals", event="join",
                 from_status="none", to_status="pendingDOI") is None


def test_outbox_gauges_show_the_backlog_and_how_long_it_waited(
    gateway_factory: Callable[..., Gateway], database_url: str
) -> None:
    gateway = gateway_factory(database_url, inprocess_worker=False)  # nobody sends: the prompts wait
    gateway.text("JOIN", from_=PHONE)
    gateway.text("JOIN", from_="+14155550124")
    gateway.clock.advance(seconds=90)
    samples = scrape(gateway)
    assert value(samples, "optline_outbox_depth", channel="sms", status="pending") == 2
    assert value(samples, "optline_outbox_depth", channel="sms", status="sending") == 0
    assert 90 <= (value(samples, "optline_outbox_oldest_due_seconds", channel="sms") or 0) < 95


@pytest.mark.parametrize(
    ("fault", "code", "outcome"),
    [
        (lambda fake: fake.fail(21610, to=PHONE), "21610", "opted_out"),
        (lambda fake: fake.fail_http(503, to=PHONE), "20503", "retry"),
        (lambda fake: fake.fail(21211, to=PHONE), "21211", "failed"),
        (lambda fake: fake.drop(to=PHONE), "connection", "retry"),
    ],
    ids=["21610-opt-out", "503-retried", "21211-permanent", "dropped-connection"],
)
def test_provider_errors_are_counted_by_code(
    gateway: Gateway, fault: Callable[[Any], Any], code: str, outcome: str
) -> None:
    fault(gateway.fake)
    gateway.text("JOIN", from_=PHONE)
    settle(gateway)
    wait_until(lambda: value(scrape(gateway), "optline_provider_errors_total", code=code) == 1)
    samples = scrape(gateway)
    assert value(samples, "optline_sends_total", channel="sms", outcome=outcome) == 1
    assert value(samples, "optline_send_seconds_count", channel="sms") == (2 if outcome == "retry" else 1)
    if outcome == "opted_out":
        assert value(samples, "optline_transitions_total", brand="acme", program="deals", event="carrier_opt_out",
                     from_status="pendingDOI", to_status="unsubscribed") == 1


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (SendError("refused", code=21610, http_status=400), "21610"),
        (SendError("no answer", transient=True, kind="timeout"), "timeout"),
        (SendError("reset", transient=True, kind="connection"), "connection"),
        (SendError("bad gateway", http_status=502, transient=True), "http_502"),
        (SendError("adapter error: KeyError('x')"), "none"),
    ],
    ids=["code", "timeout", "connection", "status-only", "nothing-known"],
)
def test_error_code_label(error: SendError, label: str) -> None:
    assert error_code(error) == label


def test_transitions_count_on_commit_only(sqlite_url: str) -> None:
    metrics = Metrics()
    engine = make_engine(sqlite_url, writer=True)
    metrics.watch(engine)
    labels = {"brand": "acme", "program": "deals", "event": "join", "from_status": "none", "to_status": "pendingDOI"}
    try:
        with pytest.raises(RuntimeError), engine.begin() as conn:
            note_transition(conn, **labels)
            raise RuntimeError("the batch failed")  # rolled back: the writer re-runs the job alone
        with engine.begin() as conn:
            note_transition(conn, **labels)
    finally:
        engine.dispose()
    unwatched = make_engine(sqlite_url)
    try:
        with unwatched.begin() as conn:  # an engine nobody watches keeps nothing on its connections
            note_transition(conn, **labels)
            assert "optline.transitions" not in conn.info
    finally:
        unwatched.dispose()
    assert metrics.transitions_total.labels(**labels)._value.get() == 1


# --- JSON logs -----------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """optline's loggers at INFO, written through the production JSON handler into a buffer."""
    stream = io.StringIO()
    handler = json_handler(stream)
    logger = logging.getLogger("optline")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_each_record_is_one_json_line_with_numbers_masked(json_log: io.StringIO) -> None:
    log = logging.getLogger("optline.test")
    log.info("text from %s to %s", PHONE, ACME, extra={"phone": PHONE, "attempt": 2})
    log.warning("raw query phoneNumber=%2B14155550123 and 44 7911 123456 is not E.164")
    try:
        raise ValueError(f"cannot send to {PHONE}")
    except ValueError:
        log.exception("send failed\nsecond line")
    records = lines(json_log)
    assert len(records) == 3 and len(json_log.getvalue().splitlines()) == 3
    first, second, third = records
    assert first["msg"] == f"text from {MASKED} to +1500***0006"
    assert first["phone"] == MASKED and first["attempt"] == 2
    assert first["level"] == "INFO" and first["logger"] == "optline.test" and first["ts"].endswith("Z")
    assert "request_id" not in first  # not in a request
    assert MASKED in second["msg"] and "44 7911 123456" in second["msg"]
    assert third["level"] == "ERROR" and third["msg"] == "send failed\nsecond line"
    assert "ValueError: cannot send to " + MASKED in third["exc"]
    assert "4155550123" not in json_log.getvalue()


def test_national_numbers_in_database_errors_are_masked(json_log: io.StringIO) -> None:
    """PostgreSQL quotes the parameters a client sent in its error details, with no + in front."""
    log = logging.getLogger("optline.db")
    try:
        raise RuntimeError('duplicate key value violates unique constraint\nDETAIL:  Key (brand, phone)=(acme, '
                           '4155550123) already exists.\nCONTEXT:  unnamed portal parameter $3 = \'33612345678\'')
    except RuntimeError:
        log.exception("batch failed")
    text = json_log.getvalue()
    assert "4155550123" not in text and "33612345678" not in text
    assert "415*****23" in text and "336******78" in text


def test_the_twilio_librarys_per_request_info_lines_are_quiet() -> None:
    from app.logs import setup_logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    twilio_level = logging.getLogger("twilio").level
    try:
        setup_logging("INFO")
        client = logging.getLogger("twilio.http_client")
        assert not client.isEnabledFor(logging.INFO) and client.isEnabledFor(logging.WARNING)
        assert logging.getLogger("optline.outbox").isEnabledFor(logging.INFO)
    finally:
        # Put back exactly what the session's logging was (tests/conftest.py: the product's own).
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        for handler in [h for h in handlers if h not in root.handlers]:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("twilio").setLevel(twilio_level)


def test_mask_text_leaves_other_text_alone() -> None:
    assert mask_text("order 12345678, +1 415 555 0123, +29912345") == "order 12345678, +1 415 555 0123, +29***45"
    assert mask_text("no numbers here") == "no numbers here"


def test_webhook_log_lines_carry_the_request_id(gateway: Gateway, json_log: io.StringIO) -> None:
    params = twilio_inbound_params(Body="JOIN", From=PHONE, To=ACME)
    response = gateway.post_signed("/webhooks/twilio", params, **{"X-Request-Id": "req-from-proxy-1"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "req-from-proxy-1"
    inbound = [r for r in lines(json_log) if r["logger"] == "optline.webhooks"]
    assert len(inbound) == 1 and inbound[0]["request_id"] == "req-from-proxy-1"
    assert MASKED in inbound[0]["msg"] and PHONE not in json_log.getvalue()


@pytest.mark.parametrize(
    ("given", "kept"),
    [(None, False), ("abc-123", True), ("a" * 129, False), ("two words", False), ("x\u00e9", False)],
    ids=["absent", "honoured", "too-long", "space", "not-ascii"],
)
def test_x_request_id_is_echoed_or_made(gateway: Gateway, given: str | None, kept: bool) -> None:
    headers = {"X-Request-Id": given.encode("utf-8")} if given is not None else {}
    response = gateway.client.get("/healthz", headers=headers)
    echoed = response.headers["x-request-id"]
    if kept:
        assert echoed == given
    else:
        assert len(echoed) == 16 and int(echoed, 16) >= 0
    assert request_id.get() is None  # nothing leaks out of the request


# --- the real process ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_logs_json_lines_without_phone_numbers(sqlite_url: str, tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTLINE_", "TWILIO_"))}
    env.update(OPTLINE_DATABASE_URL=sqlite_url, OPTLINE_LOG_LEVEL="INFO", OPTLINE_PUBLIC_URL=base,
               TWILIO_AUTH_TOKEN=AUTH_TOKEN, OPTLINE_POLL_SECONDS="0.05")
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, stderr_path.read_text()
                    time.sleep(0.1)
            params = twilio_inbound_params(Body="JOIN", From=PHONE, To=ACME)
            answer = httpx.post(f"{base}/webhooks/twilio", data=params, headers={
                "X-Twilio-Signature": sign_twilio(f"{base}/webhooks/twilio", params), "X-Request-Id": "e2e-1"})
            assert answer.status_code == 200 and answer.headers["x-request-id"] == "e2e-1"
            wait_until(lambda: "optline.console" in stderr_path.read_text())  # the reply went out
            metrics = httpx.get(f"{base}/metrics").text
            assert 'optline_inbound_total{kind="join"} 1.0' in metrics
            assert 'optline_sends_total{channel="sms",outcome="sent"} 1.0' in metrics
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    text = stderr_path.read_text()
    records = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert "4155550123" not in text
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "optline.webhooks", "optline.console"} <= loggers
    inbound = next(r for r in records if r["logger"] == "optline.webhooks")
    assert inbound["request_id"] == "e2e-1" and MASKED in inbound["msg"]
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)


def test_worker_sigterm_finishes_the_send_in_flight(
    gateway_factory: Callable[..., Gateway], sqlite_url: str, tmp_path: Path
) -> None:
    gateway = gateway_factory(sqlite_url, inprocess_worker=False)  # queues the prompt, sends nothing
    gateway.text("JOIN", from_=PHONE)
    gateway.fake.delay(1.5)  # the worker's send is still at the provider when SIGTERM lands
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTLINE_", "TWILIO_"))}
    env.update(OPTLINE_DATABASE_URL=sqlite_url, OPTLINE_LOG_LEVEL="INFO", OPTLINE_PROVIDER="twilio",
               TWILIO_ACCOUNT_SID=gateway.settings.twilio_account_sid or "", TWILIO_AUTH_TOKEN=AUTH_TOKEN,
               OPTLINE_TWILIO_API_URL=gateway.fake.url, OPTLINE_POLL_SECONDS="0.05",
               OPTLINE_PUBLIC_URL=gateway.settings.public_url)
    stderr_path = tmp_path / "worker.log"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            gateway.fake.wait_for_requests(1, timeout=20)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert gateway.query("SELECT status FROM outbox")[0][0] == "queued"  # the answer was recorded
    messages = [json.loads(line)["msg"] for line in stderr_path.read_text().splitlines()]
    assert "worker stopping: finishing sends in flight" in messages and messages[-1] == "worker stopped"


def test_a_500_carries_the_request_id_in_its_answer_and_its_log_line(gateway: Gateway, json_log: io.StringIO) -> None:
    async def boom(_request: Any) -> Any:
        raise RuntimeError(f"bug while texting {PHONE}")

    gateway.client.app.router.routes.append(Route("/boom", boom))  # type: ignore[attr-defined]
    response = gateway.client.get("/boom", headers={"X-Request-Id": "req-500"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "req-500"
    [error] = [r for r in lines(json_log) if r["level"] == "ERROR"]
    assert error["request_id"] == "req-500" and f"RuntimeError: bug while texting {MASKED}" in error["exc"]
