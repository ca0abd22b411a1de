"""Phones as people write them in Brazil (and abroad) normalize to one E.164 form."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from contacts.domain.phones import InvalidPhoneNumber, check_region, normalize_phone
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

SP_MOBILE = "+5511987654321"

E164 = re.compile(r"\+[1-9]\d{6,14}")

#: Area codes (DDD) in use in Brazil: those with mobile numbers in the numbering plan.
DDDS = [
    ddd
    for ddd in map(str, range(11, 100))
    if phonenumbers.is_valid_number(phonenumbers.parse(f"+55{ddd}987654321"))
]


@pytest.mark.parametrize(
    "raw",
    [
        "+55 11 98765-4321",
        "+5511987654321",
        "  +55 11 98765-4321  ",
        "+55 (11) 98765-4321",
        "+55 (11) 9 8765-4321",
        "5511987654321",
        "55 11 98765 4321",
        "(11) 98765-4321",
        "11 98765-4321",
        "11987654321",
        "11.98765.4321",
        "011 98765-4321",
        "0 15 11 98765-4321",
        "015 11 987654321",
        "0 21 11 98765-4321",
        "041 11 98765 4321",
        "(0xx11) 98765-4321",
        "0XX11 98765-4321",
        "0055 11 98765-4321",
        "00 21 55 11 98765-4321",
        "１１９８７６５４３２１",
    ],
)
def test_spellings_of_one_mobile_normalize_equal(raw: str) -> None:
    assert normalize_phone(raw) == SP_MOBILE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+55 11 8765-4321", SP_MOBILE),
        ("(11) 8765-4321", SP_MOBILE),
        ("1187654321", SP_MOBILE),
        ("551187654321", SP_MOBILE),
        ("0055 11 8765-4321", SP_MOBILE),
        ("0 15 11 8765-4321", SP_MOBILE),
        ("(31) 9123-4567", "+5531991234567"),
        ("+55 21 7123-4567", "+5521971234567"),
        ("+55 61 6123-4567", "+5561961234567"),
        ("55 8765-4321", "+5555987654321"),
    ],
)
def test_legacy_eight_digit_mobiles_get_the_ninth_digit(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(11) 3333-4444", "+551133334444"),
        ("+55 21 2222-3333", "+552122223333"),
        ("0xx51 3212-3456", "+555132123456"),
        ("(47) 4009-1234", "+554740091234"),
        ("(11) 5123-4567", "+551151234567"),
        ("031 3333 4444", "+553133334444"),
    ],
)
def test_landlines_keep_eight_digits(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 650 253 0000", "+16502530000"),
        ("+1 (650) 253-0000", "+16502530000"),
        ("+351 912 345 678", "+351912345678"),
        ("+54 9 11 2345-6789", "+5491123456789"),
        ("+44 20 7031 3000", "+442070313000"),
        ("+595 981 123456", "+595981123456"),
        ("+49 30 123456", "+4930123456"),
    ],
)
def test_foreign_numbers_keep_their_country(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("abc", "contains letters"),
        ("11 98765-4321 ramal 20", "contains letters"),
        ("+55 11 98765-4321 ext. 5", "contains letters"),
        ("5.5119876543E+12", "contains letters"),
        ("11 98765-4321 #20", "has an extension, which WhatsApp cannot reach"),
        ("+", "is not a phone number"),
        ("123", "is too short"),
        ("+55 11 98765-43210", "is too long"),
        ("98765-4321", "has no area code (DDD)"),
        ("3333-4444", "has no area code (DDD)"),
        ("+55 20 98765-4321", "is not a valid number in BR"),
        ("+55 11 1234-5678", "is not a valid number in BR"),
        ("+999 123 456", "has an unknown country code"),
        ("1" * 65, "is longer than 64 characters"),
    ],
)
def test_invalid_phones_say_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize_phone(raw)
    assert caught.value.reason == reason
    assert caught.value.raw == raw


@pytest.mark.parametrize(
    "raw", ["0800 123 4567", "08007240000", "+55 0800 123 4567", "0300 123 4567", "0900 123 4567"]
)
def test_service_numbers_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="service number"):
        normalize_phone(raw)


def test_shared_cost_number_without_area_code_is_rejected() -> None:
    with pytest.raises(InvalidPhoneNumber, match="service number"):
        normalize_phone("4004-1234")


def test_default_region_reads_national_numbers_of_that_country() -> None:
    assert normalize_phone("650 253 0000", "US") == "+16502530000"
    assert normalize_phone("912 345 678", "pt") == "+351912345678"


def test_ninth_digit_rule_applies_to_brazilian_numbers_under_any_region() -> None:
    assert normalize_phone("+55 11 8765-4321", "US") == SP_MOBILE


def test_the_area_code_list_is_complete() -> None:
    assert len(DDDS) == 67


def test_unknown_region_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown phone region 'XX'"):
        normalize_phone(SP_MOBILE, "XX")
    with pytest.raises(ValueError):
        check_region("Brazil")
    assert check_region("br") == "BR"


_separators = st.sampled_from(["", " ", "-", ".", "  "])


@st.composite
def brazilian_spellings(draw: st.DrawFn) -> str:
    """A Brazilian phone written in one of the many ways spreadsheets hold them."""
    ddd = draw(st.sampled_from(DDDS))
    first = draw(st.sampled_from("2345678"))
    subscriber = first + draw(st.text("0123456789", min_size=7, max_size=7))
    if first in "6789" and draw(st.booleans()):
        subscriber = "9" + subscriber
    prefix = draw(st.sampled_from(["", "+55 ", "55", "0", "0 15 ", "0xx", "(0xx", "0055 "]))
    area = f"({ddd})" if draw(st.booleans()) and "(" not in prefix else ddd
    if prefix == "(0xx":
        area = ddd + ")"
    sep = draw(_separators)
    split = len(subscriber) - 4
    return f"{prefix}{area}{sep}{subscriber[:split]}{draw(_separators)}{subscriber[split:]}"


@given(brazilian_spellings())
def test_normalization_is_idempotent(raw: str) -> None:
    try:
        once = normalize_phone(raw)
    except InvalidPhoneNumber:
        return
    assert E164.fullmatch(once)
    assert normalize_phone(once) == once
    assert normalize_phone(once, "US") == once


@given(
    st.sampled_from(DDDS),
    st.sampled_from("6789"),
    st.text("0123456789", min_size=7, max_size=7),
    st.sampled_from(["({ddd}) {sub}", "+55 {ddd} {sub}", "0{ddd}{sub}", "55{ddd}{sub}"]),
)
def test_eight_and_nine_digit_forms_of_a_mobile_are_one_number(
    ddd: str, first: str, rest: str, spelling: str
) -> None:
    eight = first + rest
    legacy = normalize_phone(spelling.format(ddd=ddd, sub=eight))
    current = normalize_phone(spelling.format(ddd=ddd, sub="9" + eight))
    assert legacy == current == f"+55{ddd}9{eight}"


@given(
    st.sampled_from(DDDS), st.sampled_from("2345"), st.text("0123456789", min_size=7, max_size=7)
)
def test_landlines_are_never_given_a_ninth_digit(ddd: str, first: str, rest: str) -> None:
    try:
        normalized = normalize_phone(f"({ddd}) {first}{rest}")
    except InvalidPhoneNumber:
        return
    assert normalized == f"+55{ddd}{first}{rest}"


@given(st.text(max_size=40))
def test_any_text_either_normalizes_to_a_fixed_point_or_is_rejected(raw: str) -> None:
    try:
        once = normalize_phone(raw)
    except InvalidPhoneNumber:
        return
    assert E164.fullmatch(once)
    assert normalize_phone(once) == once
