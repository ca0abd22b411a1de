"""``contacts import``: upload, follow the job over REST, summary and report download,
against a fake API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from contacts.entrypoints import cli

pytestmark = pytest.mark.unit

JOB_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def job(status: str, **counts: Any) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "status": status,
        "filename": "contatos.csv",
        "total_rows": 10,
        "processed": 0,
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "errors": 0,
        "error": None,
        "errors_url": f"/imports/{JOB_ID}/errors",
        **counts,
    }


class FakeApi:
    """Answers the upload with a queued job, then one state per poll."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states
        self.uploads: list[httpx.Request] = []
        self.polls = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/imports":
            self.uploads.append(request)
            return httpx.Response(202, json=job("queued"))
        if request.url.path == f"/imports/{JOB_ID}":
            state = self.states[min(self.polls, len(self.states) - 1)]
            self.polls += 1
            return httpx.Response(200, json=state)
        if request.url.path == f"/imports/{JOB_ID}/errors":
            return httpx.Response(200, content=b"row,column,code,reason\r\n3,phone,invalid,x\r\n")
        return httpx.Response(404, json={"status": 404, "title": "Not Found"})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle), base_url="http://api")


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "contatos.csv"
    path.write_text("telefone\n11987654321\n")
    return path


def test_follows_the_job_to_its_end_and_saves_the_report(csv_file: Path, tmp_path: Path) -> None:
    api = FakeApi(
        [
            job("running", processed=4, created=4),
            job("completed", processed=10, total_rows=10, created=8, skipped=1, errors=1),
        ]
    )
    report = tmp_path / "erros.csv"
    sleeps: list[float] = []

    with api.client() as client:
        status = cli.run_import(
            client,
            csv_file,
            mapping='{"telefone": "phone"}',
            list_id="3d1e3b0e-4c2f-4b8e-9d59-6c1c3f1f0a11",
            update_existing=False,
            errors_out=report,
            poll_interval=0.25,
            sleep=sleeps.append,
        )

    assert status == 0
    assert api.polls == 2
    assert sleeps == [0.25, 0.25]
    (upload,) = api.uploads
    body = upload.content
    assert b'name="file"; filename="contatos.csv"' in body
    assert b'{"telefone": "phone"}' in body
    assert b'name="update_existing"\r\n\r\nfalse' in body
    assert b"3d1e3b0e-4c2f-4b8e-9d59-6c1c3f1f0a11" in body
    assert report.read_bytes().startswith(b"row,column,code,reason")


def test_a_failed_job_exits_with_1(csv_file: Path) -> None:
    api = FakeApi([job("failed", error="not a readable CSV")])
    with api.client() as client:
        assert cli.run_import(client, csv_file, sleep=lambda _s: None) == 1


def test_no_wait_returns_after_the_upload(csv_file: Path) -> None:
    api = FakeApi([])
    with api.client() as client:
        assert cli.run_import(client, csv_file, wait=False) == 0
    assert api.polls == 0


def test_a_refused_upload_exits_with_2_and_shows_the_fields(
    csv_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    problem = {
        "status": 422,
        "title": "Unprocessable Content",
        "detail": "invalid input: body.mapping.Fone",
        "errors": [
            {"field": "body.mapping.Fone", "message": "the file has no such column", "type": "x"}
        ],
    }

    def refuse(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, content=json.dumps(problem))

    client = httpx.Client(transport=httpx.MockTransport(refuse), base_url="http://api")
    with client, pytest.raises(typer.Exit) as exited:
        cli.run_import(client, csv_file)

    assert exited.value.exit_code == 2
    assert "body.mapping.Fone: the file has no such column" in capsys.readouterr().out
