"""Walk the consent ledger's chains and checkpoints and name what no longer holds (app.ledger builds them).

What each check catches, with the append-only trigger dropped (as an operator could):
- an edited event: its hash no longer matches its columns;
- a reordered pair: each no longer links to the hash of the event before it;
- a deleted event: a gap in its chain's sequence (or, for the newest, a head or a sealed
  checkpoint head that names an event that is gone);
- an inserted event: a place in a chain taken twice, an event outside every chain, or one
  past the chain's recorded head;
- a rewritten chain (every hash recomputed): a sealed head that no longer matches, and the
  checkpoint hashes a brand kept outside optline no longer appear.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.ledger import GENESIS, PSEUDONYM_PREFIX, checkpoint_hash, event_hash, phone_key, pseudonym, sha256_text
from app.models import consent_events, ledger_checkpoint_heads, ledger_checkpoints, ledger_heads

MAX_PROBLEMS = 100  # kept in full; the rest only counted


@dataclass(frozen=True)
class Problem:
    """One thing that no longer holds: the event it is found at (None for a checkpoint), and what."""

    event_id: int | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Verification:
    """What a walk found."""

    events: int = 0
    chains: int = 0
    checkpoints: int = 0
    latest_checkpoint: str | None = None
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing was found broken."""
        return not self.problems

    @property
    def first(self) -> Problem | None:
        """The earliest broken event (by id), else the first broken checkpoint."""
        return min(self.problems, key=lambda p: (p.event_id is None, p.event_id or 0)) if self.problems else None

    def add(self, event_id: int | None, message: str) -> None:
        """Note a problem."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(event_id, message))
        else:
            self.more_problems += 1

    def json(self) -> dict[str, Any]:
        """The API's shape."""
        first = self.first
        return {"ok": self.ok, "events": self.events, "chains": self.chains, "checkpoints": self.checkpoints,
                "latestCheckpoint": self.latest_checkpoint,
                "firstBrokenEventId": first.event_id if first else None,
                "problems": [{"eventId": p.event_id, "message": p.message} for p in self.problems],
                "moreProblems": self.more_problems}


def _events(conn: Connection, brand: str | None, key: str | None) -> Iterator[Any]:
    query = sa.select(consent_events).order_by(consent_events.c.brand, consent_events.c.phone_key,
                                               consent_events.c.chain_seq, consent_events.c.id)
    if brand is not None:
        query = query.where(consent_events.c.brand == brand)
    if key is not None:
        query = query.where(consent_events.c.phone_key == key)
    yield from conn.execution_options(stream_results=True, yield_per=5000).execute(query).mappings()


def verify(conn: Connection, *, brand: str | None = None, phone: str | None = None,
           expect_checkpoint: str | None = None) -> Verification:
    """Walk every chain (of one brand, or one phone of it) and every checkpoint; nothing is written."""
    key = phone_key(phone) if phone is not None else None
    found = Verification()
    sealed = _sealed(conn, found, brand, key, expect_checkpoint)
    head_query = sa.select(ledger_heads)
    if brand is not None:
        head_query = head_query.where(ledger_heads.c.brand == brand)
    if key is not None:
        head_query = head_query.where(ledger_heads.c.phone_key == key)
    heads = {(r.brand, r.phone_key): (r.seq, r.hash) for r in conn.execute(head_query)}
    chain: tuple[str, str] | None = None
    seq, prev, last_id = 0, GENESIS, None
    hashes: dict[tuple[str, str, int], str] = {}
    known_number, number_key = "", ""

    def close(chain: tuple[str, str], seq: int, last_id: int | None) -> None:
        head = heads.pop(chain, None)
        if head is None:
            found.add(last_id, f"event {last_id}: its chain ({chain[0]}, {chain[1][:12]}…) has no recorded head")
        elif head[0] != seq:
            found.add(last_id, f"event {last_id}: the chain's head is at seq {head[0]}, its last event at seq {seq}"
                      + (" (events after it were deleted)" if head[0] > seq else " (events were added after it)"))

    for row in _events(conn, brand, key):
        found.events += 1
        event_id = row["id"]
        if row["phone_key"] is None or row["chain_seq"] is None or row["hash"] is None:
            found.add(event_id, f"event {event_id} is in no chain (inserted outside optline)")
            continue
        this = (row["brand"], row["phone_key"])
        if this != chain:
            if chain is not None:
                close(chain, seq, last_id)
            chain, seq, prev, last_id = this, 0, GENESIS, None
            found.chains += 1
        expected = seq + 1
        if row["chain_seq"] > expected:
            found.add(event_id, f"event {event_id}: seq {expected}" + (f"–{row['chain_seq'] - 1}" if row["chain_seq"]
                      > expected + 1 else "") + f" of its chain is missing (deleted) before it"
                      + (f", after event {last_id}" if last_id is not None else ""))
        elif row["chain_seq"] < expected:
            found.add(event_id, f"event {event_id} takes seq {row['chain_seq']} of its chain a second time (inserted)")
        if row["prev_hash"] != prev and row["chain_seq"] >= expected:
            found.add(event_id, f"event {event_id} does not link to the event before it"
                      + (f" (event {last_id})" if last_id is not None else "") + ": reordered, inserted or edited")
        if event_hash(row["prev_hash"], row) != row["hash"]:
            found.add(event_id, f"event {event_id} was altered: its columns no longer match its hash")
        if row["raw_text"] is not None and sha256_text(row["raw_text"]) != row["raw_text_sha256"]:
            found.add(event_id, f"event {event_id}: its inbound text was altered")
        if row["reply_text"] is not None and sha256_text(row["reply_text"]) != row["reply_sha256"]:
            found.add(event_id, f"event {event_id}: the text of its reply was altered")
        number = row["phone"]
        if number != known_number:  # one keyed hash a chain, not one an event
            known_number = number
            number_key = (pseudonym(row["phone_key"]) if number.startswith(PSEUDONYM_PREFIX) else phone_key(number))
        if number_key != (pseudonym(row["phone_key"]) if number.startswith(PSEUDONYM_PREFIX) else row["phone_key"]):
            found.add(event_id, f"event {event_id}: its number does not match its chain (edited)")
        want = sealed.get((row["brand"], row["phone_key"], row["chain_seq"]))
        if want is not None and want[1] != row["hash"]:
            found.add(event_id, f"event {event_id} differs from what checkpoint {want[0]} sealed")
        hashes[(row["brand"], row["phone_key"], row["chain_seq"])] = row["hash"]
        seq, prev, last_id = max(seq, row["chain_seq"]), row["hash"], event_id
    if chain is not None:
        close(chain, seq, last_id)
    for (b, k), (s, _h) in heads.items():
        found.add(None, f"the chain ({b}, {k[:12]}…) has a head at seq {s} but no events (deleted)")
    for (b, k, s), (checkpoint_id, _h) in sealed.items():
        if (b, k, s) not in hashes:
            found.add(None, f"checkpoint {checkpoint_id} sealed seq {s} of the chain ({b}, {k[:12]}…), which is gone")
    return found


def _sealed(conn: Connection, found: Verification, brand: str | None, key: str | None,
            expect: str | None) -> dict[tuple[str, str, int], tuple[int, str]]:
    """Check the checkpoints' own chain and hashes; the heads they sealed (of this brand or phone), by place."""
    prev = GENESIS
    sealed: dict[tuple[str, str, int], tuple[int, str]] = {}
    seen_expected = expect is None
    for cp in conn.execute(sa.select(ledger_checkpoints).order_by(ledger_checkpoints.c.id)):
        found.checkpoints += 1
        found.latest_checkpoint = cp.hash
        seen_expected = seen_expected or cp.hash == expect
        heads = conn.execute(sa.select(ledger_checkpoint_heads.c.brand, ledger_checkpoint_heads.c.phone_key,
                                       ledger_checkpoint_heads.c.seq, ledger_checkpoint_heads.c.hash)
                             .where(ledger_checkpoint_heads.c.checkpoint_id == cp.id)).all()
        if cp.prev_hash != prev:
            found.add(None, f"checkpoint {cp.id} does not link to the checkpoint before it")
        if checkpoint_hash(cp.prev_hash, [tuple(h) for h in heads]) != cp.hash or len(heads) != cp.heads:
            found.add(None, f"checkpoint {cp.id} was altered: its heads no longer match its hash")
        for b, k, s, h in heads:
            if (brand is None or b == brand) and (key is None or k == key):
                sealed[(b, k, s)] = (cp.id, h)
        prev = cp.hash
    if not seen_expected:
        found.add(None, f"no checkpoint has the hash {expect}: the checkpoints were rewritten")
    return sealed


__all__ = ["Problem", "Verification", "verify"]
