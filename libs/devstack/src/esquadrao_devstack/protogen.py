"""Generate the Python code of the event contracts: ``python -m esquadrao_devstack.protogen``.

protoc (the one bundled in grpcio-tools, with its well-known types such as
``google/protobuf/timestamp.proto``) compiles every ``.proto`` under the contracts root and
writes ``*_pb2.py`` and ``*_pb2.pyi`` beside each source, so ``esquadrao.contacts.v1`` is
importable straight from the source tree and type-checked through its stubs. Every package
directory gets an ``__init__.py`` (a docstring only) when it has none.

The generated files are kept in the repository. ``--check`` regenerates into a scratch
directory, compares, and exits with status 1 listing stale, missing and extra files; the
test suite runs the same check, so stale code fails CI. Output depends only on the sources
and the protoc version pinned by the lock file, never on the machine or the run.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Suffixes of the files protoc generates for one ``.proto`` (``x.proto`` -> ``x_pb2.py``).
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")

#: The contracts root is the directory named ``proto`` that holds the buf configuration.
_ROOT_NAME = "proto"
_ROOT_MARKER = "buf.yaml"


class ProtocError(RuntimeError):
    """protoc rejected the sources; its diagnostics are in the message."""


@dataclass(frozen=True)
class Drift:
    """Differences between the generated files in the tree and fresh output.

    Paths are relative to the contracts root.
    """

    stale: tuple[Path, ...]
    missing: tuple[Path, ...]
    extra: tuple[Path, ...]

    def __bool__(self) -> bool:
        return bool(self.stale or self.missing or self.extra)

    def lines(self, labels: tuple[str, str, str] = ("stale", "missing", "extra")) -> list[str]:
        """One ``<label>: <path>`` line per differing file, by kind then path.

        ``labels`` name the stale, missing and extra kinds, in that order.
        """
        kinds = zip(labels, (self.stale, self.missing, self.extra), strict=True)
        return [f"{label}: {path}" for label, paths in kinds for path in paths]


def find_proto_root(start: Path) -> Path:
    """The ``proto/`` directory of the repository containing ``start`` (or ``start`` itself).

    Raises FileNotFoundError when no ancestor holds ``proto/buf.yaml``.
    """
    start = start.resolve()
    for directory in (start, *start.parents):
        for candidate in (directory, directory / _ROOT_NAME):
            if candidate.name == _ROOT_NAME and (candidate / _ROOT_MARKER).is_file():
                return candidate
    raise FileNotFoundError(f"no {_ROOT_NAME}/{_ROOT_MARKER} in {start} or any parent directory")


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def proto_sources(proto_root: Path) -> list[Path]:
    """Every ``.proto`` under the root (hidden directories aside), relative and sorted."""
    return sorted(
        path.relative_to(proto_root)
        for path in proto_root.rglob("*.proto")
        if _visible(path, proto_root)
    )


def package_dirs(sources: Sequence[Path]) -> list[Path]:
    """Every directory holding a source, and their parents, relative to the root; sorted."""
    dirs = {parent for source in sources for parent in source.parents if parent != Path(".")}
    return sorted(dirs)


def generated_files(proto_root: Path) -> list[Path]:
    """The generated modules and stubs currently in the tree, relative and sorted."""
    return sorted(
        path.relative_to(proto_root)
        for suffix in GENERATED_SUFFIXES
        for path in proto_root.rglob(f"*{suffix}")
        if _visible(path, proto_root)
    )


def _well_known_types_dir() -> Path:
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or spec.origin is None:
        raise ProtocError("grpcio-tools is not installed (it is a dev dependency: `make sync`)")
    return Path(spec.origin).parent / "_proto"


def run_protoc(proto_root: Path, out_dir: Path) -> list[Path]:
    """Compile every source under ``proto_root`` into ``out_dir``; return the files written.

    Raises ProtocError with protoc's diagnostics when compilation fails.
    """
    sources = proto_sources(proto_root)
    if not sources:
        return []
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={_well_known_types_dir()}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(source) for source in sources),
    ]
    result = subprocess.run(command, cwd=proto_root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProtocError(f"protoc failed (exit {result.returncode}):\n{result.stderr.strip()}")
    return generated_files(out_dir)


def _init_text(package_dir: Path) -> str:
    dotted = ".".join(package_dir.parts)
    return f'"""Generated Protobuf code of {dotted} (run `make proto` to refresh)."""\n'


def compare(proto_root: Path, fresh_dir: Path) -> Drift:
    """Compare the tree under ``proto_root`` with fresh protoc output in ``fresh_dir``.

    Missing ``__init__.py`` files of package directories count as missing; existing ones
    are never compared (their docstrings may be written by hand).
    """
    fresh = set(generated_files(fresh_dir))
    present = set(generated_files(proto_root))
    stale = sorted(
        path
        for path in fresh & present
        if not filecmp.cmp(fresh_dir / path, proto_root / path, shallow=False)
    )
    missing_inits = {
        directory / "__init__.py"
        for directory in package_dirs(proto_sources(proto_root))
        if not (proto_root / directory / "__init__.py").is_file()
    }
    return Drift(
        stale=tuple(stale),
        missing=tuple(sorted((fresh - present) | missing_inits)),
        extra=tuple(sorted(present - fresh)),
    )


def generate(proto_root: Path) -> Drift:
    """Bring the generated code under ``proto_root`` up to date; return what was changed.

    Writes stale and missing files, creates missing ``__init__.py`` files and deletes
    generated files whose ``.proto`` no longer exists. Unchanged files are not touched.
    """
    with tempfile.TemporaryDirectory(prefix="protogen-") as scratch:
        fresh_dir = Path(scratch)
        run_protoc(proto_root, fresh_dir)
        drift = compare(proto_root, fresh_dir)
        for path in (*drift.stale, *drift.missing):
            target = proto_root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.name == "__init__.py":
                target.write_text(_init_text(path.parent))
            else:
                shutil.copyfile(fresh_dir / path, target)
        for path in drift.extra:
            (proto_root / path).unlink()
    return drift


def check(proto_root: Path) -> Drift:
    """What ``generate`` would change, without changing anything."""
    with tempfile.TemporaryDirectory(prefix="protogen-") as scratch:
        fresh_dir = Path(scratch)
        run_protoc(proto_root, fresh_dir)
        return compare(proto_root, fresh_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m esquadrao_devstack.protogen",
        description="Generate *_pb2.py and *_pb2.pyi beside every .proto of the contracts.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 when generated files are stale, missing or extra",
    )
    parser.add_argument(
        "--proto-root",
        type=Path,
        default=None,
        help="the contracts directory (default: proto/ of the repository around the cwd)",
    )
    args = parser.parse_args(argv)
    try:
        proto_root = args.proto_root or find_proto_root(Path.cwd())
        drift = check(proto_root) if args.check else generate(proto_root)
    except (ProtocError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        if drift:
            print("generated Protobuf code is out of date (run `make proto`):", file=sys.stderr)
            for line in drift.lines():
                print(f"  {line}", file=sys.stderr)
            return 1
        count = len(proto_sources(proto_root))
        print(f"generated Protobuf code is up to date ({count} .proto files)")
        return 0
    for line in drift.lines(labels=("updated", "created", "removed")):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
