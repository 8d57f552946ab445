"""The send check's batch path (app.sendcheck.check) against a plain reference, and its plans.

`check` answers a thousand items with a handful of queries and works out each phone's place,
each sending window and each hold once: a property test compares it, on random databases and
batches, with a reference that asks the database and the rules item by item. And on a
PostgreSQL table without statistics, its reads must still probe an index led by (brand, phone).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.db import make_engine
from app.holds import CAP_WINDOW, QUIET_HOURS, decide, per_phone, program_cap, texts_for
from app.keywords import Brand, load_rules
from app.phone import in_countries
from app.rules.area_codes import us_state
from app.rules.quiet_hours import recipient_zones, window_text
from app.schemas_rules import plain_send_checks
from app.sendcheck import Planned, check, parse_items
from app.sql import Raw
from app.subscriptions import OPT_OUT_EVENTS
from tests.conftest import explain_plans, unlimited

RULES = Path(__file__).parent / "data" / "consent_rules.yaml"
# Florida (cap 3, 8–20), Texas (12:00 on Sundays), Connecticut (9–20), California (federal only),
# New York, Canada, France (not allowed), and one number never stored.
PHONES = ("+13055550101", "+13055550102", "+15125550101", "+12035550101", "+14155550101", "+12125550101",
          "+14165550101", "+33612345678", "+17185550199")
PROGRAMS = ("deals", "news", "alerts")  # deals: marketing; news: at most 2 a day
STATUSES = ("subscribed", "unsubscribed", "pendingDOI", "none", None)  # None: no row
ZONES = (None, None, "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Not/A_Zone")
SOURCES = ("sms", "api", "import", "carrier")
BASE = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # a Saturday: + 1 day is a Sunday


@pytest.fixture(scope="module")
def brands(tmp_path_factory: pytest.TempPathFactory) -> list[Brand]:
    """The shop brand as written, and with its own narrower window."""
    narrow = tmp_path_factory.mktemp("rules") / "narrow.yaml"
    narrow.write_text(RULES.read_text().replace(
        "    name: Shop\n", '    name: Shop\n    quiet_hours: {start: "09:30", end: "19:00"}\n', 1))
    found = [load_rules(unlimited(RULES)).brands["shop"], load_rules(unlimited(narrow)).brands["shop"]]
    assert found[1].quiet_hours is not None
    return found


def reference(conn: sa.Connection, now: datetime, brand: Brand, items: list[Planned]) -> list[dict[str, Any]]:
    """The send check's answer asked item by item: one look at each table, no batch, nothing remembered."""
    raw = Raw(conn)
    out = []
    for index, phone, program, at in items:
        row = raw.execute("SELECT status, opted_out_at FROM subscriptions WHERE brand = :b AND phone = :p"
                          " AND program = :g", {"b": brand.key, "p": phone, "g": program}).fetchone()
        status, opted_at = (row[0], row[1]) if row is not None else ("none", None)
        zone = raw.scalar("SELECT timezone FROM profiles WHERE brand = :b AND phone = :p AND deleted_at IS NULL",
                          {"b": brand.key, "p": phone})
        allowed = brand.allowed_countries
        country = allowed is None or ("US" in allowed and us_state(phone) is not None) or in_countries(phone, allowed)
        reasons: list[dict[str, Any]] = []
        if not country:
            reasons.append({"code": "country_not_allowed"})
        elif status == "unsubscribed":
            events = per_phone(raw, brand.key, [phone], "id, program, source, created_at", "consent_events",
                               f"event IN ({', '.join(repr(str(e)) for e in OPT_OUT_EVENTS)})")
            mine = [e for e in events if e["program"] == program]
            source = scope = None
            if mine:
                latest = max(mine, key=lambda e: e["id"])
                source = latest["source"]
                together = {e["program"] for e in events if e["created_at"] == latest["created_at"]}
                scope = ("brand" if source == "import" or together >= set(brand.programs)
                         else "program" if len(together) == 1 else "sender")
            at_text = None
            if opted_at is not None:
                stored = datetime.fromisoformat(opted_at) if isinstance(opted_at, str) else opted_at
                at_text = stored.replace(tzinfo=stored.tzinfo or UTC).astimezone(UTC).isoformat().replace("+00:00", "Z")
            reasons.append({"code": "opted_out", "at": at_text, "source": source, "scope": scope})
        elif status == "pendingDOI":
            reasons.append({"code": "pending_doi"})
        elif status != "subscribed":
            reasons.append({"code": "not_subscribed"})
        cap = program_cap(brand.programs[program], phone, at)
        times = texts_for(raw, brand.key, {(phone, program)}, at - CAP_WINDOW).get((phone, program), [])
        hold = decide(at, phone=phone, zones=recipient_zones(phone, zone), brand_window=brand.quiet_hours, cap=cap,
                      times=times)
        until = None
        if hold is not None:
            until = hold.until.astimezone(UTC).isoformat().replace("+00:00", "Z")
            for code in hold.reasons:
                detail = (f"sending window {window_text(phone, at.date(), brand.quiet_hours)}" if code == QUIET_HOURS
                          else f"at most {cap} texts in 24 h")
                reasons.append({"code": code, "nextAllowedAt": until, "detail": detail})
        forever = bool(reasons) and reasons[0]["code"] in ("country_not_allowed", "opted_out", "pending_doi",
                                                           "not_subscribed")
        out.append({"index": index, "phoneNumber": phone, "program": program, "allowed": not reasons,
                    "reasons": reasons, "nextAllowedAt": None if forever else until})
    return out


def store(conn: sa.Connection, now: datetime, world: dict[str, Any]) -> None:
    """Subscriptions, opt-out events, profiles and the brand's sends, as drawn."""
    raw = Raw(conn)
    for (phone, program), status in world["subs"].items():
        if status is None:
            continue
        out = status == "unsubscribed"
        opted = now - timedelta(days=2) if out else None
        raw.insert_rows("subscriptions", ("id", "brand", "program", "phone", "status", "opted_out_at", "created_at",
                                          "updated_at"),
                        [{"id": f"sub_{phone}_{program}", "brand": "shop", "program": program, "phone": phone,
                          "status": status, "opted_out_at": opted, "created_at": now, "updated_at": now}])
    for phone, (programs, source, minutes) in world["opt_outs"].items():
        # One opt-out writes an event for each program it ends, all at one time.
        raw.insert_rows("consent_events", ("subscription_id", "brand", "program", "phone", "event", "from_status",
                                           "to_status", "source", "created_at"),
                        [{"subscription_id": f"sub_{phone}_{p}", "brand": "shop", "program": p, "phone": phone,
                          "event": "import_opt_out" if source == "import" else "stop", "from_status": "subscribed",
                          "to_status": "unsubscribed", "source": source,
                          "created_at": now - timedelta(days=2, minutes=minutes)} for p in programs])
    for phone, zone in world["zones"].items():
        if zone is not None:
            raw.insert_rows("profiles", ("id", "brand", "phone", "timezone", "attributes", "created_at", "updated_at"),
                            [{"id": f"prof_{phone}", "brand": "shop", "phone": phone, "timezone": zone,
                              "attributes": {}, "created_at": now, "updated_at": now}])
    for (phone, program), hours in world["sends"].items():
        raw.insert_rows("brand_sends", ("brand", "program", "phone", "sent_at", "created_at"),
                        [{"brand": "shop", "program": program, "phone": phone, "sent_at": now - timedelta(hours=h),
                          "created_at": now} for h in hours])


pairs = [(p, g) for p in PHONES for g in PROGRAMS]
worlds = st.fixed_dictionaries({
    "subs": st.fixed_dictionaries({pair: st.sampled_from(STATUSES) for pair in pairs}),
    "opt_outs": st.dictionaries(st.sampled_from(PHONES), st.tuples(
        st.lists(st.sampled_from(PROGRAMS), min_size=1, max_size=3, unique=True), st.sampled_from(SOURCES),
        st.integers(0, 2)), max_size=5),
    "zones": st.fixed_dictionaries({phone: st.sampled_from(ZONES) for phone in PHONES}),
    "sends": st.dictionaries(st.sampled_from(pairs), st.lists(st.integers(0, 30), max_size=4), max_size=6),
})
OFFSETS = (UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9)))
items = st.lists(st.tuples(st.sampled_from(PHONES), st.sampled_from(PROGRAMS),
                           st.one_of(st.none(), st.tuples(st.integers(0, 40), st.sampled_from(OFFSETS)))),
                 min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=worlds, batch=items, hour=st.integers(0, 23), which=st.integers(0, 1))
def test_the_batch_answers_as_the_item_by_item_reference(database_url: str, brands: list[Brand],
                                                         world: dict[str, Any], batch: list[Any], hour: int,
                                                         which: int) -> None:
    brand, now = brands[which], BASE + timedelta(hours=hour)
    body = {"items": [{"phoneNumber": phone, "program": program,
                       **({"at": (now + timedelta(hours=at[0])).astimezone(at[1]).isoformat()} if at else {})}
                      for phone, program, at in batch]}
    plain = plain_send_checks(body)
    assert plain is not None
    planned = parse_items(brand, plain, now)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            conn.begin()  # rolled back when the connection closes: each example starts from an empty database
            store(conn, now, world)
            got = check(conn, now, brand=brand, items=planned)
            assert got == reference(conn, now, brand, planned)
    finally:
        engine.dispose()


def test_postgresql_probes_subscriptions_by_phone_on_a_table_without_statistics(unanalysed_pg_url: str,
                                                                                brands: list[Brand]) -> None:
    """Launch day, or a first import: PostgreSQL has no statistics yet, and must still read by (brand, phone).

    Not through (brand, program, phone), which would read every row of the brand for each
    phone: with the send check's wide index alone (no narrow one beside it), the import test's
    100,000 rows once ran past the statement timeout that way (migration 0011).
    """
    engine = make_engine(unanalysed_pg_url, writer=True)
    plans: list[str] = []
    now = BASE
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO subscriptions (id, brand, program, phone, status, created_at, updated_at)"
                " SELECT 'sub_' || g || p, 'shop', p, '+1646' || (2000000 + g), 'subscribed', now(), now()"
                " FROM generate_series(1, 5000) g, (VALUES ('deals'), ('news')) v(p)")
        with engine.begin() as conn:
            explain_plans(conn, plans)
            body = {"items": [{"phoneNumber": f"+1646{2000000 + g}", "program": "news"} for g in range(1, 400, 3)]}
            planned = parse_items(brands[0], plain_send_checks(body) or [], now)
            check(conn, now, brand=brands[0], items=planned)
            per_phone(Raw(conn), "shop", sorted({i.phone for i in planned}), "phone, program, status, joined_at",
                      "subscriptions")  # what an opt-out import reads (app.suppression)
    finally:
        engine.dispose()
    reads = [plan for plan in plans if "on subscriptions" in plan]
    assert reads
    for plan in reads:
        assert "using ix_subscriptions_brand_phone" in plan and "Seq Scan" not in plan, plan
