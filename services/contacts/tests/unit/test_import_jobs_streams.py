"""Import and export plumbing without servers: the chunked file stream, format detection,
batching of outcomes, and the CSV writer of exports and reports."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence

import pytest
from contacts.adapters.import_store import ChunkedFile
from contacts.domain.import_jobs import ImportFormat
from contacts.domain.importing import AcceptedRow, RowOutcome, iter_csv_rows, parse_rows
from contacts.service_layer.exports import csv_stream, spreadsheet_safe
from contacts.service_layer.imports import UploadRejected, _take, detect_format

pytestmark = pytest.mark.unit


class Chunks:
    """Chunks of a stored file, recording which were fetched."""

    def __init__(self, data: bytes, size: int) -> None:
        self.chunks = [data[start : start + size] for start in range(0, len(data), size)]
        self.fetched: list[int] = []

    def fetch(self, chunk_no: int) -> bytes | None:
        self.fetched.append(chunk_no)
        return self.chunks[chunk_no] if chunk_no < len(self.chunks) else None


def test_chunked_file_reads_back_the_bytes_across_chunk_boundaries() -> None:
    data = bytes(range(256)) * 41
    chunks = Chunks(data, 1000)
    stream = ChunkedFile(chunks.fetch)
    parts = []
    while part := stream.read(333):
        parts.append(part)
    assert b"".join(parts) == data
    assert stream.read(10) == b""


def test_chunked_file_fetches_chunks_only_as_they_are_needed() -> None:
    chunks = Chunks(b"x" * 10_000, 1000)
    stream = ChunkedFile(chunks.fetch)
    assert stream.read(1500) == b"x" * 1000
    assert chunks.fetched == [0]
    stream.read(600)
    assert chunks.fetched == [0, 1]


def test_csv_rows_stream_from_chunks_split_inside_characters_and_quotes() -> None:
    lines = ["Nome;Celular;Endereço"]
    lines += [f'João {n};11 9{n:04d}-0000;"Rua Ã, {n}\nBloco B"' for n in range(2000)]
    data = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    stream = io.BufferedReader(ChunkedFile(Chunks(data, 4099).fetch))

    rows = list(iter_csv_rows(stream))

    assert len(rows) == 2000
    assert rows[0] == (
        2,
        {"Nome": "João 0", "Celular": "11 90000-0000", "Endereço": "Rua Ã, 0\nBloco B"},
    )
    assert rows[-1][0] == 2001


@pytest.mark.parametrize(
    ("filename", "head", "declared", "expected"),
    [
        ("contatos.csv", b"PK\x03\x04", None, ImportFormat.CSV),
        ("CONTATOS.XLSX", b"nome", None, ImportFormat.XLSX),
        ("lista.txt", b"nome", None, ImportFormat.CSV),
        ("lista.tsv", b"nome", None, ImportFormat.CSV),
        ("upload", b"PK\x03\x04", None, ImportFormat.XLSX),
        ("upload", b"nome;tel", None, ImportFormat.CSV),
        ("contatos.csv", b"nome", ImportFormat.XLSX, ImportFormat.XLSX),
    ],
)
def test_detect_format(
    filename: str, head: bytes, declared: ImportFormat | None, expected: ImportFormat
) -> None:
    assert detect_format(filename, head, declared) is expected


def test_old_excel_files_are_refused_with_a_hint() -> None:
    with pytest.raises(UploadRejected) as refused:
        detect_format("contatos.xls", b"\xd0\xcf\x11\xe0", None)
    assert refused.value.field == "file"
    assert ".xlsx" in refused.value.message


def test_take_skips_rows_already_done_and_cuts_batches() -> None:
    data = "telefone\n" + "".join(f"1198765{n:04d}\n" for n in range(10))
    outcomes = parse_rows(iter_csv_rows(io.BytesIO(data.encode())), {})

    first = _take(outcomes, 3, after_row=5)
    second = _take(outcomes, 3, after_row=5)
    rest = _take(outcomes, 100, after_row=5)

    assert [outcome.row for outcome in first] == [6, 7, 8]
    assert [outcome.row for outcome in second] == [9, 10, 11]
    assert [outcome.row for outcome in rest] == []
    assert all(isinstance(outcome, AcceptedRow) for outcome in first)


def test_take_keeps_duplicate_detection_of_the_skipped_rows() -> None:
    data = "telefone\n11987650001\n11987650002\n11987650001\n"
    outcomes = parse_rows(iter_csv_rows(io.BytesIO(data.encode())), {})
    batch: list[RowOutcome] = _take(outcomes, 10, after_row=3)
    assert [type(outcome).__name__ for outcome in batch] == ["SkippedRow"]


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("+5511987654321", "+5511987654321"),
        ("-12.5", "-12.5"),
        ("Maria", "Maria"),
        ("", ""),
    ],
)
def test_spreadsheet_safe(cell: str, safe: str) -> None:
    assert spreadsheet_safe(cell) == safe


async def rows_of(rows: Sequence[Sequence[str | int]]) -> AsyncIterator[Sequence[str | int]]:
    for row in rows:
        yield row


async def test_csv_stream_writes_a_bom_header_and_rows_in_chunks() -> None:
    rows: list[list[str | int]] = [[n, f"nome {n}", "=1+1"] for n in range(5)]

    chunks = [
        chunk
        async for chunk in csv_stream(
            ("row", "name", "x"), rows_of(rows), delimiter=";", rows_per_chunk=2
        )
    ]

    assert len(chunks) == 3
    text = b"".join(chunks).decode("utf-8")
    assert text.startswith("\ufeffrow;name;x\r\n0;nome 0;'=1+1\r\n")
    parsed = list(csv.reader(io.StringIO(text.removeprefix("\ufeff")), delimiter=";"))
    assert parsed[0] == ["row", "name", "x"]
    assert parsed[-1] == ["4", "nome 4", "'=1+1"]
    assert len(parsed) == 6


async def test_csv_stream_of_no_rows_is_the_header() -> None:
    chunks = [chunk async for chunk in csv_stream(("a", "b"), rows_of([]))]
    assert b"".join(chunks) == "\ufeffa,b\r\n".encode()
