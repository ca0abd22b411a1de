"""Phone numbers of contacts: one canonical E.164 form per person.

A contact's phone is its identity within a company (unique per company), and it is the
WhatsApp address campaigns send to, so every way people write the same number must end up
as the same string. :func:`normalize_phone` parses with ``phonenumbers`` (national and
international forms, Brazilian trunk prefix ``0``, carrier selection codes such as
``0 15 11 ...`` and the written placeholder ``0xx11``) and then applies the Brazilian
9th-digit rule:

* Brazilian mobiles have 9-digit subscriber numbers starting with ``9`` since the
  2012–2016 migration, but spreadsheets and old phone books still hold the 8-digit form.
  An 8-digit subscriber number starting with 6, 7, 8 or 9 (the legacy mobile ranges) is
  rewritten to the 9-digit form by prefixing ``9``: ``+55 11 8765-4321`` and
  ``+55 11 98765-4321`` both become ``+5511987654321``.
* Landlines (8-digit subscriber numbers starting with 2 to 5) are left as they are.

Only numbers a person can be reached at are accepted: service numbers (toll-free ``0800``,
premium rate ``0900``, shared cost ``0300``/``4004``, and their foreign equivalents) cannot
be dialled from abroad or hold a person's WhatsApp account, and numbers with an extension
or with letters (vanity numbers, ``ramal 20``) are rejected rather than guessed at.
"""

from __future__ import annotations

import re
from typing import Final

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberType

#: Region used to read numbers written without a country code, unless configured otherwise.
DEFAULT_REGION: Final = "BR"

#: Longest raw input considered; anything longer is not a phone number someone typed.
MAX_PHONE_INPUT_LENGTH: Final = 64

_BRAZIL_COUNTRY_CODE: Final = 55
#: Two-digit area code (DDD) plus an 8-digit subscriber number.
_BRAZIL_LEGACY_NATIONAL_LENGTH: Final = 10
_BRAZIL_LEGACY_MOBILE_FIRST_DIGITS: Final = frozenset("6789")
#: Lengths of a Brazilian number written without its area code.
_BRAZIL_SUBSCRIBER_LENGTHS: Final = frozenset({8, 9})

_SERVICE_NUMBER_TYPES: Final = frozenset(
    {
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.UAN,
        PhoneNumberType.VOICEMAIL,
    }
)

#: The "0xx" of Brazilian written numbers ("(0xx11) 98765-4321"): the trunk prefix with a
#: placeholder for the carrier code the caller picks.
_CARRIER_PLACEHOLDER: Final = re.compile(r"0\s*xx", re.IGNORECASE)
_LETTER: Final = re.compile(r"[^\W\d_]")
_NON_DIGIT: Final = re.compile(r"\D")

_PARSE_ERROR_REASONS: Final = {
    NumberParseException.INVALID_COUNTRY_CODE: "has an unknown country code",
    NumberParseException.NOT_A_NUMBER: "is not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "is too short",
    NumberParseException.TOO_SHORT_NSN: "is too short",
    NumberParseException.TOO_LONG: "is too long",
}

_POSSIBILITY_REASONS: Final = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "has an unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "is too short",
    phonenumbers.ValidationResult.TOO_LONG: "is too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "has a length no number of its country has",
}


class InvalidPhoneNumber(ValueError):
    """A raw phone that does not normalize to a reachable E.164 number.

    ``reason`` completes the sentence "the phone ...", e.g. ``"is too short"``, so callers
    can put it in a field error or an import row report as it is.
    """

    def __init__(self, raw: str, reason: str) -> None:
        super().__init__(f"phone {raw!r} {reason}")
        self.raw = raw
        self.reason = reason


def check_region(region: str) -> str:
    """Return ``region`` (upper-cased) if ``phonenumbers`` knows it, else raise ValueError.

    Meant for configuration time, so that a misconfigured default region fails at start-up
    instead of rejecting every national number later.
    """
    code = region.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {region!r}: use an ISO 3166 code such as 'BR'")
    return code


def normalize_phone(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """The canonical E.164 form (``"+5511987654321"``) of a phone as people write it.

    ``default_region`` (ISO 3166 alpha-2) is the country of numbers written without a
    country code; numbers starting with ``+`` (or an international prefix) keep their own
    country. The 9th-digit rule applies to every Brazilian number, whatever the default
    region. The result is a fixed point: ``normalize_phone(normalize_phone(x)) ==
    normalize_phone(x)`` for any region.

    Raises InvalidPhoneNumber when the input is empty, too long, contains letters (other
    than the ``0xx`` carrier placeholder), has an extension, is not a valid number of its
    country, or is a service number; ValueError when ``default_region`` is unknown.
    """
    region = check_region(default_region)
    text = raw.strip()
    if not text:
        raise InvalidPhoneNumber(raw, "is empty")
    if len(text) > MAX_PHONE_INPUT_LENGTH:
        raise InvalidPhoneNumber(raw, f"is longer than {MAX_PHONE_INPUT_LENGTH} characters")
    text = _CARRIER_PLACEHOLDER.sub("0", text)
    if _LETTER.search(text):
        raise InvalidPhoneNumber(raw, "contains letters")

    try:
        return _normalize_reading(raw, text, region)
    except InvalidPhoneNumber as error:
        alternative = _international_reading(text)
        if alternative is None:
            raise
        try:
            return _normalize_reading(raw, alternative, region)
        except InvalidPhoneNumber:
            raise error from None


def _international_reading(text: str) -> str | None:
    """``text`` read with a bare ``00`` international prefix, if it starts with one.

    From Brazil, ``00`` starts an international call only when followed by a carrier code
    (``00 21 1 650 ...``), which ``phonenumbers`` understands. People also write the
    European style ``0055 11 ...``, which that rule misreads, so a number starting with
    ``00`` that is invalid as read is tried again as ``+`` followed by the rest.
    """
    if not text.startswith("00"):
        return None
    return "+" + _NON_DIGIT.sub("", text)[2:]


def _normalize_reading(raw: str, text: str, region: str) -> str:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as error:
        reason = _PARSE_ERROR_REASONS.get(error.error_type, "is not a phone number")
        raise InvalidPhoneNumber(raw, reason) from None
    if number.extension:
        raise InvalidPhoneNumber(raw, "has an extension, which WhatsApp cannot reach")
    number = _with_brazilian_ninth_digit(number)
    possibility = phonenumbers.is_possible_number_with_reason(number)
    if possibility in _POSSIBILITY_REASONS:
        raise InvalidPhoneNumber(raw, _POSSIBILITY_REASONS[possibility])
    if not phonenumbers.is_valid_number(number):
        if (
            number.country_code == _BRAZIL_COUNTRY_CODE
            and len(str(number.national_number)) in _BRAZIL_SUBSCRIBER_LENGTHS
        ):
            raise InvalidPhoneNumber(raw, "has no area code (DDD)")
        country = phonenumbers.region_code_for_number(number) or "its country"
        raise InvalidPhoneNumber(raw, f"is not a valid number in {country}")
    if phonenumbers.number_type(number) in _SERVICE_NUMBER_TYPES:
        raise InvalidPhoneNumber(
            raw, "is a service number (toll-free, premium rate or shared cost), not a personal one"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _with_brazilian_ninth_digit(number: PhoneNumber) -> PhoneNumber:
    """``number`` with ``9`` inserted after the area code if it is a legacy 8-digit mobile."""
    if number.country_code != _BRAZIL_COUNTRY_CODE:
        return number
    national = str(number.national_number)
    if (
        len(national) != _BRAZIL_LEGACY_NATIONAL_LENGTH
        or national[2] not in _BRAZIL_LEGACY_MOBILE_FIRST_DIGITS
    ):
        return number
    return PhoneNumber(
        country_code=_BRAZIL_COUNTRY_CODE, national_number=int(national[:2] + "9" + national[2:])
    )
