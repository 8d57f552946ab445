"""The proof routes' response shapes (the evidence pack, erasure, checkpoints), for the API and its document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

_RESPONSE = ConfigDict(alias_generator=to_camel, validate_by_alias=True, validate_by_name=True, serialize_by_alias=True)


class _Out(BaseModel):
    model_config = _RESPONSE


class ReceiptOut(_Out):
    """The provider's furthest delivery report for a text."""

    status: str
    at: datetime | None
    error_code: int | None


class SentTextOut(_Out):
    """A text optline queued to the phone, with its fate."""

    outbox_id: int
    purpose: str
    text: str = Field(description="Empty once its body was erased or expired.")
    from_: str | None = Field(alias="from")
    status: str
    provider_message_id: str | None
    queued_at: datetime
    sent_at: datetime | None
    receipt: ReceiptOut | None


class InboundProofOut(_Out):
    """The text that caused a consent event."""

    provider_message_id: str
    text: str | None = Field(description="Verbatim; null once erased (its hash stays).")
    text_sha256: str | None
    provider: str | None
    to: str | None
    channel: str | None
    received_at: datetime | None


class ApiProofOut(_Out):
    """Who acted through the API, and the consent proof they sent (e.g. an IP address, a form's URL)."""

    api_key_id: int | None
    api_key_prefix: str | None
    consent_source: str | None
    consent_proof: dict[str, Any] | None
    consented_at: datetime | None


class ReplyProofOut(_Out):
    """The reply sent with a consent event: its exact text as recorded in the ledger, and the text as queued."""

    purpose: str
    text: str | None
    sha256: str | None
    sent: SentTextOut | None


class EvidenceEventOut(_Out):
    """One consent event with every proof."""

    id: int
    seq: int | None
    event: str
    from_status: str
    to_status: str
    source: str
    at: datetime
    keyword: str | None
    reason: str | None
    rules_sha256: str | None = Field(description="The keywords.yaml sha256 in force when it was made.")
    hash: str | None
    prev_hash: str | None
    inbound: InboundProofOut | None
    api: ApiProofOut | None
    reply: ReplyProofOut | None


class OptOutProofOut(_Out):
    """An opt-out, with why a text was read as one."""

    event_id: int
    event: str
    at: datetime
    source: str
    keyword: str | None
    reason: str | None


class EvidenceProgramOut(_Out):
    """One program's consent history."""

    program: str | None
    status: str
    subscribed_at: datetime | None
    opted_out_at: datetime | None
    events: list[EvidenceEventOut]
    opt_outs: list[OptOutProofOut]
    other_texts: list[SentTextOut]


class ProblemFoundOut(_Out):
    """Something in the ledger that no longer holds."""

    event_id: int | None
    message: str


class VerificationOut(_Out):
    """The chain's verification (for one phone, or the whole ledger)."""

    ok: bool
    events: int
    chains: int
    checkpoints: int
    latest_checkpoint: str | None
    first_broken_event_id: int | None
    problems: list[ProblemFoundOut]
    more_problems: int


class EvidenceOut(_Out):
    """GET /v1/contacts/{phone}/evidence."""

    brand: str
    phone_number: str
    phone_key: str = Field(description="The number's keyed hash: the name of its chain, kept after an erasure.")
    erased_at: datetime | None
    programs: list[EvidenceProgramOut]
    verification: VerificationOut


class ErasureOut(_Out):
    """POST /v1/contacts/{phone}/erase."""

    erased: bool
    rows: dict[str, int] = Field(description="How many rows of each table lost the number or its text.")


class CheckpointOut(_Out):
    """A ledger checkpoint: keep its hash outside optline."""

    id: int
    hash: str
    prev_hash: str
    heads: int
    created_at: datetime


class CheckpointPage(_Out):
    """GET /v1/ledger/checkpoints, newest first."""

    items: list[CheckpointOut]
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last.")
