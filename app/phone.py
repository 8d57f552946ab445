"""The only place phone numbers are parsed, formatted and masked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from app.errors import InvalidPhone


@lru_cache(maxsize=65536)
def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber:
    """libphonenumber's parse, remembered: a webhook parses the sender's number, then checks its country."""
    return phonenumbers.parse(text, region)


# Cached: a subscriber's number arrives with every text they send, and libphonenumber's
# parse is a tenth of a webhook's CPU. Refused numbers raise and are not cached.
@lru_cache(maxsize=65536)
def to_e164(raw: str, region: str | None = None) -> str:
    """Parse `raw` into E.164, using `region` for numbers written without a country code.

    A number with a country code may be written `+33612345678` or as bare digits starting
    with the code (`12225555151`). One rule for the API, webhooks and the CLI: the number
    must be *possible* for its country (a length and shape its plan allows, `_possible`),
    not *valid* (an assigned range). Carriers deliver texts from numbers libphonenumber calls
    invalid, and a brand must be able to read back, by that number, anything a webhook
    stored; Cordial's own example address (12225555151) is possible but not valid.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("phone number is empty")
    if len(text) > 40:
        raise InvalidPhone("phone number is too long")
    digits = "".join(ch for ch in text if ch.isdigit())
    candidates: list[tuple[str, str | None]] = []
    if text.startswith("+") or text.startswith("00"):
        candidates.append((text, None))
    else:
        if region:
            candidates.append((text, region))
        if digits and not text.startswith("0"):
            # Digits that already carry a country code: 12225555151, 33612345678.
            candidates.append(("+" + digits, None))
    for candidate, reg in candidates:
        try:
            number = _parse(candidate, reg)
        except phonenumbers.NumberParseException:
            continue
        if _possible(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not text.startswith("+") and not region:
        raise InvalidPhone("phone number has no country code and no default region applies")
    raise InvalidPhone("not a valid phone number")


def _possible(number: phonenumbers.PhoneNumber) -> bool:
    """Possible for its country: a length its plan allows, and the shape of its plan's numbers.

    libphonenumber's is_possible_number checks the length alone, so a French national
    0612345678 read in region US would pass as +10612345678; the country's general pattern
    (NANP: [2-9]XX...) refuses it while still taking every range, assigned or not.
    """
    if not phonenumbers.is_possible_number(number):
        return False
    region = phonenumbers.region_code_for_country_code(number.country_code)
    metadata = (phonenumbers.PhoneMetadata.metadata_for_nongeo_region(number.country_code)
                if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
                else phonenumbers.PhoneMetadata.metadata_for_region(region))
    pattern = metadata.general_desc.national_number_pattern if metadata and metadata.general_desc else None
    if not pattern:
        return True
    return re.fullmatch(pattern, phonenumbers.national_significant_number(number)) is not None


def country_of(e164: str) -> str | None:
    """The ISO 3166 region of an E.164 number, or None when the number plan does not say."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.region_code_for_number(number)


def is_toll_free(e164: str) -> bool:
    """True when libphonenumber files this E.164 number under a toll-free range (+1 800, 888, 833...)."""
    try:
        number = _parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.TOLL_FREE


def mask(phone: str | None) -> str:
    """Mask a number for logs: +15005550006 -> +1500***0006."""
    if not phone:
        return "-"
    if len(phone) <= 8:
        return phone[:2] + "***"
    if len(phone) < 12:
        # Short national plans (+299 123456): the usual 4 + 4 digits would show all of them.
        return phone[:3] + "***" + phone[-2:]
    return phone[:5] + "***" + phone[-4:]


@lru_cache(maxsize=65536)
def in_countries(e164: str, allowed: frozenset[str]) -> bool:
    """True when the number belongs to one of `allowed` (ISO regions).

    Cheaper than region_code_for_number on shared country codes (+1 spans 25 regions): only
    the allowed regions that share the number's code are tried.
    """
    try:
        number = _parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    candidates = [r for r in allowed if phonenumbers.country_code_for_region(r) == number.country_code]
    if not candidates:
        return False
    if len(phonenumbers.region_codes_for_country_code(number.country_code)) == 1:
        return True
    if any(phonenumbers.is_valid_number_for_region(number, region) for region in candidates):
        return True
    # Not valid in any allowed region: fall back to the full lookup. A possible number in no
    # known range (Cordial's 12225555151) belongs to its calling code's main country (+1: US).
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        region = phonenumbers.region_code_for_country_code(number.country_code)
    return region in allowed


# Channels a provider may post through the same webhook, with a prefix on the address
# (Twilio: whatsapp:+14155550123, rcs:+14155550123, messenger:{page-scoped id}). Those whose
# address is a phone number carry the phone's opt-outs.
PHONE_CHANNELS = frozenset({"whatsapp", "rcs"})
OPAQUE_CHANNELS = frozenset({"messenger"})
# WhatsApp's business-scoped user ids (BSUID): Meta may withhold a user's phone number and name
# them by an id scoped to the business, a country code, a dot and letters and digits
# (whatsapp:US.1234; a parent id across a business's portfolios reads US.ENT.…). Twilio posts it
# as From when no phone is known, and as ExternalUserId beside From when one is (as in
# nyaruka/courier's handlers/twiml tests). Kept whole within the stored address's 128 characters.
_WHATSAPP_USER_ID = re.compile(r"[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,100}")
# E.164 as providers post it: a plus and ASCII digits only (no spaces, letters, full-width
# digits, doubled plus or URI scheme such as tel: or sms:).
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_OPAQUE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


@dataclass(frozen=True)
class Address:
    """Who sent an inbound text: the channel, the phone (E.164) when the address is one, and the address as received."""

    channel: str  # "sms", "whatsapp", "rcs", "messenger"
    phone: str | None  # E.164; None for an address that is no phone number (messenger:…)
    raw: str  # the address as the provider sent it


@lru_cache(maxsize=65536)
def inbound_address(raw: str) -> Address:
    """Parse a webhook's sender: an E.164 number, or a channel-prefixed address; InvalidPhone otherwise.

    A number is accepted when libphonenumber finds it possible for its country: the carrier
    delivered the text, and losing a STOP over a numbering-plan detail is worse than storing
    an unusual number.
    """
    text = raw.strip()
    channel = "sms"
    if ":" in text:
        prefix, _, rest = text.partition(":")
        channel = prefix.lower()
        if channel in OPAQUE_CHANNELS:
            if not _OPAQUE_ID.fullmatch(rest):
                raise InvalidPhone(f"not a {channel} address")
            return Address(channel, None, text)
        if channel == "whatsapp" and _WHATSAPP_USER_ID.fullmatch(rest):
            return Address(channel, None, f"{channel}:{rest}")  # a business-scoped user id: no phone known
        if channel not in PHONE_CHANNELS:
            raise InvalidPhone("neither an E.164 phone number nor a whatsapp:, rcs: or messenger: address")
        text = rest
    if not _E164.fullmatch(text):
        raise InvalidPhone("not an E.164 phone number (+ and digits)")
    try:
        number = _parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidPhone("not a phone number") from None
    if not _possible(number):  # the API's rule too: what a webhook stored, the API can read back
        raise InvalidPhone("not a possible phone number for its country")
    return Address(channel, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), raw.strip())


def whatsapp_user_id(raw: str | None) -> str | None:
    """`whatsapp:US.1234` when `raw` is a WhatsApp business-scoped user id (see _WHATSAPP_USER_ID), else None."""
    prefix, sep, rest = (raw or "").strip().partition(":")
    if sep and prefix.lower() == "whatsapp" and _WHATSAPP_USER_ID.fullmatch(rest):
        return f"whatsapp:{rest}"
    return None


def our_number(raw: str | None) -> str | None:
    """One of our senders as a provider wrote it, in the form keywords.yaml uses.

    Plivo and Vonage write numbers as digits with the country code and no "+"
    (14155550100): those become E.164. A short code (3–8 digits) and anything else (an
    E.164 number already, an alphanumeric sender) is kept as written.
    """
    if raw is None:
        return None
    text = raw.strip()
    if text.isascii() and text.isdigit() and len(text) > 8:
        return "+" + text
    return text


def receiving_address(raw: str) -> str:
    """The number (or short code, or service) a text was sent to, without a channel prefix."""
    text = raw.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in PHONE_CHANNELS:
        return rest
    return text
