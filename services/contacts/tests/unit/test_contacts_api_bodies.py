"""Request bodies of the contacts API turned into drafts and patches: what a member left
out, given as null, or given as a value means."""

from __future__ import annotations

import pytest
from contacts.domain.model import ContactValidationError, CustomFieldDefinition, FieldType
from contacts.entrypoints.api.schemas import ContactIn, ContactPatchIn

pytestmark = pytest.mark.unit

DEFINITIONS = {"bloco": CustomFieldDefinition("bloco", "Bloco", FieldType.CHOICE, ("A", "B"))}


def test_left_out_members_leave_the_contact_unchanged() -> None:
    patch = ContactPatchIn.model_validate({"name": "Ana"}).patch(DEFINITIONS, "BR")

    assert patch.name == "Ana"
    assert (patch.phone_e164, patch.email, patch.tags, patch.cargo) == (None, None, None, None)
    assert patch.custom_fields == {}


def test_null_clears_a_text_field_and_the_tags() -> None:
    patch = ContactPatchIn.model_validate(
        {"email": None, "condominio": None, "tags": None, "custom_fields": {"bloco": None}}
    ).patch(DEFINITIONS, "BR")

    assert (patch.email, patch.condominio, patch.tags) == ("", "", ())
    assert patch.custom_fields == {"bloco": None}


def test_a_phone_cannot_be_cleared() -> None:
    with pytest.raises(ContactValidationError) as error:
        ContactPatchIn.model_validate({"phone": None}).patch(DEFINITIONS, "BR")

    assert error.value.field == "phone"


def test_a_contact_body_is_normalized_into_a_draft() -> None:
    draft = ContactIn.model_validate(
        {"phone": "(11) 98765-4321", "tags": ["a", "A"], "custom_fields": {"bloco": "b"}}
    ).draft(DEFINITIONS, "BR")

    assert draft.phone_e164 == "+5511987654321"
    assert draft.tags == ("a",)
    assert draft.custom_fields == {"bloco": "B"}
    assert draft.name is None
