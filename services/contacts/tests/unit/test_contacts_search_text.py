"""What a search box's text matches: a name prefix, or phone prefixes."""

from __future__ import annotations

import pytest
from contacts.service_layer.contacts import ContactSearch, contact_search

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("João", ContactSearch(name_prefix="joao")),
        ("  Maria  da ", ContactSearch(name_prefix="maria da")),
        ("Apto 302", ContactSearch(name_prefix="apto 302")),
        ("+55 11 98", ContactSearch(phone_prefixes=("+551198",))),
        ("11 98765", ContactSearch(phone_prefixes=("+1198765", "+551198765"))),
        ("(011) 9", ContactSearch(phone_prefixes=("+0119", "+55119"))),
        (
            "11 8765-4321",
            ContactSearch(phone_prefixes=("+1187654321", "+551187654321", "+5511987654321")),
        ),
        ("+5511987654321", ContactSearch(phone_prefixes=("+5511987654321",))),
    ],
)
def test_search_text(text: str, expected: ContactSearch) -> None:
    assert contact_search(text, "BR") == expected


def test_the_default_region_gives_the_country_code() -> None:
    assert contact_search("912 345", "PT").phone_prefixes == ("+912345", "+351912345")
