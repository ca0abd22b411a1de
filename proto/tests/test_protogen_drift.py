"""``protogen`` reports and repairs stale, missing and extra generated files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from esquadrao_devstack.protogen import ProtocError, check, find_proto_root, generate, main

pytestmark = pytest.mark.unit

PROTO_ROOT = Path(__file__).resolve().parents[1]
CONTACTS = Path("esquadrao/contacts/v1")


@pytest.fixture
def proto_copy(tmp_path: Path) -> Path:
    """A copy of the contracts' sources only (no generated code, no __init__ files)."""
    root = tmp_path / "proto"
    for source in PROTO_ROOT.rglob("*.proto"):
        target = root / source.relative_to(PROTO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    shutil.copy(PROTO_ROOT / "buf.yaml", root / "buf.yaml")
    return root


def test_generate_creates_modules_stubs_and_packages(proto_copy: Path) -> None:
    drift = generate(proto_copy)

    assert CONTACTS / "contacts_pb2.py" in drift.missing
    assert CONTACTS / "contacts_pb2.pyi" in drift.missing
    assert Path("esquadrao/__init__.py") in drift.missing
    assert (proto_copy / CONTACTS / "__init__.py").read_text().startswith('"""')
    assert not check(proto_copy)


def test_generation_is_deterministic(proto_copy: Path) -> None:
    generate(proto_copy)
    for generated in (PROTO_ROOT / CONTACTS).glob("*_pb2.py*"):
        copy = proto_copy / CONTACTS / generated.name
        assert copy.read_bytes() == generated.read_bytes(), generated.name


def test_check_reports_a_stale_file_and_generate_repairs_it(proto_copy: Path) -> None:
    generate(proto_copy)
    source = proto_copy / CONTACTS / "contacts.proto"
    source.write_text(
        source.read_text().replace("int64 errors = 6;", "int64 errors = 6;\n  int64 warnings = 7;")
    )

    drift = check(proto_copy)

    assert set(drift.stale) == {CONTACTS / "contacts_pb2.py", CONTACTS / "contacts_pb2.pyi"}
    assert not drift.missing and not drift.extra
    generate(proto_copy)
    assert "warnings" in (proto_copy / CONTACTS / "contacts_pb2.pyi").read_text()
    assert not check(proto_copy)


def test_check_reports_files_left_by_a_deleted_proto(proto_copy: Path) -> None:
    generate(proto_copy)
    (proto_copy / CONTACTS / "contacts.proto").unlink()

    drift = check(proto_copy)

    assert set(drift.extra) == {CONTACTS / "contacts_pb2.py", CONTACTS / "contacts_pb2.pyi"}
    generate(proto_copy)
    assert not list((proto_copy / CONTACTS).glob("*_pb2.py*"))


def test_main_check_exits_1_and_lists_drift(
    proto_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check", "--proto-root", str(proto_copy)]) == 1
    assert f"missing: {CONTACTS / 'contacts_pb2.py'}" in capsys.readouterr().err

    assert main(["--proto-root", str(proto_copy)]) == 0
    assert main(["--check", "--proto-root", str(proto_copy)]) == 0


def test_main_reports_protoc_errors(proto_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (proto_copy / CONTACTS / "broken.proto").write_text('syntax = "proto3";\nmessage {')

    assert main(["--proto-root", str(proto_copy)]) == 2
    assert "broken.proto" in capsys.readouterr().err
    with pytest.raises(ProtocError):
        check(proto_copy)


def test_find_proto_root_from_the_repository_or_inside_it(proto_copy: Path) -> None:
    assert find_proto_root(proto_copy.parent) == proto_copy.resolve()
    assert find_proto_root(proto_copy / CONTACTS) == proto_copy.resolve()
    with pytest.raises(FileNotFoundError):
        find_proto_root(proto_copy.parent.parent)
