"""Subscription statuses and the transition table (docs/keywords.md), as data. Pure: no I/O.

`transition(status, event)` answers where a subscription goes and which reply it earns; a
pair missing from the table is an explicit error, never a silent fallthrough. Cooldowns,
scopes and "at most one reply" are decided by the caller (app.inbound), which knows the
clock and the other programs on the sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Status(StrEnum):
    """A phone's status in one program (the exact strings the API shows)."""

    NONE = "none"  # never joined, or a DOI that expired from none
    PENDING = "pendingDOI"  # asked to join; waiting for the confirm keyword
    SUBSCRIBED = "subscribed"  # confirmed (or opted in by API with proof)
    UNSUBSCRIBED = "unsubscribed"  # opted out by SMS, API or carrier


class Event(StrEnum):
    """What happened to a subscription; also the `event` column of the consent ledger."""

    JOIN = "join"  # join keyword on a double-opt-in program (or START re-joining one)
    JOIN_SINGLE = "join_single"  # join keyword on a program with double_opt_in: false
    CONFIRM = "confirm"  # the confirm keyword answered a pending DOI
    EXPIRE = "doi_expired"  # the DOI was not confirmed in time
    STOP = "stop"  # a stop keyword or opt-out intent by SMS
    API_OPT_IN = "api_opt_in"  # API opt-in with consent proof, no DOI
    API_OPT_IN_DOI = "api_opt_in_doi"  # API opt-in that asks for DOI
    API_OPT_OUT = "api_opt_out"  # API opt-out
    CONSOLE_OPT_OUT = "console_opt_out"  # a person opted the phone out in the console (with a reason)
    CARRIER_OPT_OUT = "carrier_opt_out"  # the carrier says the phone opted out (21610, OptOutType=STOP)
    IMPORT_OPT_OUT = "import_opt_out"  # a row of an opt-out list the brand imported (app.suppression)


class Reply(StrEnum):
    """Message names in keywords.yaml."""

    DOI_PROMPT = "doi_prompt"
    WELCOME = "welcome"
    ALREADY_SUBSCRIBED = "already_subscribed"
    STOP = "stop"
    HELP = "help"
    DOI_EXPIRED = "doi_expired"


# Replies that `prompt_cooldown` limits to one per window per phone and program.
COOLDOWN_REPLIES = frozenset({Reply.DOI_PROMPT, Reply.ALREADY_SUBSCRIBED})


class Source(StrEnum):
    """Who caused a consent event."""

    SMS = "sms"
    API = "api"
    CARRIER = "carrier"
    SYSTEM = "system"
    CONSOLE = "console"  # a person in the console (e.g. a flagged text treated as an opt-out)
    IMPORT = "import"  # an opt-out list the brand imported (API or CLI), each event naming its batch
    # An opt-out texted on another channel to the brand's number revokes SMS consent too.
    WHATSAPP = "whatsapp"
    MESSENGER = "messenger"
    RCS = "rcs"


# A client's clock may run a little ahead of ours; consent further in the future is refused (422).
CLOCK_SKEW = timedelta(minutes=5)
# The times a client may give (consentedAt and the like): what both engines store and read back.
# PostgreSQL keeps offsets up to ±15:59 and no year before 1 in UTC; real zones stay within
# ±14:00, and no consent to a text predates 1970.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_UTC_OFFSET = timedelta(hours=14)


def time_problem(value: datetime, now: datetime) -> str | None:
    """Why a client's time cannot be accepted (None when it can): no offset, one beyond ±14:00, before 1970,
    or more than CLOCK_SKEW ahead of `now`."""
    offset = value.utcoffset()
    if offset is None:
        return "must carry a UTC offset"
    if abs(offset) > MAX_UTC_OFFSET:
        return "has a UTC offset beyond ±14:00"
    if value < EARLIEST_TIME:
        return "is before 1970-01-01"
    if value - now > CLOCK_SKEW:
        return "is more than 5 minutes in the future"
    return None

# Events that end consent: API consent must be newer than the latest of them.
OPT_OUT_EVENTS = frozenset({Event.STOP, Event.API_OPT_OUT, Event.CONSOLE_OPT_OUT, Event.CARRIER_OPT_OUT,
                            Event.IMPORT_OPT_OUT})
# Who made an opt-out the phone's own: only the phone may undo it (by texting START or a join keyword).
PHONE_SOURCES = frozenset({Source.SMS, Source.CARRIER, Source.WHATSAPP, Source.MESSENGER, Source.RCS})
# Events by which the phone itself joins again, undoing its own opt-out.
PHONE_JOIN_EVENTS = frozenset({Event.JOIN, Event.JOIN_SINGLE, Event.CONFIRM})
# Events by which the phone (or the brand, with proof) joins: START may only restart those.
JOIN_EVENTS = frozenset({Event.JOIN, Event.JOIN_SINGLE, Event.CONFIRM, Event.API_OPT_IN, Event.API_OPT_IN_DOI})


@dataclass(frozen=True)
class Transition:
    """Where a subscription goes and the reply it earns (None: no reply)."""

    to: Status | None  # None: back to the status before the DOI (expiry only)
    reply: Reply | None


class InvalidTransition(Exception):
    """A (status, event) pair the table does not allow."""


S = Status
E = Event
R = Reply
_ANY = tuple(Status)

TABLE: dict[tuple[Status, Event], Transition] = {
    (S.NONE, E.JOIN): Transition(S.PENDING, R.DOI_PROMPT),
    (S.UNSUBSCRIBED, E.JOIN): Transition(S.PENDING, R.DOI_PROMPT),
    (S.PENDING, E.JOIN): Transition(S.PENDING, R.DOI_PROMPT),  # prompt again, unless in cooldown
    (S.SUBSCRIBED, E.JOIN): Transition(S.SUBSCRIBED, R.ALREADY_SUBSCRIBED),
    (S.NONE, E.JOIN_SINGLE): Transition(S.SUBSCRIBED, R.WELCOME),
    (S.UNSUBSCRIBED, E.JOIN_SINGLE): Transition(S.SUBSCRIBED, R.WELCOME),
    # A DOI left pending when the program switched to single opt-in: the join completes it.
    (S.PENDING, E.JOIN_SINGLE): Transition(S.SUBSCRIBED, R.WELCOME),
    (S.SUBSCRIBED, E.JOIN_SINGLE): Transition(S.SUBSCRIBED, R.ALREADY_SUBSCRIBED),
    (S.PENDING, E.CONFIRM): Transition(S.SUBSCRIBED, R.WELCOME),
    (S.PENDING, E.EXPIRE): Transition(None, None),
    (S.NONE, E.API_OPT_IN_DOI): Transition(S.PENDING, R.DOI_PROMPT),
    (S.UNSUBSCRIBED, E.API_OPT_IN_DOI): Transition(S.PENDING, R.DOI_PROMPT),
    (S.PENDING, E.API_OPT_IN_DOI): Transition(S.PENDING, R.DOI_PROMPT),
    # Already confirmed: asking again for DOI would only annoy; nothing changes.
    (S.SUBSCRIBED, E.API_OPT_IN_DOI): Transition(S.SUBSCRIBED, None),
    **{(s, E.API_OPT_IN): Transition(S.SUBSCRIBED, R.WELCOME) for s in _ANY},
    **{(s, E.STOP): Transition(S.UNSUBSCRIBED, R.STOP) for s in _ANY},
    **{(s, E.API_OPT_OUT): Transition(S.UNSUBSCRIBED, R.STOP) for s in _ANY},
    **{(s, E.CONSOLE_OPT_OUT): Transition(S.UNSUBSCRIBED, R.STOP) for s in _ANY},
    # The carrier (or Twilio's Advanced Opt-Out) already answered the phone: we stay silent.
    **{(s, E.CARRIER_OPT_OUT): Transition(S.UNSUBSCRIBED, None) for s in _ANY},
    # An imported opt-out list: the brand already honoured it elsewhere; no text to the phone.
    **{(s, E.IMPORT_OPT_OUT): Transition(S.UNSUBSCRIBED, None) for s in _ANY},
}


def transition(status: Status | str, event: Event) -> Transition:
    """The table's answer for this status and event; raises InvalidTransition for a missing pair."""
    try:
        return TABLE[(Status(status), event)]
    except (KeyError, ValueError):
        raise InvalidTransition(f"{event.value} is not allowed from {status}") from None
