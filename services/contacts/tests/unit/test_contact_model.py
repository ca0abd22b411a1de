"""The contact entity, its drafts and patches, custom field definitions and validation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from contacts.domain.model import (
    Contact,
    ContactDraft,
    ContactIsDeleted,
    ContactPatch,
    ContactValidationError,
    CustomFieldDefinition,
    FieldIssue,
    FieldType,
    IssueCode,
    RawValue,
    clean_email,
    clean_phone,
    clean_tags,
    clean_text,
    coerce_custom_value,
    definitions_by_key,
    fold,
    parse_boolean,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=10)

BLOCO = CustomFieldDefinition(
    key="bloco", label="Bloco", type=FieldType.CHOICE, options=("Bloco A", "Bloco B")
)
NASCIMENTO = CustomFieldDefinition(key="nascimento", label="Nascimento", type=FieldType.DATE)
ANDAR = CustomFieldDefinition(key="andar", label="Andar", type=FieldType.NUMBER)
DEFINITIONS = definitions_by_key([BLOCO, NASCIMENTO, ANDAR])


def new_contact(**values: RawValue) -> Contact:
    draft = ContactDraft.build(definitions=DEFINITIONS, phone="(11) 98765-4321", **values)  # type: ignore[arg-type]
    return Contact.create(contact_id="c-1", company_id="co-1", draft=draft, now=T0)


def patch(**values: object) -> ContactPatch:
    return ContactPatch.build(definitions=DEFINITIONS, **values)  # type: ignore[arg-type]


# --- drafts and creation ---------------------------------------------------------------


def test_draft_normalizes_every_field() -> None:
    draft = ContactDraft.build(
        definitions=DEFINITIONS,
        phone="(11) 8765-4321",
        name="  Maria   da\nSilva ",
        email=" Maria@Example.COM ",
        tags=["VIP", " vip ", "", "Síndico"],
        condominio=" Residencial Jardim ",
        endereco="Rua A, 10",
        cargo="síndica",
        custom_fields={"bloco": "bloco a", "nascimento": "01/03/1980", "andar": " "},
    )
    assert draft == ContactDraft(
        phone_e164="+5511987654321",
        name="Maria da Silva",
        email="Maria@example.com",
        tags=("VIP", "Síndico"),
        condominio="Residencial Jardim",
        endereco="Rua A, 10",
        cargo="síndica",
        custom_fields={"bloco": "Bloco A", "nascimento": "1980-03-01"},
    )


def test_draft_reports_every_invalid_field_at_once() -> None:
    with pytest.raises(ContactValidationError) as caught:
        ContactDraft.build(
            definitions=DEFINITIONS,
            phone="123",
            email="maria@",
            name="x" * 201,
            custom_fields={"bloco": "Bloco Z", "apto": "12"},
        )
    assert caught.value.issues == (
        FieldIssue("phone", IssueCode.INVALID, "the phone is too short"),
        FieldIssue("name", IssueCode.TOO_LONG, "longer than 200 characters"),
        FieldIssue("email", IssueCode.INVALID, "'maria@' is not an e-mail address"),
        FieldIssue(
            "custom_fields.bloco", IssueCode.INVALID, "'Bloco Z' is not one of Bloco A, Bloco B"
        ),
        FieldIssue(
            "custom_fields.apto",
            IssueCode.UNKNOWN_FIELD,
            "no custom field 'apto' is defined for this company",
        ),
    )
    assert caught.value.field == "phone"
    assert caught.value.message == "the phone is too short"


def test_a_draft_needs_a_phone() -> None:
    with pytest.raises(ContactValidationError) as caught:
        ContactDraft.build(definitions={}, phone="  ")
    assert caught.value.issues == (
        FieldIssue("phone", IssueCode.REQUIRED, "a phone number is required"),
    )


def test_create_starts_at_version_one_with_empty_defaults() -> None:
    contact = new_contact()
    assert contact == Contact(
        id="c-1",
        company_id="co-1",
        phone_e164="+5511987654321",
        created_at=T0,
        updated_at=T0,
    )
    assert contact.version == 1
    assert not contact.is_deleted
    assert not contact.opted_out


def test_create_from_an_opted_out_draft_records_the_opt_out() -> None:
    draft = ContactDraft.build(
        definitions={}, phone="11987654321", opted_out=True, opt_out_reason="import"
    )
    contact = Contact.create(contact_id="c-1", company_id="co-1", draft=draft, now=T0)
    assert (contact.opted_out, contact.opted_out_at, contact.opt_out_reason) == (
        True,
        T0,
        "import",
    )


def test_naive_times_are_refused() -> None:
    draft = ContactDraft.build(definitions={}, phone="11987654321")
    with pytest.raises(ValueError, match="timezone-aware"):
        Contact.create(contact_id="c", company_id="co", draft=draft, now=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        new_contact().delete(datetime(2025, 1, 1))


# --- patches -----------------------------------------------------------------------------


def test_patch_reports_changed_fields_in_contact_order_and_bumps_version_once() -> None:
    contact = new_contact(name="Maria", cargo="síndica")
    changed = contact.apply_patch(
        patch(
            custom_fields={"nascimento": date(1980, 3, 1), "bloco": "Bloco B"},
            cargo="zeladora",
            name="Maria",
            phone="+55 21 99999-8888",
            tags=["novo"],
        ),
        T1,
    )
    assert changed == (
        "phone_e164",
        "tags",
        "cargo",
        "custom_fields.bloco",
        "custom_fields.nascimento",
    )
    assert contact.version == 2
    assert contact.updated_at == T1
    assert contact.created_at == T0
    assert contact.phone_e164 == "+5521999998888"
    assert contact.custom_fields == {"bloco": "Bloco B", "nascimento": "1980-03-01"}


def test_a_patch_that_changes_nothing_keeps_the_version() -> None:
    contact = new_contact(name="Maria", custom_fields={"bloco": "Bloco A"})  # type: ignore[arg-type]
    changed = contact.apply_patch(
        patch(name=" Maria ", custom_fields={"bloco": "BLOCO A", "andar": None}), T1
    )
    assert changed == ()
    assert (contact.version, contact.updated_at) == (1, T0)


def test_none_leaves_a_field_and_blank_clears_it() -> None:
    contact = new_contact(name="Maria", email="maria@example.com", tags=["a"])  # type: ignore[arg-type]
    changed = contact.apply_patch(patch(email="", tags=[], custom_fields={"andar": "3"}), T1)
    assert changed == ("email", "tags", "custom_fields.andar")
    assert (contact.name, contact.email, contact.tags) == ("Maria", "", ())
    assert contact.apply_patch(patch(custom_fields={"andar": ""}), T2) == ("custom_fields.andar",)
    assert contact.custom_fields == {}
    assert contact.version == 3


def test_patch_cannot_clear_the_phone() -> None:
    with pytest.raises(ContactValidationError) as caught:
        patch(phone="")
    assert caught.value.issues == (
        FieldIssue("phone", IssueCode.REQUIRED, "a phone number is required"),
    )


def test_a_deleted_contact_cannot_be_patched() -> None:
    contact = new_contact()
    contact.delete(T1)
    with pytest.raises(ContactIsDeleted):
        contact.apply_patch(patch(name="Ana"), T2)
    assert contact.version == 2


@given(st.text(max_size=30), st.lists(st.text(max_size=10), max_size=5))
def test_applying_a_patch_twice_changes_nothing_the_second_time(name: str, tags: list[str]) -> None:
    contact = new_contact()
    the_patch = patch(name=name, tags=tags)
    first = contact.apply_patch(the_patch, T1)
    assert contact.version == (2 if first else 1)
    assert contact.apply_patch(the_patch, T2) == ()
    assert contact.version == (2 if first else 1)


def test_merge_patch_adds_tags_and_keeps_what_the_row_leaves_blank() -> None:
    contact = new_contact(name="Maria", cargo="síndica", tags=["VIP"])  # type: ignore[arg-type]
    row = ContactDraft.build(
        definitions=DEFINITIONS,
        phone="11 98765-4321",
        name="Maria Souza",
        tags=["vip", "Inadimplente"],
        custom_fields={"andar": "7"},
    )
    changed = contact.apply_patch(row.merge_patch(contact), T1)
    assert changed == ("name", "tags", "custom_fields.andar")
    assert contact.tags == ("VIP", "Inadimplente")
    assert contact.cargo == "síndica"


def test_merge_patch_without_tags_keeps_the_tags() -> None:
    contact = new_contact(tags=["VIP"])  # type: ignore[arg-type]
    row = ContactDraft.build(definitions={}, phone="11987654321")
    assert contact.apply_patch(row.merge_patch(contact), T1) == ()


# --- delete, restore, consent ------------------------------------------------------------


def test_delete_and_restore_are_idempotent_and_versioned() -> None:
    contact = new_contact()
    assert contact.delete(T1) is True
    assert (contact.deleted_at, contact.version, contact.updated_at) == (T1, 2, T1)
    assert contact.delete(T2) is False
    assert (contact.deleted_at, contact.version) == (T1, 2)
    assert contact.restore(T2) is True
    assert (contact.deleted_at, contact.version, contact.updated_at) == (None, 3, T2)
    assert contact.restore(T2) is False
    assert contact.version == 3


def test_opt_out_keeps_the_first_time_and_reason() -> None:
    contact = new_contact()
    assert contact.opt_out(T1, reason=" keyword SAIR ") is True
    assert contact.opt_out(T2, reason="api") is False
    assert (contact.opted_out, contact.opted_out_at, contact.opt_out_reason) == (
        True,
        T1,
        "keyword SAIR",
    )
    assert contact.version == 2


def test_opt_in_clears_the_opt_out() -> None:
    contact = new_contact()
    assert contact.opt_in(T1) is False
    contact.opt_out(T1, "SAIR")
    assert contact.opt_in(T2) is True
    assert (contact.opted_out, contact.opted_out_at, contact.opt_out_reason) == (False, None, "")
    assert (contact.version, contact.updated_at) == (3, T2)


def test_consent_is_recorded_on_deleted_contacts_and_survives_restore() -> None:
    contact = new_contact()
    contact.delete(T1)
    assert contact.opt_out(T1, "SAIR") is True
    contact.restore(T2)
    assert contact.opted_out
    assert contact.version == 4


def test_an_overlong_opt_out_reason_is_rejected_without_change() -> None:
    contact = new_contact()
    with pytest.raises(ContactValidationError) as caught:
        contact.opt_out(T1, "x" * 501)
    assert caught.value.field == "opt_out_reason"
    assert not contact.opted_out
    assert contact.version == 1


# --- field cleaners ----------------------------------------------------------------------


def test_fold_ignores_case_accents_and_spacing() -> None:
    assert fold(" Condomínio  SÃO João ") == "condominio sao joao"
    assert fold("AÇÃO") == fold("acao")


def test_clean_text_makes_one_trimmed_line() -> None:
    assert clean_text("endereco", " Rua\tA,\r\n 10\x00 ") == "Rua A, 10"
    assert clean_text("cargo", None) == ""
    assert clean_text("name", 42) == "42"
    with pytest.raises(ContactValidationError, match="longer than 100 characters"):
        clean_text("cargo", "x" * 101)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" Ana@Example.COM ", "Ana@example.com"), ("", ""), ("a.b+c@mail.co.br", "a.b+c@mail.co.br")],
)
def test_clean_email(raw: str, expected: str) -> None:
    assert clean_email(raw) == expected


@pytest.mark.parametrize("raw", ["ana@", "ana example.com", "a@b", "a@@b.com", "@b.com"])
def test_clean_email_rejects_non_addresses(raw: str) -> None:
    with pytest.raises(ContactValidationError) as caught:
        clean_email(raw)
    assert caught.value.field == "email"


def test_clean_tags_dedupes_by_fold_and_keeps_order() -> None:
    assert clean_tags(["Síndico", " VIP", "sindico", "", "vip ", "Novo"]) == (
        "Síndico",
        "VIP",
        "Novo",
    )


def test_clean_tags_limits() -> None:
    with pytest.raises(ContactValidationError, match="more than 50 tags"):
        clean_tags(f"t{n}" for n in range(51))
    with pytest.raises(ContactValidationError, match="longer than 50 characters"):
        clean_tags(["x" * 51])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (11987654321, "+5511987654321"),
        (5511987654321.0, "+5511987654321"),
        (" 11 98765-4321", "+5511987654321"),
    ],
)
def test_clean_phone_reads_spreadsheet_numbers(raw: RawValue, expected: str) -> None:
    assert clean_phone(raw) == expected


def test_clean_phone_explains_scientific_notation() -> None:
    with pytest.raises(ContactValidationError) as caught:
        clean_phone("5,51199E+12")
    assert caught.value.message == (
        "the phone '5,51199E+12' is in scientific notation, which loses digits: format the "
        "column as text in the spreadsheet and export it again"
    )


@pytest.mark.parametrize("raw", [1.5, date(2024, 1, 1), True])
def test_clean_phone_rejects_non_text(raw: RawValue) -> None:
    with pytest.raises(ContactValidationError, match="must be text"):
        clean_phone(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (0, False),
        ("Sim", True),
        ("NÃO", False),
        ("x", True),
        ("n", False),
        ("Verdadeiro", True),
        ("talvez", None),
        (2, None),
        (date(2024, 1, 1), None),
    ],
)
def test_parse_boolean(raw: RawValue, expected: bool | None) -> None:
    assert parse_boolean(raw) is expected


# --- custom field definitions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.234,56", "1234.56"),
        ("1,234.56", "1234.56"),
        ("12,5", "12.5"),
        ("12.5", "12.5"),
        ("1.234.567", "1234567"),
        ("1,234,567.5", "1234567.5"),
        ("1.234", "1.234"),
        ("-1.234,50", "-1234.5"),
        ("-3", "-3"),
        (" 7 ", "7"),
        (10, "10"),
        (2.50, "2.5"),
        (0.1, "0.1"),
        (Decimal("1E+3"), "1000"),
        ("-0", "0"),
        ("100", "100"),
    ],
)
def test_number_values_are_canonical(raw: RawValue, expected: str) -> None:
    assert ANDAR.coerce(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["abc", "1e5", "1,2,3.4.5", "1.234,567,890", "1.234.56", True, float("nan"), date(2024, 1, 1)],
)
def test_invalid_numbers_are_rejected(raw: RawValue) -> None:
    with pytest.raises(ContactValidationError) as caught:
        ANDAR.coerce(raw)
    assert caught.value.field == "custom_fields.andar"
    assert caught.value.issues[0].code is IssueCode.INVALID


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("01/03/2024", "2024-03-01"),
        ("1/3/2024", "2024-03-01"),
        ("01-03-2024", "2024-03-01"),
        ("2024-03-01", "2024-03-01"),
        (date(2024, 3, 1), "2024-03-01"),
        (datetime(2024, 3, 1, 15, 30), "2024-03-01"),
    ],
)
def test_date_values_are_iso(raw: RawValue, expected: str) -> None:
    assert NASCIMENTO.coerce(raw) == expected


@pytest.mark.parametrize("raw", ["31/02/2024", "03/2024", "ontem", 20240301])
def test_invalid_dates_are_rejected(raw: RawValue) -> None:
    with pytest.raises(ContactValidationError, match="is not a date"):
        NASCIMENTO.coerce(raw)


def test_boolean_and_choice_and_text_values() -> None:
    ativo = CustomFieldDefinition(key="ativo", label="Ativo", type=FieldType.BOOLEAN)
    assert (ativo.coerce("SIM"), ativo.coerce(0)) == ("true", "false")
    with pytest.raises(ContactValidationError, match="'talvez' is not yes or no"):
        ativo.coerce("talvez")
    unidade = CustomFieldDefinition(
        key="unidade", label="Unidade", type=FieldType.CHOICE, options=("Praça", "Centro")
    )
    assert unidade.coerce(" PRACA ") == "Praça"
    obs = CustomFieldDefinition(key="obs", label="Observações", type=FieldType.TEXT)
    assert obs.coerce(" ligar\n depois ") == "ligar depois"
    assert obs.coerce(12) == "12"
    with pytest.raises(ContactValidationError, match="longer than 1000"):
        obs.coerce("x" * 1001)


def test_coerce_custom_value_treats_blank_as_no_value() -> None:
    assert coerce_custom_value(DEFINITIONS, "andar", "  ") is None
    assert coerce_custom_value(DEFINITIONS, "andar", "3") == "3"
    with pytest.raises(ContactValidationError) as caught:
        coerce_custom_value(DEFINITIONS, "apto", "3")
    assert caught.value.issues[0].code is IssueCode.UNKNOWN_FIELD


@pytest.mark.parametrize(
    ("kwargs", "issues"),
    [
        (
            {"key": "Bloco", "label": "Bloco", "type": FieldType.TEXT},
            [("key", IssueCode.INVALID)],
        ),
        ({"key": "cargo", "label": "Cargo", "type": FieldType.TEXT}, [("key", IssueCode.INVALID)]),
        ({"key": "x" * 41, "label": "X", "type": FieldType.TEXT}, [("key", IssueCode.INVALID)]),
        ({"key": "bloco", "label": "  ", "type": FieldType.TEXT}, [("label", IssueCode.REQUIRED)]),
        (
            {"key": "bloco", "label": "Bloco", "type": FieldType.CHOICE},
            [("options", IssueCode.REQUIRED)],
        ),
        (
            {"key": "bloco", "label": "B", "type": FieldType.CHOICE, "options": ("A", "á")},
            [("options", IssueCode.INVALID)],
        ),
        (
            {"key": "bloco", "label": "B", "type": FieldType.NUMBER, "options": ("1",)},
            [("options", IssueCode.INVALID)],
        ),
        (
            {"key": "1x", "label": "", "type": FieldType.CHOICE, "options": ("",)},
            [
                ("key", IssueCode.INVALID),
                ("label", IssueCode.REQUIRED),
                ("options", IssueCode.INVALID),
            ],
        ),
    ],
)
def test_invalid_definitions_are_rejected(
    kwargs: dict[str, object], issues: list[tuple[str, IssueCode]]
) -> None:
    with pytest.raises(ContactValidationError) as caught:
        CustomFieldDefinition(**kwargs)  # type: ignore[arg-type]
    assert [(issue.field, issue.code) for issue in caught.value.issues] == issues


def test_definition_type_may_be_given_as_text() -> None:
    definition = CustomFieldDefinition(key="andar", label="Andar", type="number")  # type: ignore[arg-type]
    assert definition.type is FieldType.NUMBER
    with pytest.raises(ContactValidationError) as caught:
        CustomFieldDefinition(key="andar", label="Andar", type="integer")  # type: ignore[arg-type]
    assert caught.value.issues == (
        FieldIssue(
            "type",
            IssueCode.INVALID,
            "'integer' is not a field type: use text, number, date, boolean, choice",
        ),
    )


def test_definitions_trim_label_and_options() -> None:
    definition = CustomFieldDefinition(
        key="bloco", label=" Bloco ", type=FieldType.CHOICE, options=(" A ", "B")
    )
    assert (definition.label, definition.options) == ("Bloco", ("A", "B"))


def test_definitions_by_key_refuses_a_repeated_key() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        definitions_by_key([ANDAR, ANDAR])
