"""Contact imports and exports through the API on Postgres: upload, run, report, re-run,
XLSX, mappings, 422s, tenant isolation, list option, exports of a filter and a list.

Jobs are run in the test (``ImportJobRunner``) rather than by a worker loop, so each test
decides when a job runs; the worker loop itself is tested in ``test_import_worker.py``.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from contacts.adapters.import_tables import import_jobs
from contacts.adapters.orm import contacts
from contacts.bootstrap import build_workers
from contacts.config import ContactsSettings
from contacts.domain.events import TOPIC
from contacts.domain.model import CustomFieldDefinition, FieldType
from contacts.entrypoints.api import contacts as contacts_routes
from contacts.entrypoints.api import lists as lists_routes
from contacts.entrypoints.api.dependencies import ApiContext, install_context
from contacts.entrypoints.api.imports import imports_router
from contacts.entrypoints.api.problems import install_contacts_problems
from contacts.entrypoints.import_worker import ImportWorker
from contacts.service_layer import lists
from contacts.service_layer.imports import ImportJobRunner, RunResult
from contacts.service_layer.unit_of_work import ContactsUnitOfWork
from esquadrao.contacts.v1.contacts_pb2 import ContactEvent
from esquadrao_common.api_limits import ApiLimitKind
from esquadrao_common.auth import Role, mint_token
from esquadrao_common.events import payload_name
from esquadrao_common.platform_tables import outbox_table
from esquadrao_common.resilience.ratelimit import Limit
from esquadrao_common.service import Platform, create_api
from openpyxl import Workbook
from sqlalchemy import select

if TYPE_CHECKING:
    from conftest import ContactsApi

pytestmark = pytest.mark.integration

SECRET = "contacts-import-test-secret-0123456789"
PROBLEM = "application/problem+json"
BLOCO = CustomFieldDefinition(key="bloco", label="Bloco", type=FieldType.CHOICE, options=("A", "B"))
VAGAS = CustomFieldDefinition(key="vagas", label="Vagas de garagem", type=FieldType.NUMBER)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ImportsApi:
    platform: Platform
    client: httpx.AsyncClient

    async def company(self, *definitions: CustomFieldDefinition) -> str:
        """A new company, unlimited by API limits, with these custom fields."""
        company = f"co-{uuid.uuid4().hex[:10]}"
        store = self.platform.api_limits().store
        for kind in (ApiLimitKind.CONTACT, ApiLimitKind.GLOBAL):
            await store.set(company, kind, Limit(rate=100_000, burst=100_000))
        async with self.uow() as uow:
            for definition in definitions:
                await uow.fields.put(company, definition, now())
            await uow.commit()
        return company

    def headers(self, company: str, role: Role = Role.SUPERVISOR) -> dict[str, str]:
        token = mint_token(
            company_id=company, user="importer", role=role, secret=SECRET, ttl_seconds=600
        )
        return {"Authorization": f"Bearer {token}"}

    def uow(self) -> ContactsUnitOfWork:
        return ContactsUnitOfWork(self.platform.database)

    def runner(self, batch_size: int = 250) -> ImportJobRunner:
        return ImportJobRunner(self.uow, batch_size=batch_size, default_region="BR")

    async def upload(
        self,
        company: str,
        filename: str,
        content: bytes,
        *,
        expect: int = 202,
        role: Role = Role.SUPERVISOR,
        **fields: str,
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/imports",
            files={"file": (filename, content)},
            data=fields,
            headers=self.headers(company, role),
        )
        assert response.status_code == expect, response.text
        body: dict[str, Any] = response.json()
        return body

    async def run_all(self, batch_size: int = 250) -> list[RunResult]:
        """Run every queued job to its end."""
        runner = self.runner(batch_size)
        results = []
        while (lease := await runner.lease()) is not None:
            results.append(await runner.run(lease, lambda: False))
        return results

    async def job(self, company: str, job_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/imports/{job_id}", headers=self.headers(company))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def report(self, company: str, job_id: str, **params: str) -> list[list[str]]:
        response = await self.client.get(
            f"/imports/{job_id}/errors", params=params, headers=self.headers(company)
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        text = response.content.decode("utf-8-sig")
        return list(csv.reader(io.StringIO(text), delimiter=params.get("delimiter", ",")))

    async def phones(self, company: str) -> list[str]:
        """Every contact phone of the company (deleted ones too), with repeats."""
        async with self.platform.database.sessionmaker() as session:
            rows = await session.execute(
                select(contacts.c.phone_e164).where(contacts.c.company_id == company)
            )
            return [row.phone_e164 for row in rows]

    async def events(self, company: str, *payloads: str) -> list[ContactEvent]:
        statement = (
            select(outbox_table.c.topic, outbox_table.c.key, outbox_table.c.value)
            .where(outbox_table.c.company_id == company)
            .order_by(outbox_table.c.id)
        )
        async with self.platform.database.sessionmaker() as session:
            rows = (await session.execute(statement)).all()
        found = []
        for row in rows:
            assert row.topic == TOPIC
            event = ContactEvent.FromString(row.value)
            if payload_name(event) in payloads:
                found.append(event)
        return found


@pytest.fixture
async def imports_api(
    migrated_database: str, kafka_bootstrap: str, redis_url: str
) -> AsyncIterator[ImportsApi]:
    """An app with the contacts, lists and import routers on a migrated database."""
    settings = ContactsSettings(
        database_url=migrated_database,
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        jwt_secret=SECRET,
    )
    platform = Platform(settings)
    app = create_api(
        platform,
        title="contacts imports under test",
        routers=[contacts_routes.router(), lists_routes.router(), imports_router()],
    )
    install_contacts_problems(app)
    install_context(
        app,
        ApiContext(uow=lambda: ContactsUnitOfWork(platform.database), clock=now, settings=settings),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://contacts") as client:
            yield ImportsApi(platform, client)


@dataclass(frozen=True)
class Generated:
    """A generated file and what importing it must give."""

    content: bytes
    good_phones: list[str]
    report: list[list[str]]
    data_rows: int


def phone_of(n: int) -> tuple[str, str]:
    """A valid mobile as a person would write it, and its E.164 form."""
    subscriber = 80_000_000 + n
    return f"(11) 9{subscriber // 10_000}-{subscriber % 10_000:04d}", f"+55119{subscriber}"


def generate(rows: int) -> Generated:
    """A CSV with a header matched by name; every 20th row bad in one of four ways:
    invalid phone, bad e-mail, a value not among the choice field's options, a phone an
    earlier row has (written differently)."""
    lines = ["telefone;nome;email;bloco;tags"]
    good: list[str] = []
    report: list[list[str]] = []
    for n in range(rows):
        row = n + 2
        written, e164 = phone_of(n)
        name, email, bloco = f"Pessoa {n}", f"p{n}@example.com", "AB"[n % 2]
        match n % 20:
            case 3:
                written = "12345"
                report.append([str(row), "telefone", "invalid", "the phone is too short"])
            case 7:
                email = "nao-e-email"
                report.append(
                    [str(row), "email", "invalid", "'nao-e-email' is not an e-mail address"]
                )
            case 11:
                bloco = "Z"
                report.append([str(row), "bloco", "invalid", "'Z' is not one of A, B"])
            case 15:
                previous_written, e164 = phone_of(n - 1)
                written = "+55 " + previous_written
                report.append(
                    [
                        str(row),
                        "telefone",
                        "duplicate",
                        f"same phone as row {row - 1}, which is the one imported",
                    ]
                )
            case _:
                good.append(e164)
        lines.append(f"{written};{name};{email};{bloco};importado, lote {n % 3}")
    content = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    return Generated(content=content, good_phones=good, report=report, data_rows=rows)


async def test_a_csv_with_bad_rows_imports_every_good_row_once_and_reports_the_rest(
    imports_api: ImportsApi,
) -> None:
    company = await imports_api.company(BLOCO)
    data = generate(2000)

    response = await imports_api.client.post(
        "/imports",
        files={"file": ("contatos.csv", data.content, "text/csv")},
        headers=imports_api.headers(company),
    )

    assert response.status_code == 202, response.text
    queued = response.json()
    assert response.headers["Location"] == f"/imports/{queued['id']}"
    assert queued["status"] == "queued"
    assert queued["format"] == "csv"
    assert queued["total_rows"] == 2000
    assert queued["byte_size"] == len(data.content)
    assert queued["processed"] == 0
    assert queued["percent"] == 0.0

    assert await imports_api.run_all() == [RunResult.COMPLETED]

    job = await imports_api.job(company, queued["id"])
    bad = len(data.report)
    assert job["status"] == "completed"
    assert job["percent"] == 100.0
    assert job["finished_at"] is not None
    assert {key: job[key] for key in ("processed", "created", "updated", "skipped", "errors")} == {
        "processed": 2000,
        "created": 2000 - bad,
        "updated": 0,
        "skipped": 100,
        "errors": 300,
    }
    assert job["total_rows"] == 2000
    report = await imports_api.report(company, queued["id"])
    assert report[0] == ["row", "column", "code", "reason"]
    assert report[1:] == data.report
    phones = await imports_api.phones(company)
    assert sorted(phones) == sorted(data.good_phones)
    created_events = await imports_api.events(company, "contact_created")
    assert len(created_events) == len(data.good_phones)
    assert {event.envelope.correlation_id for event in created_events} == {queued["id"]}
    (completed,) = await imports_api.events(company, "contact_import_completed")
    assert completed.contact_import_completed.job_id == queued["id"]
    assert completed.contact_import_completed.processed == 2000
    assert completed.contact_import_completed.created == len(data.good_phones)
    assert completed.contact_import_completed.errors == 300


async def test_running_the_same_file_again_changes_nothing_and_creates_no_duplicates(
    imports_api: ImportsApi,
) -> None:
    company = await imports_api.company(BLOCO)
    data = generate(600)
    first = await imports_api.upload(company, "contatos.csv", data.content)
    await imports_api.run_all()
    events_before = len(await imports_api.events(company, "contact_created", "contact_updated"))

    second = await imports_api.upload(company, "contatos.csv", data.content)
    await imports_api.run_all()

    job = await imports_api.job(company, second["id"])
    good = len(data.good_phones)
    assert (job["created"], job["updated"], job["unchanged"]) == (0, 0, good)
    assert job["skipped"] == good + 30
    assert job["errors"] == 90
    assert (await imports_api.report(company, second["id"]))[1:] == data.report
    assert (await imports_api.report(company, first["id"]))[1:] == data.report
    assert sorted(await imports_api.phones(company)) == sorted(data.good_phones)
    assert len(await imports_api.events(company, "contact_created", "contact_updated")) == (
        events_before
    )
    assert len(await imports_api.events(company, "contact_import_completed")) == 2


async def test_a_changed_file_updates_the_contacts_it_names(imports_api: ImportsApi) -> None:
    company = await imports_api.company()
    await imports_api.upload(company, "a.csv", b"celular,nome\n11987650001,Ana\n11987650002,Bia\n")
    await imports_api.run_all()

    job = await imports_api.upload(
        company, "b.csv", b"celular,nome\n11987650001,Ana Maria\n11987650002,Bia\n"
    )
    await imports_api.run_all()

    done = await imports_api.job(company, job["id"])
    assert (done["created"], done["updated"], done["unchanged"]) == (0, 1, 1)
    (updated,) = await imports_api.events(company, "contact_updated")
    assert updated.contact_updated.contact.name == "Ana Maria"
    assert list(updated.contact_updated.changed_fields) == ["name"]


def workbook_bytes(rows: list[list[Any]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


async def test_an_xlsx_with_a_client_mapping(imports_api: ImportsApi) -> None:
    company = await imports_api.company(BLOCO, VAGAS)
    content = workbook_bytes(
        [
            ["Número", "Morador", "Torre", "Garagens", "Observação"],
            [11987650001, "Ana", "a", 2, "ignorada"],
            ["(21) 98765-0002", "Bia", "B", "1,5", None],
            [None, None, None, None, None],
            ["11 9876", "Caio", "A", 1, None],
        ]
    )
    mapping = json.dumps(
        {
            "Número": "phone",
            "Morador": "name",
            "Torre": "custom:bloco",
            "Garagens": "custom:vagas",
            "Observação": None,
        }
    )

    job = await imports_api.upload(company, "planilha.xlsx", content, mapping=mapping)
    assert job["format"] == "xlsx"
    assert job["total_rows"] is None
    assert job["mapping"]["Observação"] is None
    await imports_api.run_all()

    done = await imports_api.job(company, job["id"])
    assert (done["processed"], done["created"], done["errors"], done["total_rows"]) == (3, 2, 1, 3)
    assert (await imports_api.report(company, job["id"]))[1:] == [
        ["5", "Número", "invalid", "the phone is too short"]
    ]
    created = [
        event.contact_created.contact
        for event in await imports_api.events(company, "contact_created")
    ]
    assert [(c.phone_e164, c.name, dict(c.custom_fields)) for c in created] == [
        ("+5511987650001", "Ana", {"bloco": "A", "vagas": "2"}),
        ("+5521987650002", "Bia", {"bloco": "B", "vagas": "1.5"}),
    ]


@pytest.mark.parametrize(
    ("files", "data", "field", "message"),
    [
        (
            {"file": ("c.csv", b"Fone,Nome\n11987650001,Ana\n")},
            {"mapping": '{"Telefone": "phone", "Nome": "name"}'},
            "body.mapping.Telefone",
            "the file has no such column",
        ),
        (
            {"file": ("c.csv", b"Fone,Nome\n11987650001,Ana\n")},
            {"mapping": '{"Fone": "phone", "Nome": "apelido"}'},
            "body.mapping.Nome",
            "'apelido' is not a target",
        ),
        (
            {"file": ("c.csv", b"Fone,Nome\n11987650001,Ana\n")},
            {"mapping": '{"Fone": "phone", "Nome": "custom:andar"}'},
            "body.mapping.Nome",
            "no custom field 'andar'",
        ),
        (
            {"file": ("c.csv", b"Contato,Nome\n11987650001,Ana\n")},
            {},
            "body.mapping",
            "no phone column",
        ),
        ({"file": ("c.csv", b"Fone\n1\n")}, {"mapping": "[1, 2]"}, "body.mapping", "JSON object"),
        ({"file": ("c.csv", b"Fone\n1\n")}, {"mapping": "{"}, "body.mapping", "not JSON"),
        ({"file": ("c.csv", b"")}, {}, "body.file", "no header row"),
        ({"file": ("c.xlsx", b"not a zip")}, {}, "body.file", "not a readable XLSX"),
        ({"file": ("c.xls", b"\xd0\xcf")}, {}, "body.file", "save the sheet as .xlsx"),
        ({}, {"mapping": "{}"}, "body.file", "a file is required"),
        (
            {"file": ("c.csv", b"Fone\n1\n")},
            {"list_id": "not-a-uuid"},
            "body.list_id",
            "UUID",
        ),
        (
            {"file": ("c.csv", b"Fone\n1\n")},
            {"list_id": str(uuid.uuid4())},
            "body.list_id",
            "there is no contact list",
        ),
        ({"file": ("c.csv", b"Fone\n1\n")}, {"format": "ods"}, "body.format", "csv or xlsx"),
    ],
)
async def test_an_upload_that_cannot_work_is_a_422_naming_the_field(
    imports_api: ImportsApi,
    files: dict[str, tuple[str, bytes]],
    data: dict[str, str],
    field: str,
    message: str,
) -> None:
    company = await imports_api.company()

    response = await imports_api.client.post(
        "/imports",
        files=files or {"other": ("x", b"")},
        data=data,
        headers=imports_api.headers(company),
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    errors = response.json()["errors"]
    assert errors[0]["field"] == field
    assert message in errors[0]["message"]
    async with imports_api.uow() as uow:
        jobs = (await uow.session.execute(select(import_jobs.c.id))).all()
    assert jobs == []


async def test_a_file_over_the_limit_is_a_413(
    imports_api: ImportsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    company = await imports_api.company()
    settings = imports_api.platform.settings
    assert isinstance(settings, ContactsSettings)
    monkeypatch.setattr(settings, "import_max_bytes", 1000)
    content = b"telefone\n" + b"11987650001\n" * 200

    response = await imports_api.client.post(
        "/imports", files={"file": ("c.csv", content)}, headers=imports_api.headers(company)
    )

    assert response.status_code == 413, response.text
    assert response.json()["type"] == "https://esquadrao.dev/problems/too-large"


async def test_jobs_are_scoped_to_their_company(imports_api: ImportsApi) -> None:
    owner = await imports_api.company()
    other = await imports_api.company()
    job = await imports_api.upload(owner, "c.csv", b"telefone\n11987650001\n")

    for path in (f"/imports/{job['id']}", f"/imports/{job['id']}/errors"):
        response = await imports_api.client.get(path, headers=imports_api.headers(other))
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith(PROBLEM)
    listed = await imports_api.client.get("/imports", headers=imports_api.headers(other))
    assert listed.json() == {"items": [], "next_cursor": None}
    await imports_api.run_all()
    assert await imports_api.phones(other) == []


async def test_agents_may_not_import_or_export(imports_api: ImportsApi) -> None:
    company = await imports_api.company()
    await imports_api.upload(company, "c.csv", b"telefone\n1\n", expect=403, role=Role.AGENT)
    response = await imports_api.client.get(
        "/exports/contacts", headers=imports_api.headers(company, Role.AGENT)
    )
    assert response.status_code == 403


async def test_jobs_list_newest_first_with_cursors(imports_api: ImportsApi) -> None:
    company = await imports_api.company()
    ids = [
        (await imports_api.upload(company, f"{n}.csv", b"telefone\n11987650001\n"))["id"]
        for n in range(3)
    ]

    first = await imports_api.client.get(
        "/imports", params={"limit": 2}, headers=imports_api.headers(company)
    )
    second = await imports_api.client.get(
        "/imports",
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=imports_api.headers(company),
    )

    assert [job["id"] for job in first.json()["items"]] == ids[::-1][:2]
    assert [job["id"] for job in second.json()["items"]] == ids[:1]
    assert second.json()["next_cursor"] is None


async def test_keep_existing_and_add_to_a_list(imports_api: ImportsApi) -> None:
    company = await imports_api.company()
    async with imports_api.uow() as uow:
        contact_list = await lists.create_list(uow, company, "Moradores", now=now())
        await uow.commit()
    await imports_api.upload(company, "a.csv", b"telefone,nome\n11987650001,Ana\n")
    await imports_api.run_all()

    job = await imports_api.upload(
        company,
        "b.csv",
        b"telefone,nome\n11987650001,Outra\n11987650002,Bia\n",
        update_existing="false",
        list_id=contact_list.id,
    )
    await imports_api.run_all()

    done = await imports_api.job(company, job["id"])
    assert done["options"] == {"update_existing": False, "list_id": contact_list.id}
    assert (done["created"], done["updated"], done["skipped"]) == (1, 0, 1)
    assert (await imports_api.report(company, job["id"]))[1:] == [
        [
            "2",
            "telefone",
            "exists",
            "a contact with this phone exists, and this import does not update existing contacts",
        ]
    ]
    assert await imports_api.events(company, "contact_updated") == []
    (membership,) = await imports_api.events(company, "contact_list_membership_changed")
    assert len(membership.contact_list_membership_changed.added_contact_ids) == 2
    assert membership.envelope.correlation_id == job["id"]
    exported = await export(imports_api, company, list_id=contact_list.id)
    assert sorted(row["phone"] for row in exported) == ["+5511987650001", "+5511987650002"]
    assert sorted(row["name"] for row in exported) == ["Ana", "Bia"]


async def export(imports_api: ImportsApi, company: str, **params: str) -> list[dict[str, str]]:
    response = await imports_api.client.get(
        "/exports/contacts", params=params, headers=imports_api.headers(company)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].startswith('attachment; filename="contacts-')
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    delimiter = {"tab": "\t"}.get(params.get("delimiter", ","), params.get("delimiter", ","))
    return list(csv.DictReader(io.StringIO(text[1:]), delimiter=delimiter))


async def test_export_streams_a_filter_and_imports_back_unchanged(
    imports_api: ImportsApi,
) -> None:
    company = await imports_api.company(BLOCO)
    data = generate(1200)
    await imports_api.upload(company, "contatos.csv", data.content)
    await imports_api.run_all()

    everyone = await export(imports_api, company, delimiter=";")
    tagged = await export(imports_api, company, tag="LOTE 1")
    searched = await export(imports_api, company, q="pessoa 11")

    assert list(everyone[0]) == [
        "id",
        "phone",
        "name",
        "email",
        "tags",
        "condominio",
        "endereco",
        "cargo",
        "opted_out",
        "custom:bloco",
        "created_at",
        "updated_at",
    ]
    assert sorted(row["phone"] for row in everyone) == sorted(data.good_phones)
    assert len({row["id"] for row in everyone}) == len(data.good_phones)
    assert all(row["tags"].startswith("importado, lote ") for row in everyone)
    assert {row["tags"] for row in tagged} == {"importado, lote 1"}
    assert len(tagged) == sum(1 for row in everyone if row["tags"].endswith("1"))
    assert sorted(row["name"] for row in searched) == sorted(
        row["name"] for row in everyone if row["name"].startswith("Pessoa 11")
    )

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(everyone[0]), delimiter=";")
    writer.writeheader()
    writer.writerows(everyone)
    again = await imports_api.upload(company, "export.csv", buffer.getvalue().encode())
    await imports_api.run_all()
    done = await imports_api.job(company, again["id"])
    assert (done["processed"], done["unchanged"], done["errors"]) == (
        len(everyone),
        len(everyone),
        0,
    )


async def test_export_of_an_unknown_list_is_a_404(imports_api: ImportsApi) -> None:
    company = await imports_api.company()
    response = await imports_api.client.get(
        "/exports/contacts",
        params={"list_id": str(uuid.uuid4())},
        headers=imports_api.headers(company),
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_the_service_app_serves_imports_and_runs_the_import_worker(
    contacts_api: ContactsApi,
) -> None:
    company = contacts_api.new_company()
    headers = contacts_api.headers(company, Role.ADMIN)

    response = await contacts_api.client.post(
        "/imports", files={"file": ("c.csv", b"telefone\n11987650001\n")}, headers=headers
    )

    assert response.status_code == 202, response.text
    workers = build_workers(contacts_api.platform)
    assert any(isinstance(worker, ImportWorker) for worker in workers)
