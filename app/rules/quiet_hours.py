"""When a text the phone did not just ask for may go out: sending windows as data, with their sources.

Each rule is a region, a window per weekday in the recipient's local time, the law it comes
from and the date it applies from, and (for some states) a cap on marketing texts per 24 h.
The federal window applies to every number; a state's applies on top of it when the
number's area code is in that state (app.rules.area_codes); the brand may narrow the window
further (keywords.yaml `quiet_hours`). Where several apply, the strictest wins: the latest
start and the earliest end. A number with several candidate time zones must be inside the
window in every one of them.

Vendors list more states (Kentucky, Rhode Island, Louisiana, Alabama…): a state is one
entry of STATE_RULES, with its source. Pure: no clock, no database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

from app.rules.area_codes import us_state

_DAYS = 7  # windows are listed Monday first (datetime.weekday())


@dataclass(frozen=True)
class Rule:
    """One jurisdiction's sending window (per weekday, local time) and marketing cap, with its source."""

    region: str  # "US" (federal), "US-FL", …
    windows: tuple[tuple[time, time], ...]  # (start, end) for Monday … Sunday
    source: str  # the law, as a reader can look it up
    effective: date  # the day it applies from
    marketing_cap: int | None = None  # marketing texts per 24 h on one subject (one program)

    def applies(self, day: date) -> bool:
        """Whether the rule is in force on `day`."""
        return day >= self.effective


def every_day(start: int, end: int) -> tuple[tuple[time, time], ...]:
    """The same window (whole hours) on every day of the week."""
    return ((time(start), time(end)),) * _DAYS


FEDERAL = Rule(
    "US", every_day(8, 21),
    "TCPA rules, 47 CFR 64.1200(c)(1): no telephone solicitation before 8 a.m. or after 9 p.m. local time",
    date(1992, 12, 20),
)

STATE_RULES: Mapping[str, Rule] = MappingProxyType({
    "FL": Rule("US-FL", every_day(8, 20),
               "Florida Telephone Solicitation Act, Fla. Stat. §501.616(6)(a) (hours) and §501.059(8)(a) (3 per 24 h),"
               " as amended by SB 1120 (2021) and HB 761 (2023)", date(2021, 7, 1), marketing_cap=3),
    "OK": Rule("US-OK", every_day(8, 20),
               "Oklahoma Telephone Solicitation Act of 2022, 15 O.S. §775C.1 et seq. (HB 3168, 2022)",
               date(2022, 11, 1), marketing_cap=3),
    "MD": Rule("US-MD", every_day(8, 20),
               "Maryland Stop the Spam Calls Act, Md. Com. Law §14-4501 et seq. (SB 90, 2024)",
               date(2025, 1, 1), marketing_cap=3),
    "CT": Rule("US-CT", every_day(9, 20),
               "Connecticut Public Act 23-98 (SB 1058, 2023), Conn. Gen. Stat. §42-288a", date(2023, 10, 1)),
    "TX": Rule("US-TX", ((time(9), time(21)),) * 6 + ((time(12), time(21)),),
               "Texas SB 140 (2025), bringing texts under Tex. Bus. & Com. Code ch. 301–302 (hours: §301.051)",
               date(2025, 9, 1)),
    "VA": Rule("US-VA", every_day(8, 21),
               "Virginia Telephone Privacy Protection Act, Va. Code §59.1-510 et seq., as amended by SB 1339 (2026)",
               date(2026, 1, 1)),
})


def rules_for(phone: str, day: date) -> list[Rule]:
    """The rules in force for `phone` on `day`: the federal one, and its area code's state's."""
    found = [FEDERAL]
    state = us_state(phone)
    rule = STATE_RULES.get(state) if state is not None else None
    if rule is not None and rule.applies(day):
        found.append(rule)
    return found


def marketing_cap(phone: str, day: date) -> tuple[int, Rule] | None:
    """The strictest marketing cap in force for `phone` (and the rule that sets it), None when none applies."""
    caps = [(r.marketing_cap, r) for r in rules_for(phone, day) if r.marketing_cap is not None]
    return min(caps, key=lambda c: c[0]) if caps else None  # type: ignore[return-value]


_UNKNOWN_ZONE = "Etc/Unknown"
_CONTIGUOUS_US = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")


@lru_cache(maxsize=65536)
def _zones_of(key: str) -> tuple[str, ...]:
    try:
        number = phonenumbers.parse(key + "0100" if key.startswith("+1") and len(key) == 8 else key)
    except phonenumbers.NumberParseException:
        return ("UTC",)
    zones = tuple(z for z in pn_timezone.time_zones_for_number(number) if z != _UNKNOWN_ZONE)
    if not zones and number.country_code == 1:
        # An area code libphonenumber does not place (a new overlay, say): somewhere in the
        # contiguous US, so the window that is open in all four of its zones (11:00–21:00 Eastern).
        zones = _CONTIGUOUS_US
    if not zones:
        # A number it cannot place within its country: the country's zones (the UK's for a UK
        # mobile), so the window is at least read in the right part of the world.
        zones = tuple(z for z in pn_timezone._country_level_time_zones_for_number(number)  # noqa: SLF001
                      if z != _UNKNOWN_ZONE)
    return zones or ("UTC",)


def number_zones(phone: str) -> tuple[str, ...]:
    """The time zones a number may be in (libphonenumber's candidates, else its country's), UTC when none."""
    # North American zones follow the area code and exchange (+1 NPA NXX): one cache entry per
    # exchange, not per number.
    return _zones_of(phone[:8] if phone.startswith("+1") else phone)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def recipient_zones(phone: str, profile_zone: str | None) -> tuple[ZoneInfo, ...]:
    """Where the recipient is: the profile's IANA zone when known, else the number's candidates."""
    if profile_zone and (zone := _zone(profile_zone)) is not None:
        return (zone,)
    zones = tuple(z for name in number_zones(phone) if (z := _zone(name)) is not None)
    return zones or (ZoneInfo("UTC"),)


@lru_cache(maxsize=65536)
def _place(key: str) -> tuple[str | None, tuple[ZoneInfo, ...]]:
    return us_state(key), recipient_zones(key, None)


def number_place(phone: str) -> tuple[str | None, tuple[ZoneInfo, ...]]:
    """The state of a number's area code (app.rules.area_codes.us_state) and the zones it may be in (as
    recipient_zones without a profile), remembered."""
    # Both follow the area code and exchange (+1 NPA NXX) of a North American number: one
    # entry per exchange, so a batch of a thousand numbers finds nearly all of them here.
    return _place(phone[:8] if phone.startswith("+1") else phone)


def _window(rules: Iterable[Rule], weekday: int, brand: tuple[time, time] | None) -> tuple[time, time]:
    start, end = time(0), time(23, 59, 59, 999999)
    for rule in rules:
        s, e = rule.windows[weekday]
        start, end = max(start, s), min(end, e)
    if brand is not None:
        start, end = max(start, brand[0]), min(end, brand[1])
    return start, end


def _opening(at: datetime, zone: ZoneInfo, rules: Sequence[Rule], brand: tuple[time, time] | None) -> datetime | None:
    """None when `at` is inside the window in `zone`, else when the window next opens there (UTC)."""
    local = at.astimezone(zone)
    start, end = _window(rules, local.weekday(), brand)
    if start <= local.time() < end:
        return None
    day = local.date()
    if local.time() >= start:
        day += timedelta(days=1)
    for _ in range(_DAYS + 1):
        start, end = _window(rules, day.weekday(), brand)
        if start < end:
            opens = datetime.combine(day, start, tzinfo=zone).astimezone(UTC)
            # A DST gap can put the opening before `at` by an hour: never go back in time.
            return max(opens, at + timedelta(microseconds=1))
        day += timedelta(days=1)
    return None  # no window on any day: the brand's override closed them all (refused by check)


def next_allowed(at: datetime, *, phone: str, zones: Sequence[ZoneInfo],
                 brand_window: tuple[time, time] | None = None) -> datetime | None:
    """None when a text may go to `phone` at `at`; else the earliest later time it may (UTC).

    With several zones, a time inside the window in every zone (the strictest reading).
    """
    rules = rules_for(phone, at.astimezone(UTC).date())
    t = at
    for _ in range(64):  # converges in a step or two; the bound only guards against a bad table
        moved = False
        for zone in zones:
            opening = _opening(t, zone, rules, brand_window)
            if opening is not None:
                t, moved = opening, True
        if not moved:
            return None if t == at else t
    return t


def window_text(phone: str, day: date, brand_window: tuple[time, time] | None = None) -> str:
    """The window for `phone` on `day`, for messages: "08:00–20:00 (US, US-FL)"."""
    rules = rules_for(phone, day)
    start, end = _window(rules, day.weekday(), brand_window)
    return f"{start:%H:%M}–{end:%H:%M} ({', '.join(r.region for r in rules)})"
