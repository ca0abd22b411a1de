"""Contact import files: streaming readers, column mapping, and rows turned into drafts.

An import job reads a CSV or XLSX file row by row (never the whole file in memory), maps
its columns to contact fields, and turns each row into a
:class:`~contacts.domain.model.ContactDraft` or a report of what is wrong with it. A bad
row never stops the import; only a file that cannot be read at all (:class:`ImportFileError`)
or a mapping that cannot work (:class:`ImportMappingError`) does.

The job's loop::

    rows = iter_csv_rows(stream)  # or iter_xlsx_rows(path_or_stream)
    for outcome in parse_rows(rows, definitions, mapping):
        match outcome:
            case AcceptedRow(): ...  # create, or merge_patch into the contact with its phone
            case RejectedRow(): ...  # report outcome.errors; count as errors
            case SkippedRow(): ...   # report outcome.reason; count as skipped

Conventions, stated once for every function here:

* **Row numbers** are those a spreadsheet program shows: the file's first row is row 1, so
  with the header on the first line the first data row is row 2. Blank rows are skipped
  but still counted, so numbers never shift. In a CSV, a row is a record: a quoted cell
  spanning several lines is still one row (as a spreadsheet shows it), so row numbers can
  be smaller than text line numbers.
* **The header** is the first non-blank row. Header cells are trimmed; a blank header cell
  is named ``column_<n>`` (``n`` counting columns from 1), and a repeated header gets
  `` (2)``, `` (3)``... appended, so no column is lost. Cells beyond the header's width are
  ignored; missing cells are blank.
* **Blank cells** give no value: a new contact gets an empty field, an existing contact
  keeps its value (see :meth:`~contacts.domain.model.ContactDraft.merge_patch`).
* **Duplicate phones in one file**: the first valid row with a phone wins; later valid
  rows with the same normalized phone (whatever its spelling) are reported as
  :class:`SkippedRow` and counted as skipped. The first row is the one a streaming import
  has already applied when a repeat arrives; letting the later row win would mean
  buffering the whole file or applying the contact twice. Memory grows with the number of
  distinct phones, not with the file.
* **Opt-out column** (target ``opted_out``): a truthy cell (``sim``, ``x``, ``true``...)
  opts the contact out (source IMPORT, reason :data:`IMPORT_OPT_OUT_REASON`); a falsy or
  blank cell never opts a contact back in, since consent to receive messages again must
  come from the contact.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from os import PathLike
from typing import IO, TYPE_CHECKING, Final, TypeAlias
from zipfile import BadZipFile

from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException
from openpyxl.worksheet._read_only import ReadOnlyWorksheet

from contacts.domain.model import (
    CUSTOM_FIELDS_PREFIX,
    ContactDraft,
    ContactValidationError,
    CustomFieldDefinition,
    FieldIssue,
    IssueCode,
    RawValue,
    fold,
    is_blank,
    parse_boolean,
)
from contacts.domain.phones import DEFAULT_REGION

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: One data row: cell values by header, every header present (``None`` for a missing cell).
Row: TypeAlias = Mapping[str, RawValue]

#: Prefix of a mapping target naming a custom field: ``custom:<key>``.
CUSTOM_TARGET_PREFIX: Final = "custom:"
#: The contact fields a column can fill, besides ``custom:<key>``.
FIELD_TARGETS: Final = (
    "phone",
    "name",
    "email",
    "tags",
    "condominio",
    "endereco",
    "cargo",
    "opted_out",
)
#: Opt-out reason of contacts opted out by an import's opt-out column.
IMPORT_OPT_OUT_REASON: Final = "opted out in an imported file"

#: Header spellings recognised for each field, compared by :func:`header_key`; when several
#: columns match one field, the one with the earlier synonym wins (``whatsapp`` before
#: ``celular`` before ``telefone``), then the one further left.
HEADER_SYNONYMS: Final[Mapping[str, tuple[str, ...]]] = {
    "phone": (
        "whatsapp",
        "numero whatsapp",
        "numero do whatsapp",
        "telefone whatsapp",
        "celular whatsapp",
        "whats",
        "zap",
        "celular",
        "numero do celular",
        "telefone celular",
        "mobile",
        "telefone",
        "numero de telefone",
        "numero do telefone",
        "phone",
        "phone number",
        "fone",
        "tel",
    ),
    "name": ("nome", "name", "nome completo", "full name", "nome do contato", "contact name"),
    "email": (
        "email",
        "e mail",
        "mail",
        "endereco de email",
        "endereco de e mail",
        "correio eletronico",
    ),
    "tags": ("tags", "tag", "etiquetas", "etiqueta", "marcadores"),
    "condominio": ("condominio", "nome do condominio", "condominium"),
    "endereco": ("endereco", "endereco completo", "address", "logradouro"),
    "cargo": ("cargo", "funcao", "job title", "role"),
    "opted_out": ("opt out", "optout", "opted out", "descadastrado"),
}

#: Bytes read ahead to detect the encoding and the delimiter of a CSV.
CSV_SAMPLE_SIZE: Final = 64 * 1024
#: Cell separators recognised in CSV files, preferred in this order on a tie.
CSV_DELIMITERS: Final = (";", ",", "\t")

_TAG_SEPARATORS: Final = re.compile(r"[,;|]")
_NON_ALNUM: Final = re.compile(r"[^a-z0-9]+")
_QUOTED: Final = re.compile(r'"[^"]*"')
_CP1252_FALLBACK: Final = "contacts.cp1252_fallback"


class ImportFileError(Exception):
    """The file cannot be read as a table at all (not CSV/XLSX, no header, corrupt).

    Unlike a bad row, this ends the import; ``row`` is where reading failed, if known.
    """

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message if row is None else f"row {row}: {message}")
        self.row = row


class ImportMappingError(ContactValidationError):
    """The columns cannot be mapped: no phone column, an unknown target, a mapped header
    missing from the file, or two columns on one field. Issues name ``mapping.<header>``
    (or ``mapping`` for the whole) so an API can answer 422 before the job starts."""


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one cell of one row was rejected: ``column`` is the header as in the file."""

    row: int
    column: str
    code: IssueCode
    reason: str


@dataclass(frozen=True, slots=True)
class AcceptedRow:
    """A valid row: the contact it creates or updates."""

    row: int
    draft: ContactDraft


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """An invalid row, with every problem found in it (at least one)."""

    row: int
    errors: tuple[RowError, ...]


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A row whose phone an earlier row of the file already had; it is left out."""

    row: int
    column: str
    phone_e164: str
    first_row: int

    @property
    def reason(self) -> str:
        return f"same phone as row {self.first_row}, which is the one imported"


RowOutcome: TypeAlias = AcceptedRow | RejectedRow | SkippedRow


def header_key(header: str) -> str:
    """The comparison form of a header: case and accents folded, punctuation and ``_`` made
    single spaces (``"E-mail"`` → ``"e mail"``, ``"Condomínio"`` → ``"condominio"``)."""
    return _NON_ALNUM.sub(" ", fold(header)).strip()


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which column fills which field: ``targets`` maps a header (as in the file) to a
    target (one of ``FIELD_TARGETS`` or ``custom:<key>``); ``ignored`` lists the file's
    other headers, in file order."""

    targets: Mapping[str, str]
    ignored: tuple[str, ...]

    def column_of(self, target: str) -> str | None:
        """The header mapped to ``target``, or None."""
        return next((header for header, t in self.targets.items() if t == target), None)


def _target_issue(target: str, definitions: Mapping[str, CustomFieldDefinition]) -> str | None:
    if target in FIELD_TARGETS:
        return None
    if target.startswith(CUSTOM_TARGET_PREFIX):
        key = target.removeprefix(CUSTOM_TARGET_PREFIX)
        if key in definitions:
            return None
        return f"no custom field {key!r} is defined for this company"
    return f"{target!r} is not a target: use one of {', '.join(FIELD_TARGETS)} or custom:<key>"


def _explicit_targets(
    headers: Sequence[str],
    mapping: Mapping[str, str | None],
    definitions: Mapping[str, CustomFieldDefinition],
    issues: list[FieldIssue],
) -> dict[str, str]:
    by_key: dict[str, list[str]] = {}
    for header in headers:
        by_key.setdefault(header_key(header), []).append(header)
    targets: dict[str, str] = {}
    for requested, target in mapping.items():
        field_name = f"mapping.{requested}"
        if requested in headers:
            header = requested
        elif len(by_key.get(header_key(requested), [])) == 1:
            header = by_key[header_key(requested)][0]
        else:
            issues.append(
                FieldIssue(field_name, IssueCode.UNKNOWN_FIELD, "the file has no such column")
            )
            continue
        if not target:
            continue
        problem = _target_issue(target, definitions)
        if header in targets:
            issues.append(FieldIssue(field_name, IssueCode.INVALID, "the column is mapped twice"))
        elif problem is not None:
            issues.append(FieldIssue(field_name, IssueCode.INVALID, problem))
        elif target in targets.values():
            issues.append(
                FieldIssue(field_name, IssueCode.INVALID, f"another column is mapped to {target}")
            )
        else:
            targets[header] = target
    return targets


def _matched_targets(
    headers: Sequence[str], definitions: Mapping[str, CustomFieldDefinition]
) -> dict[str, str]:
    """Targets found by header matching: built-in synonyms first, then custom fields by
    ``custom:<key>``, key or label."""
    candidates: dict[str, tuple[int, int, str]] = {}
    for position, header in enumerate(headers):
        key = header_key(header)
        target: str | None = None
        rank = 0
        for field_name, synonyms in HEADER_SYNONYMS.items():
            if key in synonyms:
                target, rank = field_name, synonyms.index(key)
                break
        if target is None:
            target = _custom_target_of(header, key, definitions)
        if target is None:
            continue
        best = candidates.get(target)
        if best is None or (rank, position) < best[:2]:
            candidates[target] = (rank, position, header)
    return {header: target for target, (_, _, header) in candidates.items()}


def _custom_target_of(
    header: str, key: str, definitions: Mapping[str, CustomFieldDefinition]
) -> str | None:
    written = header.strip()
    if written.startswith(CUSTOM_TARGET_PREFIX):
        custom_key = written.removeprefix(CUSTOM_TARGET_PREFIX).strip()
        return CUSTOM_TARGET_PREFIX + custom_key if custom_key in definitions else None
    for definition in definitions.values():
        if key in (header_key(definition.key), header_key(definition.label)):
            return CUSTOM_TARGET_PREFIX + definition.key
    return None


def resolve_columns(
    headers: Sequence[str],
    definitions: Mapping[str, CustomFieldDefinition],
    mapping: Mapping[str, str | None] | None = None,
) -> ColumnMapping:
    """Decide which column fills which field.

    With a ``mapping`` (header → target, as the client sends it), the mapping is the whole
    truth: headers are found exactly or, failing that, by :func:`header_key` when that is
    unambiguous; a None or empty target ignores a column; columns left out are ignored.
    Without one, headers are matched to ``HEADER_SYNONYMS`` and to the company's custom
    fields (by ``custom:<key>``, key or label).

    Raises ImportMappingError when no column is mapped to ``phone``, or (with a mapping) a
    header is not in the file, a target is unknown, two columns share a target, or one
    column is mapped twice.
    """
    issues: list[FieldIssue] = []
    if mapping is None:
        targets = _matched_targets(headers, definitions)
    else:
        targets = _explicit_targets(headers, mapping, definitions, issues)
    if "phone" not in targets.values():
        expected = (
            "map a column to phone"
            if mapping is not None
            else "name a column telefone, celular, whatsapp or phone, or send a mapping"
        )
        issues.append(FieldIssue("mapping", IssueCode.REQUIRED, f"no phone column: {expected}"))
    if issues:
        raise ImportMappingError(*issues)
    ordered = {header: targets[header] for header in headers if header in targets}
    ignored = tuple(header for header in headers if header not in targets)
    return ColumnMapping(targets=ordered, ignored=ignored)


def _issue_field(target: str) -> str:
    """The FieldIssue field name under which model validation reports ``target``."""
    if target.startswith(CUSTOM_TARGET_PREFIX):
        return CUSTOM_FIELDS_PREFIX + target.removeprefix(CUSTOM_TARGET_PREFIX)
    return target


def _split_tags(value: RawValue) -> list[str]:
    if is_blank(value):
        return []
    text = value if isinstance(value, str) else str(value)
    return _TAG_SEPARATORS.split(text)


class RowParser:
    """Turns data rows into drafts with the same mapping, definitions and phone region.

    Tags in one cell are separated by ``,``, ``;`` or ``|``.
    """

    def __init__(
        self,
        columns: ColumnMapping,
        definitions: Mapping[str, CustomFieldDefinition],
        default_region: str = DEFAULT_REGION,
    ) -> None:
        self.columns = columns
        self._definitions = definitions
        self._default_region = default_region
        self._header_of_field = {
            _issue_field(target): header for header, target in columns.targets.items()
        }
        self._position_of_header = {header: index for index, header in enumerate(columns.targets)}

    def parse(self, row_number: int, row: Row) -> AcceptedRow | RejectedRow:
        """The draft of one row, or every problem in it (each with its column), in the
        order of the file's columns."""
        values: dict[str, RawValue] = {}
        custom: dict[str, RawValue] = {}
        for header, target in self.columns.targets.items():
            if target.startswith(CUSTOM_TARGET_PREFIX):
                custom[target.removeprefix(CUSTOM_TARGET_PREFIX)] = row.get(header)
            else:
                values[target] = row.get(header)
        errors: list[RowError] = []
        opted_out = self._opted_out(row_number, values.get("opted_out"), errors)
        try:
            draft = ContactDraft.build(
                definitions=self._definitions,
                phone=values.get("phone"),
                name=values.get("name"),
                email=values.get("email"),
                tags=_split_tags(values["tags"]) if "tags" in values else None,
                condominio=values.get("condominio"),
                endereco=values.get("endereco"),
                cargo=values.get("cargo"),
                custom_fields=custom,
                opted_out=opted_out,
                opt_out_reason=IMPORT_OPT_OUT_REASON if opted_out else "",
                default_region=self._default_region,
            )
        except ContactValidationError as error:
            errors.extend(self._row_error(row_number, issue) for issue in error.issues)
        if errors:
            errors.sort(key=lambda row_error: self._position_of_header.get(row_error.column, -1))
            return RejectedRow(row=row_number, errors=tuple(errors))
        return AcceptedRow(row=row_number, draft=draft)

    def _opted_out(self, row_number: int, value: RawValue, errors: list[RowError]) -> bool:
        if is_blank(value):
            return False
        parsed = parse_boolean(value)
        if parsed is None:
            errors.append(
                RowError(
                    row=row_number,
                    column=self._header_of_field["opted_out"],
                    code=IssueCode.INVALID,
                    reason=f"{value!r} is not yes or no (sim/não, true/false)",
                )
            )
            return False
        return parsed

    def _row_error(self, row_number: int, issue: FieldIssue) -> RowError:
        return RowError(
            row=row_number,
            column=self._header_of_field.get(issue.field, ""),
            code=issue.code,
            reason=issue.message,
        )


def parse_rows(
    rows: Iterable[tuple[int, Row]],
    definitions: Mapping[str, CustomFieldDefinition],
    mapping: Mapping[str, str | None] | None = None,
    default_region: str = DEFAULT_REGION,
) -> Iterator[RowOutcome]:
    """Outcomes of the data rows of one file, in file order, lazily.

    Columns are resolved (see :func:`resolve_columns`) from the headers of the first row,
    so ImportMappingError comes before any outcome; a file without data rows yields
    nothing. Repeated phones yield SkippedRow (the first row wins).
    """
    parser: RowParser | None = None
    first_row_of_phone: dict[str, int] = {}
    for row_number, row in rows:
        if parser is None:
            columns = resolve_columns(list(row), definitions, mapping)
            parser = RowParser(columns, definitions, default_region)
        outcome = parser.parse(row_number, row)
        if isinstance(outcome, AcceptedRow):
            phone = outcome.draft.phone_e164
            first_row = first_row_of_phone.setdefault(phone, row_number)
            if first_row != row_number:
                yield SkippedRow(
                    row=row_number,
                    column=parser.columns.column_of("phone") or "",
                    phone_e164=phone,
                    first_row=first_row,
                )
                continue
        yield outcome


def _unique_headers(cells: Sequence[RawValue]) -> list[str]:
    headers: list[str] = []
    seen: set[str] = set()
    for index, cell in enumerate(cells, start=1):
        name = "" if cell is None else str(cell).replace("\ufeff", "").strip()
        name = name or f"column_{index}"
        unique, copy = name, 1
        while unique in seen:
            copy += 1
            unique = f"{name} ({copy})"
        seen.add(unique)
        headers.append(unique)
    return headers


def _rows_by_header(
    records: Iterable[tuple[int, Sequence[RawValue]]],
) -> Iterator[tuple[int, Row]]:
    """Data rows keyed by header, from numbered records whose first non-blank is the header."""
    headers: list[str] | None = None
    for row_number, cells in records:
        if all(is_blank(cell) for cell in cells):
            continue
        if headers is None:
            headers = _unique_headers(cells)
            continue
        yield (
            row_number,
            {
                header: cells[index] if index < len(cells) else None
                for index, header in enumerate(headers)
            },
        )
    if headers is None:
        raise ImportFileError("the file has no header row: it is empty")


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    """Decode bytes that are not valid in the chosen encoding as cp1252 (Latin-1 for the
    five bytes cp1252 leaves undefined), so a stray Windows character never stops an
    import."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    chunk = error.object[error.start : error.end]
    text = "".join(bytes([byte]).decode("cp1252", errors="ignore") or chr(byte) for byte in chunk)
    return text, error.end


codecs.register_error(_CP1252_FALLBACK, _cp1252_fallback)


def detect_encoding(sample: bytes) -> str:
    """The encoding of a CSV from its first bytes.

    A byte order mark decides (``utf-8-sig``, ``utf-16``); otherwise ``utf-8`` when the
    sample is valid UTF-8 (a sequence cut at the sample's end is fine), else ``cp1252``,
    the encoding of spreadsheets saved by Windows Excel in Brazil (a superset of Latin-1
    for text).
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def detect_delimiter(sample_text: str) -> str:
    """The cell separator of a CSV: the one of ``CSV_DELIMITERS`` that appears most often
    (outside quotes) in its first non-blank line, the header, whose cells rarely contain
    one. Ties go to the earlier of ``CSV_DELIMITERS``; a line with none gives ``,``."""
    header = next((line for line in sample_text.splitlines() if line.strip()), "")
    unquoted = _QUOTED.sub("", header)
    counts = {delimiter: unquoted.count(delimiter) for delimiter in CSV_DELIMITERS}
    best = max(CSV_DELIMITERS, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


class _ReplayedStream(io.RawIOBase):
    """A read-only stream giving ``head`` and then the rest of ``rest``.

    Lets the reader look at a file's first bytes without needing a seekable stream, and
    without closing the caller's stream when the text layer on top is closed.
    """

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            size = min(len(view), len(self._head))
            view[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


def _read_sample(stream: IO[bytes]) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < CSV_SAMPLE_SIZE:
        part = stream.read(CSV_SAMPLE_SIZE - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def iter_csv_rows(stream: IO[bytes]) -> Iterator[tuple[int, Row]]:
    """The data rows of a CSV file, as ``(row number, cells by header)``, read lazily.

    The encoding comes from :func:`detect_encoding` and the delimiter from
    :func:`detect_delimiter`, both on the first ``CSV_SAMPLE_SIZE`` bytes; bytes later in
    the file that the encoding cannot decode are read as cp1252 rather than failing. Cells
    are strings, untrimmed. The caller owns ``stream`` and closes it.

    Raises ImportFileError when the file has no header or is not parseable CSV.
    """
    sample = _read_sample(stream)
    encoding = detect_encoding(sample)
    delimiter = detect_delimiter(sample.decode(encoding, errors="replace"))
    errors = "replace" if encoding == "utf-16" else _CP1252_FALLBACK
    text = io.TextIOWrapper(
        io.BufferedReader(_ReplayedStream(sample, stream)),
        encoding=encoding,
        errors=errors,
        newline="",
    )
    yield from _rows_by_header(_csv_records(csv.reader(text, delimiter=delimiter)))


def _csv_records(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Numbered CSV records; a parse error becomes ImportFileError at the row it hit."""
    row_number = 0
    try:
        for row_number, record in enumerate(reader, start=1):
            yield row_number, record
    except csv.Error as error:
        raise ImportFileError(f"not a readable CSV: {error}", row_number + 1) from error


def _cell(value: object) -> RawValue:
    """A spreadsheet cell as a RawValue: times, durations and anything else as text."""
    if value is None or isinstance(value, str | int | float | date):
        return value
    return str(value)


def iter_xlsx_rows(source: str | PathLike[str] | IO[bytes]) -> Iterator[tuple[int, Row]]:
    """The data rows of the first worksheet of an XLSX workbook, read lazily.

    The workbook is opened read-only (rows are parsed as they are iterated, never all
    held) with cached formula results instead of formulas. Cells keep their types: text,
    numbers (phones typed as numbers arrive as ``int``), dates; times as text. The first
    worksheet is read, whichever tab was open when the file was saved. The declared used
    range is ignored, since some programs write it wrongly.

    Raises ImportFileError when ``source`` is not an XLSX workbook, has no worksheet, or no
    header.
    """
    try:
        workbook = load_workbook(source, read_only=True, data_only=True, keep_links=False)
    except (InvalidFileException, BadZipFile, KeyError, ValueError) as error:
        raise ImportFileError(f"not a readable XLSX workbook: {error}") from error
    try:
        if not workbook.worksheets:
            raise ImportFileError("the workbook has no worksheet")
        sheet = workbook.worksheets[0]
        if isinstance(sheet, ReadOnlyWorksheet):
            sheet.reset_dimensions()
        records = (
            (row_number, [_cell(value) for value in values])
            for row_number, values in enumerate(
                sheet.iter_rows(min_row=1, values_only=True), start=1
            )
        )
        yield from _rows_by_header(records)
    finally:
        workbook.close()
