"""The contact entity, its validated inputs, and the company's custom field definitions.

A :class:`Contact` is the full state the contacts service owns for one person of one company,
the same fields the ``esquadrao.contacts.v1.Contact`` event message carries. It changes only
through its methods, each of which reports whether (or what) it changed and, when it did,
moves ``version`` up by one and ``updated_at`` to the given time: the version is what read
models in other services compare to drop stale events, so no change may skip it and no
non-change may bump it.

Raw input (API bodies, import rows) never reaches the entity directly: it is first turned
into a :class:`ContactDraft` (a new contact) or a :class:`ContactPatch` (changes to one), whose
``build`` class methods normalize every value and raise :class:`ContactValidationError` with
one :class:`FieldIssue` per invalid field. The per-field cleaners (:func:`clean_phone`,
:func:`clean_text`, :func:`clean_email`, :func:`clean_tags`,
:meth:`CustomFieldDefinition.coerce`) are public so that importers can report problems per
column.

Custom fields: besides the first-class ``condominio``, ``endereco`` and ``cargo``, a company
defines its own fields (:class:`CustomFieldDefinition`: key, label, type). Values are kept
as canonical text (``"1234.5"``, ``"2024-03-01"``, ``"true"``, the option as defined), the
form the event contract (``map<string, string>``) and message templates use; a field's type
says how filters compare them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final, Literal, TypeAlias, TypeVar

from contacts.domain.phones import DEFAULT_REGION, InvalidPhoneNumber, normalize_phone

#: A value as it arrives from a JSON body or a spreadsheet cell, before validation.
#: ``None`` and blank strings mean "no value".
RawValue: TypeAlias = str | int | float | Decimal | date | None

#: The first-class free-text fields of a contact.
TextField: TypeAlias = Literal["name", "condominio", "endereco", "cargo"]

#: Longest accepted value of each free-text field, in characters after cleaning.
TEXT_FIELD_MAX_LENGTHS: Final[Mapping[TextField, int]] = {
    "name": 200,
    "condominio": 200,
    "endereco": 500,
    "cargo": 100,
}
EMAIL_MAX_LENGTH: Final = 254
TAG_MAX_LENGTH: Final = 50
MAX_TAGS: Final = 50
CUSTOM_TEXT_MAX_LENGTH: Final = 1000
OPT_OUT_REASON_MAX_LENGTH: Final = 500
LABEL_MAX_LENGTH: Final = 100
MAX_CHOICE_OPTIONS: Final = 100
#: Longest canonical text of a number field value (digits, sign and point).
NUMBER_MAX_LENGTH: Final = 40

#: Prefix of the changed-field name of a custom field (``custom_fields.<key>``), as in
#: ``ContactUpdated.changed_fields``.
CUSTOM_FIELDS_PREFIX: Final = "custom_fields."

#: Names a custom field key may not take: the contact's own fields (and their usual input
#: spellings), so that templates and filters never see two meanings for one name.
RESERVED_FIELD_KEYS: Final = frozenset(
    {
        "id",
        "company_id",
        "phone",
        "phone_e164",
        "name",
        "email",
        "tags",
        "condominio",
        "endereco",
        "cargo",
        "custom_fields",
        "opted_out",
        "opted_out_at",
        "opt_out_reason",
        "created_at",
        "updated_at",
        "deleted_at",
        "version",
    }
)

_FIELD_KEY: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")
_WHITESPACE: Final = re.compile(r"\s+")
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_PLAIN_NUMBER: Final = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)")
_GROUPED_NUMBER: Final = re.compile(
    r"[+-]?\d{1,3}(?P<group>[.,])\d{3}(?:(?P=group)\d{3})*(?:(?P<point>[.,])\d*)?"
)
_SCIENTIFIC_NOTATION: Final = re.compile(r"\d+([.,]\d+)?\s*[eE]\s*\+?\d+")
_ISO_DATE: Final = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_BRAZILIAN_DATE: Final = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")
_TRUE_WORDS: Final = frozenset({"true", "sim", "s", "yes", "y", "1", "verdadeiro", "v", "x"})
_FALSE_WORDS: Final = frozenset({"false", "nao", "n", "no", "0", "falso", "f"})


def fold(text: str) -> str:
    """The comparison key of a word people type: case, accents and spacing ignored.

    ``fold(" Condomínio  SÃO João ") == "condominio sao joao"``. Used wherever two spellings
    of one word must match (choice options, tags, boolean words, keywords, headers).
    """
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return _WHITESPACE.sub(" ", bare.casefold()).strip()


class IssueCode(StrEnum):
    """What kind of problem a :class:`FieldIssue` reports, for clients to branch on."""

    REQUIRED = "required"
    INVALID = "invalid"
    TOO_LONG = "too_long"
    TOO_MANY = "too_many"
    UNKNOWN_FIELD = "unknown_field"


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """One invalid input: ``field`` (``"email"``, ``"custom_fields.bloco"``), a machine
    readable ``code`` and a ``message`` for people."""

    field: str
    code: IssueCode
    message: str


class ContactValidationError(ValueError):
    """Input that cannot become contact state; carries one issue per invalid field.

    ``field`` and ``message`` are those of the first issue, for callers that report one.
    """

    def __init__(self, *issues: FieldIssue) -> None:
        if not issues:
            raise ValueError("a ContactValidationError needs at least one issue")
        super().__init__("; ".join(f"{issue.field}: {issue.message}" for issue in issues))
        self.issues: tuple[FieldIssue, ...] = issues

    @property
    def field(self) -> str:
        return self.issues[0].field

    @property
    def message(self) -> str:
        return self.issues[0].message


class ContactIsDeleted(Exception):
    """A change of data was asked of a deleted contact; it must be restored first."""

    def __init__(self, contact_id: str) -> None:
        super().__init__(f"contact {contact_id} is deleted: restore it before changing it")
        self.contact_id = contact_id


def _issue(field_name: str, code: IssueCode, message: str) -> ContactValidationError:
    return ContactValidationError(FieldIssue(field_name, code, message))


def _single_line(text: str) -> str:
    """``text`` trimmed, with every run of whitespace (newlines too) made one space and
    control characters removed."""
    printable = "".join(
        char for char in text if char.isspace() or unicodedata.category(char) != "Cc"
    )
    return _WHITESPACE.sub(" ", printable).strip()


def _text_of(value: RawValue) -> str:
    """Text of a raw value; numbers and dates in their canonical form."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return _canonical_number(value) or str(value)
    return value.isoformat()


def _check_length(field_name: str, text: str, max_length: int) -> str:
    if len(text) > max_length:
        raise _issue(field_name, IssueCode.TOO_LONG, f"longer than {max_length} characters")
    return text


def is_blank(value: RawValue) -> bool:
    """True for the values that mean "no value": ``None`` and blank strings."""
    return value is None or (isinstance(value, str) and not value.strip())


def clean_phone(value: RawValue, default_region: str = DEFAULT_REGION) -> str:
    """The E.164 form of a phone (see :func:`contacts.domain.phones.normalize_phone`).

    Integers are read as their digits (spreadsheets store phones as numbers); text in
    scientific notation (``5,51199E+12``, what a spreadsheet exports for a phone typed as a
    number) is rejected with a hint, since its last digits are gone. Raises
    ContactValidationError on field ``phone``: ``required`` when blank, ``invalid`` when the
    number does not normalize.
    """
    if is_blank(value):
        raise _issue("phone", IssueCode.REQUIRED, "a phone number is required")
    if isinstance(value, str) and _SCIENTIFIC_NOTATION.fullmatch(value.strip()):
        raise _issue(
            "phone",
            IssueCode.INVALID,
            f"the phone {value.strip()!r} is in scientific notation, which loses digits: "
            "format the column as text in the spreadsheet and export it again",
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _issue("phone", IssueCode.INVALID, "a phone number must be text")
    try:
        return normalize_phone(str(value), default_region)
    except InvalidPhoneNumber as error:
        raise _issue("phone", IssueCode.INVALID, f"the phone {error.reason}") from None


def clean_text(field_name: TextField, value: RawValue) -> str:
    """A free-text field on one line, trimmed (``""`` when blank).

    Raises ContactValidationError (``too_long``) beyond the field's maximum length.
    """
    text = _single_line(_text_of(value))
    return _check_length(field_name, text, TEXT_FIELD_MAX_LENGTHS[field_name])


def clean_email(value: RawValue) -> str:
    """An e-mail address, trimmed, with its domain lower-cased (``""`` when blank).

    Only the shape ``local@domain.tld`` is checked: deliverability is not this layer's
    business. Raises ContactValidationError on field ``email``.
    """
    text = _text_of(value).strip()
    if not text:
        return ""
    _check_length("email", text, EMAIL_MAX_LENGTH)
    if not _EMAIL.fullmatch(text):
        raise _issue("email", IssueCode.INVALID, f"{text!r} is not an e-mail address")
    local, domain = text.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def clean_tags(values: Iterable[str]) -> tuple[str, ...]:
    """Tags trimmed, blanks dropped, duplicates (by :func:`fold`) dropped, first spelling
    and order kept.

    Raises ContactValidationError on field ``tags`` for a tag longer than
    ``TAG_MAX_LENGTH`` or more than ``MAX_TAGS`` tags.
    """
    tags: dict[str, str] = {}
    for value in values:
        tag = _single_line(value)
        if not tag:
            continue
        _check_length("tags", tag, TAG_MAX_LENGTH)
        tags.setdefault(fold(tag), tag)
    if len(tags) > MAX_TAGS:
        raise _issue("tags", IssueCode.TOO_MANY, f"more than {MAX_TAGS} tags")
    return tuple(tags.values())


def clean_opt_out_reason(value: str) -> str:
    """An opt-out reason on one line; raises ContactValidationError when too long."""
    return _check_length("opt_out_reason", _single_line(value), OPT_OUT_REASON_MAX_LENGTH)


def parse_boolean(value: RawValue) -> bool | None:
    """A yes/no value as spreadsheets and people write it, or None when not one.

    Accepts booleans, the integers 0 and 1, and (case and accent insensitive) true/false,
    sim/não, s/n, yes/no, y/n, verdadeiro/falso, v/f, 1/0, and ``x`` (a ticked cell) for
    true.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if not isinstance(value, str):
        return None
    word = fold(value)
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


def _canonical_number(value: int | float | Decimal) -> str | None:
    """Plain decimal text of a number (no exponent, no trailing zeros); None if it is not
    finite or so large or small that its plain text would exceed ``NUMBER_MAX_LENGTH``."""
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite() or abs(number.adjusted()) > NUMBER_MAX_LENGTH:
        return None
    if number.is_zero():
        return "0"
    return format(number.normalize(), "f")


def _parse_number_text(text: str) -> Decimal | None:
    """A number written with ``.`` or ``,`` as decimal separator, or None.

    When both separators appear, the last one is the decimal separator and the other groups
    thousands (``1.234,56`` and ``1,234.56``). A lone ``,`` is a decimal comma (``12,5``),
    a lone ``.`` a decimal point (``12.5``); repeated separators of one kind group thousands
    (``1.234.567``). Exponents are not accepted.
    """
    compact = text.replace(" ", "")
    if _PLAIN_NUMBER.fullmatch(compact):
        return Decimal(compact.replace(",", "."))
    grouped = _GROUPED_NUMBER.fullmatch(compact)
    if grouped is None or grouped["point"] == grouped["group"]:
        return None
    digits = compact.replace(grouped["group"], "")
    if grouped["point"]:
        digits = digits.replace(grouped["point"], ".")
    return Decimal(digits)


def _parse_date_text(text: str) -> date | None:
    """A date written ISO style (``2024-03-01``) or Brazilian style day first
    (``01/03/2024``, ``1-3-2024``, ``01.03.2024``), or None."""
    iso = _ISO_DATE.fullmatch(text)
    brazilian = _BRAZILIAN_DATE.fullmatch(text)
    try:
        if iso:
            return date(int(iso[1]), int(iso[2]), int(iso[3]))
        if brazilian:
            return date(int(brazilian[3]), int(brazilian[2]), int(brazilian[1]))
    except ValueError:
        return None
    return None


class FieldType(StrEnum):
    """The type of a company-defined field, which decides how values are validated."""

    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    BOOLEAN = "boolean"
    CHOICE = "choice"


@dataclass(frozen=True, slots=True)
class CustomFieldDefinition:
    """A field a company adds to its contacts, so templates and filters know it.

    ``key`` is the name used in ``custom_fields``, templates (``{bloco}``) and import
    mappings (``custom:bloco``): lowercase ASCII letters, digits and ``_``, starting with a
    letter, at most 40 characters, and not one of ``RESERVED_FIELD_KEYS``. ``label`` is
    what people read. ``options`` are the allowed values of a ``choice`` field (at least one,
    distinct by :func:`fold`) and must be empty for other types.

    Construction validates all this and raises ContactValidationError (fields ``type``,
    ``key``, ``label``, ``options``); ``type`` may be given as its text (``"choice"``).
    """

    key: str
    label: str
    type: FieldType
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        issues: list[FieldIssue] = []
        try:
            object.__setattr__(self, "type", FieldType(self.type))
        except ValueError:
            allowed = ", ".join(member.value for member in FieldType)
            raise _issue(
                "type", IssueCode.INVALID, f"{self.type!r} is not a field type: use {allowed}"
            ) from None
        if not _FIELD_KEY.fullmatch(self.key):
            issues.append(
                FieldIssue(
                    "key",
                    IssueCode.INVALID,
                    "a key has 1 to 40 lowercase letters, digits or '_' and starts with a letter",
                )
            )
        elif self.key in RESERVED_FIELD_KEYS:
            issues.append(
                FieldIssue("key", IssueCode.INVALID, f"{self.key!r} is a contact field name")
            )
        label = _single_line(self.label)
        if not label:
            issues.append(FieldIssue("label", IssueCode.REQUIRED, "a label is required"))
        elif len(label) > LABEL_MAX_LENGTH:
            issues.append(
                FieldIssue(
                    "label", IssueCode.TOO_LONG, f"longer than {LABEL_MAX_LENGTH} characters"
                )
            )
        object.__setattr__(self, "label", label)
        issues.extend(self._option_issues())
        if issues:
            raise ContactValidationError(*issues)
        object.__setattr__(self, "options", tuple(_single_line(o) for o in self.options))

    def _option_issues(self) -> list[FieldIssue]:
        if self.type is not FieldType.CHOICE:
            if self.options:
                return [FieldIssue("options", IssueCode.INVALID, "only choice fields have options")]
            return []
        options = [_single_line(option) for option in self.options]
        if not options:
            return [FieldIssue("options", IssueCode.REQUIRED, "a choice needs options")]
        if len(options) > MAX_CHOICE_OPTIONS:
            return [
                FieldIssue("options", IssueCode.TOO_MANY, f"more than {MAX_CHOICE_OPTIONS} options")
            ]
        if any(not option or len(option) > LABEL_MAX_LENGTH for option in options):
            return [
                FieldIssue(
                    "options",
                    IssueCode.INVALID,
                    f"options have 1 to {LABEL_MAX_LENGTH} characters",
                )
            ]
        if len({fold(option) for option in options}) != len(options):
            return [FieldIssue("options", IssueCode.INVALID, "options repeat")]
        return []

    @property
    def field_name(self) -> str:
        """The name of this field in issues and changed fields: ``custom_fields.<key>``."""
        return CUSTOM_FIELDS_PREFIX + self.key

    def coerce(self, value: RawValue) -> str:
        """The canonical text of a value of this field.

        * text: one line, trimmed, at most ``CUSTOM_TEXT_MAX_LENGTH`` characters;
        * number: ints, floats, decimals, or text with a decimal comma or point and
          optional grouping (``12,5``, ``1.234,56``, ``1,234.56``; a lone ``.`` is a
          decimal point); canonical ``"-1234.5"`` (no grouping, exponent or trailing zeros);
        * date: dates (datetimes lose their time), ``YYYY-MM-DD`` or ``DD/MM/YYYY``;
          canonical ``"2024-03-01"``;
        * boolean: as :func:`parse_boolean`; canonical ``"true"`` / ``"false"``;
        * choice: one of the options, case and accent insensitive; canonical as defined.

        ``value`` must not be blank (see :func:`is_blank`): callers decide what no value
        means. Raises ContactValidationError on ``custom_fields.<key>``.
        """
        coerced = _COERCERS[self.type](self, value)
        if coerced is None:
            raise _issue(self.field_name, IssueCode.INVALID, self._expectation(value))
        return coerced

    def _expectation(self, value: RawValue) -> str:
        shown = _text_of(value) if not isinstance(value, str) else value.strip()
        if self.type is FieldType.CHOICE:
            return f"{shown!r} is not one of {', '.join(self.options)}"
        expected = {
            FieldType.TEXT: "text",
            FieldType.NUMBER: "a number",
            FieldType.DATE: "a date (YYYY-MM-DD or DD/MM/YYYY)",
            FieldType.BOOLEAN: "yes or no (sim/não, true/false)",
        }[self.type]
        return f"{shown!r} is not {expected}"

    def _coerce_text(self, value: RawValue) -> str:
        return _check_length(self.field_name, _single_line(_text_of(value)), CUSTOM_TEXT_MAX_LENGTH)

    def _coerce_number(self, value: RawValue) -> str | None:
        if isinstance(value, bool) or value is None or isinstance(value, date):
            return None
        if isinstance(value, str):
            parsed = _parse_number_text(value.strip())
            if parsed is None:
                return None
            value = parsed
        text = _canonical_number(value)
        if text is None:
            return None
        return _check_length(self.field_name, text, NUMBER_MAX_LENGTH)

    def _coerce_date(self, value: RawValue) -> str | None:
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, str):
            parsed = _parse_date_text(value.strip())
            return None if parsed is None else parsed.isoformat()
        return None

    def _coerce_boolean(self, value: RawValue) -> str | None:
        parsed = parse_boolean(value)
        return None if parsed is None else ("true" if parsed else "false")

    def _coerce_choice(self, value: RawValue) -> str | None:
        wanted = fold(_text_of(value))
        return next((option for option in self.options if fold(option) == wanted), None)


_COERCERS: Final = {
    FieldType.TEXT: CustomFieldDefinition._coerce_text,
    FieldType.NUMBER: CustomFieldDefinition._coerce_number,
    FieldType.DATE: CustomFieldDefinition._coerce_date,
    FieldType.BOOLEAN: CustomFieldDefinition._coerce_boolean,
    FieldType.CHOICE: CustomFieldDefinition._coerce_choice,
}


def definitions_by_key(
    definitions: Iterable[CustomFieldDefinition],
) -> dict[str, CustomFieldDefinition]:
    """Index a company's field definitions by key; raises ValueError on a repeated key."""
    indexed: dict[str, CustomFieldDefinition] = {}
    for definition in definitions:
        if definition.key in indexed:
            raise ValueError(f"custom field {definition.key!r} is defined twice")
        indexed[definition.key] = definition
    return indexed


def coerce_custom_value(
    definitions: Mapping[str, CustomFieldDefinition], key: str, value: RawValue
) -> str | None:
    """The canonical value of custom field ``key``, or None when ``value`` is blank.

    Raises ContactValidationError (``unknown_field``) when the company has not defined
    ``key``, or as :meth:`CustomFieldDefinition.coerce`.
    """
    definition = definitions.get(key)
    if definition is None:
        raise _issue(
            CUSTOM_FIELDS_PREFIX + key,
            IssueCode.UNKNOWN_FIELD,
            f"no custom field {key!r} is defined for this company",
        )
    if is_blank(value):
        return None
    return definition.coerce(value)


_T = TypeVar("_T")


def _attempt(issues: list[FieldIssue], clean: Callable[[], _T]) -> _T | None:
    """Run one field's cleaner, adding its issues to ``issues`` instead of raising, so that
    one ContactValidationError can report every invalid field of an input."""
    try:
        return clean()
    except ContactValidationError as error:
        issues.extend(error.issues)
        return None


def _given_text(field_name: TextField, value: RawValue) -> str | None:
    return None if is_blank(value) else clean_text(field_name, value)


def _given_email(value: RawValue) -> str | None:
    return None if is_blank(value) else clean_email(value)


def _clean_custom_fields(
    definitions: Mapping[str, CustomFieldDefinition],
    values: Mapping[str, RawValue],
    issues: list[FieldIssue],
) -> dict[str, str | None]:
    """Canonical custom field values by key; None for a blank value."""
    cleaned: dict[str, str | None] = {}
    for key, value in values.items():
        try:
            cleaned[key] = coerce_custom_value(definitions, key, value)
        except ContactValidationError as error:
            issues.extend(error.issues)
    return cleaned


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactDraft:
    """The validated data of a contact to create, or of an import row.

    ``None`` (and an empty ``custom_fields``) means the input gave no value: a new contact
    gets an empty value, and :meth:`merge_patch` leaves an existing contact's value alone.
    ``opted_out`` True means the input says the contact opted out (an import column); False
    says nothing, and never opts a contact back in.

    Build it with :meth:`build`; the constructor trusts its arguments.
    """

    phone_e164: str
    name: str | None = None
    email: str | None = None
    tags: tuple[str, ...] | None = None
    condominio: str | None = None
    endereco: str | None = None
    cargo: str | None = None
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    opted_out: bool = False
    opt_out_reason: str = ""

    @classmethod
    def build(
        cls,
        *,
        definitions: Mapping[str, CustomFieldDefinition],
        phone: RawValue,
        name: RawValue = None,
        email: RawValue = None,
        tags: Iterable[str] | None = None,
        condominio: RawValue = None,
        endereco: RawValue = None,
        cargo: RawValue = None,
        custom_fields: Mapping[str, RawValue] | None = None,
        opted_out: bool = False,
        opt_out_reason: str = "",
        default_region: str = DEFAULT_REGION,
    ) -> ContactDraft:
        """Validate and normalize raw input into a draft.

        Blank values count as not given; custom fields must be defined in ``definitions``
        (by key). Raises ContactValidationError listing every invalid field, in the order of
        the Contact message's fields.
        """
        issues: list[FieldIssue] = []
        draft = cls(
            phone_e164=_attempt(issues, lambda: clean_phone(phone, default_region)) or "",
            name=_attempt(issues, lambda: _given_text("name", name)),
            email=_attempt(issues, lambda: _given_email(email)),
            tags=None if tags is None else _attempt(issues, lambda: clean_tags(tags)) or None,
            condominio=_attempt(issues, lambda: _given_text("condominio", condominio)),
            endereco=_attempt(issues, lambda: _given_text("endereco", endereco)),
            cargo=_attempt(issues, lambda: _given_text("cargo", cargo)),
            custom_fields={
                key: value
                for key, value in _clean_custom_fields(
                    definitions, custom_fields or {}, issues
                ).items()
                if value is not None
            },
            opted_out=opted_out,
            opt_out_reason=_attempt(issues, lambda: clean_opt_out_reason(opt_out_reason)) or "",
        )
        if issues:
            raise ContactValidationError(*issues)
        return draft

    def merge_patch(self, existing: Contact) -> ContactPatch:
        """The patch this draft makes to the contact that already has its phone.

        This is how an import row updates a contact: the values it gives overwrite, the
        values it leaves blank are kept, its tags are added to the contact's tags (an import
        never removes a tag), and its custom fields are set key by key. Opting out is not
        part of a patch: see ``opted_out``. Raises ContactValidationError on ``tags`` when
        the merged tags would be more than ``MAX_TAGS``.
        """
        tags = None
        if self.tags is not None:
            tags = clean_tags((*existing.tags, *self.tags))
        return ContactPatch(
            name=self.name,
            email=self.email,
            tags=tags,
            condominio=self.condominio,
            endereco=self.endereco,
            cargo=self.cargo,
            custom_fields=dict(self.custom_fields),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactPatch:
    """Validated changes to a contact; ``None`` leaves a field as it is.

    A text field set to ``""`` clears it; ``tags`` replaces the whole list (``()`` clears
    it); ``custom_fields`` is merged key by key, a ``None`` value removing the key.

    Build it with :meth:`build`; the constructor trusts its arguments.
    """

    phone_e164: str | None = None
    name: str | None = None
    email: str | None = None
    tags: tuple[str, ...] | None = None
    condominio: str | None = None
    endereco: str | None = None
    cargo: str | None = None
    custom_fields: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        definitions: Mapping[str, CustomFieldDefinition],
        phone: RawValue = None,
        name: RawValue = None,
        email: RawValue = None,
        tags: Iterable[str] | None = None,
        condominio: RawValue = None,
        endereco: RawValue = None,
        cargo: RawValue = None,
        custom_fields: Mapping[str, RawValue] | None = None,
        default_region: str = DEFAULT_REGION,
    ) -> ContactPatch:
        """Validate and normalize the changes a client asks for.

        ``None`` means "leave unchanged"; a blank string clears a text field (a phone cannot
        be cleared); a blank or None custom field value removes the key. Raises
        ContactValidationError listing every invalid field.
        """
        issues: list[FieldIssue] = []

        def optional_text(field_name: TextField, value: RawValue) -> str | None:
            if value is None:
                return None
            return _attempt(issues, lambda: clean_text(field_name, value))

        patch = cls(
            phone_e164=None
            if phone is None
            else _attempt(issues, lambda: clean_phone(phone, default_region)),
            name=optional_text("name", name),
            email=None if email is None else _attempt(issues, lambda: clean_email(email)),
            tags=None if tags is None else _attempt(issues, lambda: clean_tags(tags)),
            condominio=optional_text("condominio", condominio),
            endereco=optional_text("endereco", endereco),
            cargo=optional_text("cargo", cargo),
            custom_fields=_clean_custom_fields(definitions, custom_fields or {}, issues),
        )
        if issues:
            raise ContactValidationError(*issues)
        return patch


def _require_aware(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return now


#: The first-class fields a patch may change, in the order of the Contact message.
_PATCHABLE_FIELDS: Final = (
    "phone_e164",
    "name",
    "email",
    "tags",
    "condominio",
    "endereco",
    "cargo",
)


@dataclass(slots=True, kw_only=True)
class Contact:
    """One contact of one company: the state the contacts service owns and publishes.

    Fields mirror ``esquadrao.contacts.v1.Contact``. Change it only through its methods:
    each change bumps ``version`` by one and sets ``updated_at``; a call that changes
    nothing leaves both alone. Timestamps are timezone-aware; methods raise ValueError on
    a naive ``now``.

    Data changes (:meth:`apply_patch`) need a live contact and raise ContactIsDeleted on a
    deleted one. Consent changes (:meth:`opt_out`, :meth:`opt_in`) are recorded on deleted
    contacts too: a person's wish not to be messaged must survive a delete and a later
    restore or re-import.
    """

    id: str
    company_id: str
    phone_e164: str
    name: str = ""
    email: str = ""
    tags: tuple[str, ...] = ()
    condominio: str = ""
    endereco: str = ""
    cargo: str = ""
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    opted_out: bool = False
    opted_out_at: datetime | None = None
    opt_out_reason: str = ""
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    version: int = 1

    @classmethod
    def create(
        cls, *, contact_id: str, company_id: str, draft: ContactDraft, now: datetime
    ) -> Contact:
        """A new contact (version 1) from a draft; opted out at ``now`` if the draft says so."""
        _require_aware(now)
        return cls(
            id=contact_id,
            company_id=company_id,
            phone_e164=draft.phone_e164,
            name=draft.name or "",
            email=draft.email or "",
            tags=draft.tags or (),
            condominio=draft.condominio or "",
            endereco=draft.endereco or "",
            cargo=draft.cargo or "",
            custom_fields=dict(draft.custom_fields),
            opted_out=draft.opted_out,
            opted_out_at=now if draft.opted_out else None,
            opt_out_reason=draft.opt_out_reason if draft.opted_out else "",
            created_at=now,
            updated_at=now,
        )

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def _changed(self, now: datetime) -> None:
        self.version += 1
        self.updated_at = now

    def apply_patch(self, patch: ContactPatch, now: datetime) -> tuple[str, ...]:
        """Apply ``patch``; return the names of the fields whose value changed.

        Names are spelled as in the Contact message (``"name"``, ``"tags"``), custom fields
        as ``"custom_fields.<key>"`` sorted by key, after the first-class fields in message
        order: exactly what ``ContactUpdated.changed_fields`` carries. An empty result means
        nothing changed (and the version stayed). Raises ContactIsDeleted on a deleted
        contact, whether or not the patch would change anything.
        """
        _require_aware(now)
        if self.is_deleted:
            raise ContactIsDeleted(self.id)
        changed: list[str] = []
        for name in _PATCHABLE_FIELDS:
            new_value = getattr(patch, name)
            if new_value is not None and new_value != getattr(self, name):
                setattr(self, name, new_value)
                changed.append(name)
        custom = dict(self.custom_fields)
        for key in sorted(patch.custom_fields):
            value = patch.custom_fields[key]
            if custom.get(key) == value:
                continue
            if value is None:
                del custom[key]
            else:
                custom[key] = value
            changed.append(CUSTOM_FIELDS_PREFIX + key)
        if changed:
            self.custom_fields = custom
            self._changed(now)
        return tuple(changed)

    def delete(self, now: datetime) -> bool:
        """Soft-delete the contact; False (and no change) if it already is deleted."""
        _require_aware(now)
        if self.is_deleted:
            return False
        self.deleted_at = now
        self._changed(now)
        return True

    def restore(self, now: datetime) -> bool:
        """Undo a delete; False (and no change) if the contact is not deleted.

        Restoring keeps the opt-out state: consent is never reset by a restore.
        """
        _require_aware(now)
        if not self.is_deleted:
            return False
        self.deleted_at = None
        self._changed(now)
        return True

    def opt_out(self, now: datetime, reason: str = "") -> bool:
        """Record that the contact must not receive campaign messages.

        False (and no change, the first opt-out's time and reason kept) if already opted out.
        Raises ContactValidationError when ``reason`` is too long.
        """
        _require_aware(now)
        cleaned_reason = clean_opt_out_reason(reason)
        if self.opted_out:
            return False
        self.opted_out = True
        self.opted_out_at = now
        self.opt_out_reason = cleaned_reason
        self._changed(now)
        return True

    def opt_in(self, now: datetime) -> bool:
        """Let an opted-out contact receive campaign messages again; clears the opt-out time
        and reason. False (and no change) if the contact is not opted out.

        The time of the opt-in is the new ``updated_at``.
        """
        _require_aware(now)
        if not self.opted_out:
            return False
        self.opted_out = False
        self.opted_out_at = None
        self.opt_out_reason = ""
        self._changed(now)
        return True
