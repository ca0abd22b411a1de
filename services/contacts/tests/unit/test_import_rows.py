"""Import files: streaming CSV/XLSX readers, column mapping, and rows as drafts or errors."""

from __future__ import annotations

import codecs
import gc
import io
from datetime import date, datetime
from pathlib import Path

import pytest
from contacts.domain.importing import (
    CSV_SAMPLE_SIZE,
    IMPORT_OPT_OUT_REASON,
    AcceptedRow,
    ColumnMapping,
    ImportFileError,
    ImportMappingError,
    RejectedRow,
    RowError,
    RowOutcome,
    RowParser,
    SkippedRow,
    detect_delimiter,
    detect_encoding,
    header_key,
    iter_csv_rows,
    iter_xlsx_rows,
    parse_rows,
    resolve_columns,
)
from contacts.domain.model import (
    ContactDraft,
    CustomFieldDefinition,
    FieldIssue,
    FieldType,
    IssueCode,
    RawValue,
    definitions_by_key,
)
from openpyxl import Workbook

pytestmark = pytest.mark.unit

DEFINITIONS = definitions_by_key(
    [
        CustomFieldDefinition(
            key="bloco", label="Bloco", type=FieldType.CHOICE, options=("A", "B")
        ),
        CustomFieldDefinition(
            key="data_nascimento", label="Data de nascimento", type=FieldType.DATE
        ),
        CustomFieldDefinition(key="vagas", label="Vagas de garagem", type=FieldType.NUMBER),
    ]
)


def csv_outcomes(data: bytes, mapping: dict[str, str | None] | None = None) -> list[RowOutcome]:
    return list(parse_rows(iter_csv_rows(io.BytesIO(data)), DEFINITIONS, mapping))


# --- CSV reading ---------------------------------------------------------------------------


def test_utf8_bom_comma_csv_with_header_matching() -> None:
    text = (
        "Nome,Telefone,E-mail,Condomínio,Endereço,Cargo,Etiquetas\r\n"
        'Maria,(11) 98765-4321,maria@example.com,Jardim,"Rua A, 10",Síndica,"VIP, novo"\r\n'
        "José,21 2222-3333,,,,,\r\n"
    )
    assert csv_outcomes(text.encode("utf-8-sig")) == [
        AcceptedRow(
            row=2,
            draft=ContactDraft(
                phone_e164="+5511987654321",
                name="Maria",
                email="maria@example.com",
                condominio="Jardim",
                endereco="Rua A, 10",
                cargo="Síndica",
                tags=("VIP", "novo"),
            ),
        ),
        AcceptedRow(row=3, draft=ContactDraft(phone_e164="+552122223333", name="José")),
    ]


def test_cp1252_semicolon_csv() -> None:
    text = (
        "Nome;Celular;Condomínio;Endereço\r\nJoão Conceição;(11) 8765-4321;São José;Praça Sé, 1\r\n"
    )
    [outcome] = csv_outcomes(text.encode("cp1252"))
    assert outcome == AcceptedRow(
        row=2,
        draft=ContactDraft(
            phone_e164="+5511987654321",
            name="João Conceição",
            condominio="São José",
            endereco="Praça Sé, 1",
        ),
    )


def test_utf16_tab_separated_text_as_excel_saves_it() -> None:
    text = "Nome\tWhatsApp\r\nAna\t11987654321\r\n"
    rows = list(iter_csv_rows(io.BytesIO(text.encode("utf-16"))))
    assert rows == [(2, {"Nome": "Ana", "WhatsApp": "11987654321"})]


@pytest.mark.parametrize(
    ("sample", "encoding"),
    [
        (codecs.BOM_UTF8 + b"Nome", "utf-8-sig"),
        ("Nome".encode("utf-16"), "utf-16"),
        ("Condomínio".encode(), "utf-8"),
        ("Condomínio".encode("cp1252"), "cp1252"),
        ("Condomínio".encode()[:-7], "utf-8"),
        (b"", "utf-8"),
    ],
)
def test_detect_encoding(sample: bytes, encoding: str) -> None:
    assert detect_encoding(sample) == encoding


@pytest.mark.parametrize(
    ("sample", "delimiter"),
    [
        ("nome;telefone;email\nAna, Bia;1;2", ";"),
        ("nome,telefone\nAna;Bia,1", ","),
        ('"nome, completo";telefone\n', ";"),
        ("nome\ttelefone\n", "\t"),
        ("\n\ntelefone\n", ","),
        ("a;b,c\n", ";"),
    ],
)
def test_detect_delimiter_reads_the_header_line(sample: str, delimiter: str) -> None:
    assert detect_delimiter(sample) == delimiter


def test_row_numbers_count_the_header_and_blank_rows_as_a_spreadsheet_shows_them() -> None:
    text = (
        "\r\n"
        ";;\r\n"
        "Nome;Telefone\r\n"
        "Ana;11987654321\r\n"
        "\r\n"
        '"Bia\r\nSouza";21987654321\r\n'
        "Caio;31987654321\r\n"
    )
    rows = list(iter_csv_rows(io.BytesIO(text.encode())))
    assert [number for number, _ in rows] == [4, 6, 7]
    assert rows[1][1] == {"Nome": "Bia\r\nSouza", "Telefone": "21987654321"}


def test_blank_and_repeated_headers_keep_every_column() -> None:
    text = "Telefone,,Telefone,Nome\n11987654321,x,y,Ana,extra\n21987654321\n"
    rows = list(iter_csv_rows(io.BytesIO(text.encode())))
    assert rows == [
        (2, {"Telefone": "11987654321", "column_2": "x", "Telefone (2)": "y", "Nome": "Ana"}),
        (3, {"Telefone": "21987654321", "column_2": None, "Telefone (2)": None, "Nome": None}),
    ]


def test_a_stray_cp1252_byte_after_the_sample_does_not_stop_the_import() -> None:
    filler = b"".join(b"Ana,11987654321\n" for _ in range(CSV_SAMPLE_SIZE // 16 + 10))
    data = b"Nome,Telefone\n" + filler + "Conceição,21987654321\n".encode("cp1252")
    *_, last = iter_csv_rows(io.BytesIO(data))
    assert last[1] == {"Nome": "Conceição", "Telefone": "21987654321"}


class ReadOnlyStream(io.RawIOBase):
    """A non-seekable upload stream that counts the bytes handed out."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_csv_is_streamed_not_loaded() -> None:
    body = b"".join(f"Pessoa {n};119{n:08d}\n".encode() for n in range(200_000))
    stream = ReadOnlyStream(b"Nome;Telefone\n" + body)
    rows = iter_csv_rows(stream)  # type: ignore[arg-type]
    assert next(rows) == (2, {"Nome": "Pessoa 0", "Telefone": "11900000000"})
    assert stream.bytes_read < 4 * CSV_SAMPLE_SIZE < len(body)
    del rows
    gc.collect()
    assert not stream.closed


def test_an_empty_file_has_no_header() -> None:
    with pytest.raises(ImportFileError, match="no header row"):
        list(iter_csv_rows(io.BytesIO(b"\r\n ; \r\n")))


def test_an_unparseable_csv_fails_at_its_row() -> None:
    data = b"Nome,Telefone\nAna,1\n" + b"x" * 200_000 + b",2\n"
    with pytest.raises(ImportFileError) as caught:
        list(iter_csv_rows(io.BytesIO(data)))
    assert caught.value.row == 3


# --- XLSX reading --------------------------------------------------------------------------


def make_xlsx(rows: list[list[RawValue]], first_row: int = 1) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for offset, values in enumerate(rows):
        for column, value in enumerate(values, start=1):
            if value is not None:
                sheet.cell(row=first_row + offset, column=column, value=value)
    other = workbook.create_sheet("Outra")
    other["A1"] = "ignored"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


XLSX_ROWS: list[list[RawValue]] = [
    ["Nome", "Celular", "Data de nascimento", "Vagas de garagem", "Opt-out", "Bloco"],
    ["Ana", 11987654321, datetime(1980, 3, 1), 2, None, "a"],
    [None, None, None, None, None, None],
    ["Bia", 5521987654321, date(1990, 12, 31), 1.5, "SIM", "B"],
    ["Caio", "11 8765-4321", "31/02/1990", "muitas", "talvez", "C"],
]


def test_xlsx_rows_keep_cell_types_and_spreadsheet_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "contatos.xlsx"
    path.write_bytes(make_xlsx(XLSX_ROWS, first_row=2))
    rows = list(iter_xlsx_rows(path))
    assert [number for number, _ in rows] == [3, 5, 6]
    assert rows[0][1] == {
        "Nome": "Ana",
        "Celular": 11987654321,
        "Data de nascimento": datetime(1980, 3, 1),
        "Vagas de garagem": 2,
        "Opt-out": None,
        "Bloco": "a",
    }


def test_xlsx_rows_become_drafts_and_row_errors() -> None:
    rows = iter_xlsx_rows(io.BytesIO(make_xlsx(XLSX_ROWS)))
    assert list(parse_rows(rows, DEFINITIONS)) == [
        AcceptedRow(
            row=2,
            draft=ContactDraft(
                phone_e164="+5511987654321",
                name="Ana",
                custom_fields={"data_nascimento": "1980-03-01", "vagas": "2", "bloco": "A"},
            ),
        ),
        AcceptedRow(
            row=4,
            draft=ContactDraft(
                phone_e164="+5521987654321",
                name="Bia",
                custom_fields={"data_nascimento": "1990-12-31", "vagas": "1.5", "bloco": "B"},
                opted_out=True,
                opt_out_reason=IMPORT_OPT_OUT_REASON,
            ),
        ),
        RejectedRow(
            row=5,
            errors=(
                RowError(
                    5,
                    "Data de nascimento",
                    IssueCode.INVALID,
                    "'31/02/1990' is not a date (YYYY-MM-DD or DD/MM/YYYY)",
                ),
                RowError(5, "Vagas de garagem", IssueCode.INVALID, "'muitas' is not a number"),
                RowError(
                    5,
                    "Opt-out",
                    IssueCode.INVALID,
                    "'talvez' is not yes or no (sim/não, true/false)",
                ),
                RowError(5, "Bloco", IssueCode.INVALID, "'C' is not one of A, B"),
            ),
        ),
    ]


def test_a_file_that_is_not_xlsx_is_a_file_error() -> None:
    with pytest.raises(ImportFileError, match="not a readable XLSX workbook"):
        list(iter_xlsx_rows(io.BytesIO(b"Nome,Telefone\nAna,1\n")))


def test_an_xlsx_without_header_is_a_file_error() -> None:
    with pytest.raises(ImportFileError, match="no header row"):
        list(iter_xlsx_rows(io.BytesIO(make_xlsx([]))))


# --- column mapping ------------------------------------------------------------------------


def test_header_key_ignores_case_accents_and_punctuation() -> None:
    assert header_key(" E-MAIL ") == "e mail"
    assert header_key("Condomínio_Nome") == "condominio nome"


def test_header_matching_prefers_whatsapp_then_celular_then_telefone() -> None:
    columns = resolve_columns(
        ["Telefone", "Nome Completo", "CELULAR", "WhatsApp", "Observação"], DEFINITIONS
    )
    assert columns == ColumnMapping(
        targets={"Nome Completo": "name", "WhatsApp": "phone"},
        ignored=("Telefone", "CELULAR", "Observação"),
    )


def test_header_matching_finds_custom_fields_by_label_key_or_target() -> None:
    columns = resolve_columns(
        ["fone", "Data de Nascimento", "VAGAS", "custom: bloco", "tags"], DEFINITIONS
    )
    assert columns.targets == {
        "fone": "phone",
        "Data de Nascimento": "custom:data_nascimento",
        "VAGAS": "custom:vagas",
        "custom: bloco": "custom:bloco",
        "tags": "tags",
    }
    assert columns.column_of("custom:vagas") == "VAGAS"
    assert columns.column_of("email") is None


def test_header_matching_without_a_phone_column_fails() -> None:
    with pytest.raises(ImportMappingError) as caught:
        resolve_columns(["Nome", "Número"], DEFINITIONS)
    assert caught.value.issues == (
        FieldIssue(
            "mapping",
            IssueCode.REQUIRED,
            "no phone column: name a column telefone, celular, whatsapp or phone, or send a "
            "mapping",
        ),
    )


def test_an_explicit_mapping_is_the_whole_truth() -> None:
    columns = resolve_columns(
        ["Cliente", "Fone Residencial", "Telefone", "Bloco", "Obs"],
        DEFINITIONS,
        {"Cliente": "name", "fone residencial": "phone", "Bloco": "custom:bloco", "Obs": None},
    )
    assert columns == ColumnMapping(
        targets={"Cliente": "name", "Fone Residencial": "phone", "Bloco": "custom:bloco"},
        ignored=("Telefone", "Obs"),
    )


def test_an_explicit_mapping_reports_every_problem() -> None:
    with pytest.raises(ImportMappingError) as caught:
        resolve_columns(
            ["A", "B", "C", "D", "E"],
            DEFINITIONS,
            {
                "A": "name",
                "B": "name",
                "C": "custom:apto",
                "D": "telefone",
                "Z": "email",
                "e": "cargo",
                "E": "email",
            },
        )
    assert caught.value.issues == (
        FieldIssue("mapping.B", IssueCode.INVALID, "another column is mapped to name"),
        FieldIssue(
            "mapping.C", IssueCode.INVALID, "no custom field 'apto' is defined for this company"
        ),
        FieldIssue(
            "mapping.D",
            IssueCode.INVALID,
            "'telefone' is not a target: use one of phone, name, email, tags, condominio, "
            "endereco, cargo, opted_out or custom:<key>",
        ),
        FieldIssue("mapping.Z", IssueCode.UNKNOWN_FIELD, "the file has no such column"),
        FieldIssue("mapping.E", IssueCode.INVALID, "the column is mapped twice"),
        FieldIssue("mapping", IssueCode.REQUIRED, "no phone column: map a column to phone"),
    )


def test_parse_rows_checks_the_mapping_before_any_row() -> None:
    rows = parse_rows(iter_csv_rows(io.BytesIO(b"Nome\nAna\n")), DEFINITIONS)
    with pytest.raises(ImportMappingError):
        next(rows)


# --- rows ----------------------------------------------------------------------------------


def test_invalid_rows_are_reported_with_row_column_and_reason_and_never_stop_the_import() -> None:
    text = (
        "Nome;Telefone;E-mail;Bloco;Tags\n"
        "Ana;123;ana@;Z;\n"
        "Bia;;;;\n"
        "Caio;11 98765-4321 ramal 2;;;\n"
        "Duda;5,51199E+12;;;\n"
        "Eva;21987654321;eva@example.com;b;VIP; Síndico |novo\n"
    )
    assert csv_outcomes(text.encode()) == [
        RejectedRow(
            row=2,
            errors=(
                RowError(2, "Telefone", IssueCode.INVALID, "the phone is too short"),
                RowError(2, "E-mail", IssueCode.INVALID, "'ana@' is not an e-mail address"),
                RowError(2, "Bloco", IssueCode.INVALID, "'Z' is not one of A, B"),
            ),
        ),
        RejectedRow(
            row=3,
            errors=(RowError(3, "Telefone", IssueCode.REQUIRED, "a phone number is required"),),
        ),
        RejectedRow(
            row=4,
            errors=(RowError(4, "Telefone", IssueCode.INVALID, "the phone contains letters"),),
        ),
        RejectedRow(
            row=5,
            errors=(
                RowError(
                    5,
                    "Telefone",
                    IssueCode.INVALID,
                    "the phone '5,51199E+12' is in scientific notation, which loses digits: "
                    "format the column as text in the spreadsheet and export it again",
                ),
            ),
        ),
        AcceptedRow(
            row=6,
            draft=ContactDraft(
                phone_e164="+5521987654321",
                name="Eva",
                email="eva@example.com",
                tags=("VIP",),
                custom_fields={"bloco": "B"},
            ),
        ),
    ]


def test_tags_in_one_cell_are_split() -> None:
    [outcome] = csv_outcomes(b'Telefone,Tags\n11987654321,"VIP; S\xc3\xadndico |novo"\n')
    assert isinstance(outcome, AcceptedRow)
    assert outcome.draft.tags == ("VIP", "Síndico", "novo")


def test_repeated_phones_in_a_file_keep_the_first_row() -> None:
    text = (
        "Nome,Telefone\n"
        "Ana,(11) 98765-4321\n"
        "Bia,123\n"
        "Ana Souza,11 8765-4321\n"
        "Caio,21987654321\n"
        "Ana de novo,+5511987654321\n"
    )
    outcomes = csv_outcomes(text.encode())
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "AcceptedRow",
        "RejectedRow",
        "SkippedRow",
        "AcceptedRow",
        "SkippedRow",
    ]
    assert outcomes[2] == SkippedRow(
        row=4, column="Telefone", phone_e164="+5511987654321", first_row=2
    )
    assert outcomes[4] == SkippedRow(
        row=6, column="Telefone", phone_e164="+5511987654321", first_row=2
    )
    assert outcomes[2].reason == "same phone as row 2, which is the one imported"


def test_an_opt_out_column_opts_out_but_never_opts_in() -> None:
    text = "Telefone,Descadastrado\n11987654321,sim\n21987654321,não\n31987654321,\n"
    drafts = [
        outcome.draft for outcome in csv_outcomes(text.encode()) if isinstance(outcome, AcceptedRow)
    ]
    assert [(draft.opted_out, draft.opt_out_reason) for draft in drafts] == [
        (True, IMPORT_OPT_OUT_REASON),
        (False, ""),
        (False, ""),
    ]


def test_row_parser_uses_the_configured_region() -> None:
    columns = resolve_columns(["phone"], {})
    parser = RowParser(columns, {}, default_region="US")
    assert parser.parse(2, {"phone": "650 253 0000"}) == AcceptedRow(
        row=2, draft=ContactDraft(phone_e164="+16502530000")
    )
