"""Fixtures of the devstack tests: scratch repositories and an installable fake service."""

import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from esquadrao_devstack.process import free_port
from esquadrao_devstack.services import ServiceSpec

FAKE_SERVICE_MAIN = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import asyncpg

    command = sys.argv[1]
    report = {"command": command, "env": dict(os.environ)}
    if command == "migrate":
        async def migrate():
            connection = await asyncpg.connect(os.environ["DATABASE_URL"])
            await connection.execute("CREATE TABLE IF NOT EXISTS migrated (id int)")
            report["database"] = await connection.fetchval("SELECT current_database()")
            await connection.close()
        asyncio.run(migrate())
    with open(os.path.join(os.environ["FAKESVC_REPORTS"], command + ".json"), "w") as out:
        json.dump(report, out)
    if command == "all":
        server = HTTPServer(("127.0.0.1", int(os.environ["HTTP_PORT"])), BaseHTTPRequestHandler)
        server.serve_forever()
    """
)


@pytest.fixture
def repo() -> Iterator[Path]:
    """A scratch repository root whose ``.run/`` the unprivileged Postgres account reaches."""
    path = Path(tempfile.mkdtemp(prefix="esquadrao-devstack-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_service(tmp_path: Path) -> tuple[ServiceSpec, Path, Path]:
    """A service package ``fakesvc`` registered through an ``esquadrao.services`` entry point.

    Returns ``(spec, site, reports)``: put ``site`` on ``sys.path``/``PYTHONPATH`` to
    install it and ``reports`` in ``FAKESVC_REPORTS``. Each command it runs writes
    ``<reports>/<command>.json`` (``command``, ``env``); ``all`` then serves HTTP on
    ``HTTP_PORT``, ``migrate`` creates a table in its database (and reports ``database``).
    """
    site = tmp_path / "site"
    package = site / "fakesvc"
    package.mkdir(parents=True)
    port = free_port()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_SERVICE_MAIN)
    (package / "config.py").write_text(
        f"class Service:\n    name = 'fakesvc'\n    http_port = {port}\n\n\nSERVICE = Service()\n"
    )
    dist_info = site / "fakesvc-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakesvc\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[esquadrao.services]\nfakesvc = fakesvc.config:SERVICE\n"
    )
    reports = tmp_path / "reports"
    reports.mkdir()
    return ServiceSpec("fakesvc", port), site, reports
