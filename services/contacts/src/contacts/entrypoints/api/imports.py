"""``/imports`` and ``/exports``: contact import jobs and their reports; contact exports.

``POST /imports`` takes a multipart upload and answers ``202 Accepted`` with the queued job
at once; an import worker runs it (see :mod:`contacts.service_layer.imports`). Clients
follow ``GET /imports/{id}`` for progress and download ``GET /imports/{id}/errors`` (CSV)
for the rows that were not imported. ``GET /exports/contacts`` streams the contacts of a
filter or a list as CSV.

Bulk imports and exports of a company's whole contact base are for supervisors and admins
(403 for agents). Another company's job is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final
from uuid import UUID

from esquadrao_common.api_limits import ApiLimitKind, rate_limited
from esquadrao_common.auth import Principal, Role, require_role
from esquadrao_common.errors import ProblemError, ValidationProblem, problem_responses
from esquadrao_common.pagination import Page, PageParams
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile

from contacts.adapters.repositories import ContactFilter
from contacts.domain.import_jobs import ImportFormat, ImportJob, ImportOptions, JobStatus
from contacts.domain.importing import ImportMappingError
from contacts.entrypoints.api.contacts import field_filters
from contacts.entrypoints.api.dependencies import Context
from contacts.entrypoints.api.problems import validation_problem
from contacts.service_layer import exports, imports
from contacts.service_layer.contacts import contact_search, load_definitions

#: Room for the multipart envelope and the form's other fields beyond the file's bytes.
FORM_OVERHEAD_BYTES: Final = 256 * 1024
CSV_MEDIA_TYPE: Final = "text/csv; charset=utf-8"

Paging = Annotated[PageParams, Depends()]
#: Imports and exports move a company's whole contact base: supervisors and admins only.
Manager = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.SUPERVISOR))]


class ContentTooLarge(ProblemError):
    """413: the upload is larger than the service accepts."""

    default_status = 413
    default_title = "Content Too Large"
    slug = "too-large"


class CsvDelimiter(StrEnum):
    """Cell separator of a downloaded CSV: ``,`` (default), ``;`` (what Excel in a
    Brazilian locale expects when a file is opened by double-click) or ``tab``."""

    COMMA = ","
    SEMICOLON = ";"
    TAB = "tab"

    @property
    def char(self) -> exports.Delimiter:
        if self is CsvDelimiter.SEMICOLON:
            return ";"
        if self is CsvDelimiter.TAB:
            return "\t"
        return ","


DelimiterQuery = Annotated[
    CsvDelimiter, Query(description="Cell separator: `,` (default), `;` or `tab`.")
]


class ImportOptionsOut(BaseModel):
    update_existing: bool
    list_id: str | None


class ImportJobOut(BaseModel):
    """A job and its progress. Counts: every row read (``processed``) is exactly one of
    ``created``, ``updated``, ``skipped`` (of which ``unchanged``: the contact already was
    as the row says) or ``errors``. ``total_rows`` estimates the data rows while the job
    runs (null when unknown, as for XLSX) and is exact once it is completed."""

    id: str
    status: JobStatus
    format: ImportFormat
    filename: str
    mapping: dict[str, str | None] | None
    options: ImportOptionsOut
    byte_size: int
    total_rows: int | None
    percent: float | None
    processed: int
    created: int
    updated: int
    unchanged: int
    skipped: int
    errors: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    errors_url: str

    @classmethod
    def of(cls, job: ImportJob) -> ImportJobOut:
        counts = job.counts
        return cls(
            id=job.id,
            status=job.status,
            format=job.format,
            filename=job.filename,
            mapping=dict(job.mapping) if job.mapping is not None else None,
            options=ImportOptionsOut(
                update_existing=job.options.update_existing, list_id=job.options.list_id
            ),
            byte_size=job.byte_size,
            total_rows=job.total_rows,
            percent=job.percent,
            processed=counts.processed,
            created=counts.created,
            updated=counts.updated,
            unchanged=counts.unchanged,
            skipped=counts.skipped,
            errors=counts.errors,
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            errors_url=f"/imports/{job.id}/errors",
        )


_UPLOAD_SCHEMA: Final[dict[str, Any]] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "A CSV (any of `,` `;` tab; UTF-8, UTF-16 or "
                        "Windows-1252) or an XLSX workbook (first sheet).",
                    },
                    "mapping": {
                        "type": "string",
                        "description": "JSON object: header as in the file → `phone`, "
                        "`name`, `email`, `tags`, `condominio`, `endereco`, `cargo`, "
                        "`opted_out`, `custom:<key>`, or null to ignore the column. "
                        "Without it, headers are matched by name.",
                        "examples": ['{"Celular": "phone", "Bloco": "custom:bloco"}'],
                    },
                    "format": {"type": "string", "enum": ["csv", "xlsx"]},
                    "update_existing": {
                        "type": "boolean",
                        "default": True,
                        "description": "False: contacts whose phone exists are left alone.",
                    },
                    "list_id": {
                        "type": "string",
                        "format": "uuid",
                        "description": "Add every imported contact to this list.",
                    },
                },
            }
        }
    },
}


def _text_field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationProblem.for_field(f"body.{name}", "must be a text field, not a file")
    return value.strip() or None


def _mapping(form: FormData) -> dict[str, str | None] | None:
    text = _text_field(form, "mapping")
    if text is None:
        return None
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationProblem.for_field("body.mapping", f"not JSON: {error}") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(target, str | None) for target in mapping.values()
    ):
        raise ValidationProblem.for_field(
            "body.mapping", "must be a JSON object of header → target (a string, or null)"
        )
    return mapping


def _options(form: FormData) -> ImportOptions:
    update_existing = True
    text = _text_field(form, "update_existing")
    if text is not None:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValidationProblem.for_field("body.update_existing", "must be true or false")
        update_existing = text.lower() in ("true", "1")
    list_id = _text_field(form, "list_id")
    if list_id is not None:
        try:
            list_id = str(UUID(list_id))
        except ValueError:
            raise ValidationProblem.for_field("body.list_id", "must be a UUID") from None
    return ImportOptions(update_existing=update_existing, list_id=list_id)


def _format(form: FormData) -> ImportFormat | None:
    text = _text_field(form, "format")
    if text is None:
        return None
    try:
        return ImportFormat(text.lower())
    except ValueError:
        raise ValidationProblem.for_field("body.format", "must be csv or xlsx") from None


def _upload_problem(error: imports.UploadRejected) -> ProblemError:
    if error.status == status.HTTP_413_CONTENT_TOO_LARGE:
        return ContentTooLarge(error.message)
    return ValidationProblem.for_field(f"body.{error.field}", error.message)


def _csv_download(body: AsyncIterator[bytes], filename: str) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def imports_router() -> APIRouter:
    """The import and export endpoints (``/imports``, ``/exports``)."""
    api = APIRouter(
        tags=["imports and exports"],
        dependencies=[Depends(rate_limited(ApiLimitKind.CONTACT))],
        responses=problem_responses(401, 403, 429),
    )

    @api.post(
        "/imports",
        status_code=status.HTTP_202_ACCEPTED,
        responses=problem_responses(413, 422),
        openapi_extra={"requestBody": _UPLOAD_SCHEMA},
        summary="Upload a CSV or XLSX file to import",
    )
    async def create_import(
        request: Request, manager: Manager, ctx: Context, response: Response
    ) -> ImportJobOut:
        """Checks the file's header against the mapping (or header matching) and the
        company's custom fields, stores the file and queues the job; a bad mapping is a
        422 naming ``body.mapping.<header>`` (or ``body.mapping``), before any row is read.
        Follow the job at ``Location``."""
        max_bytes = ctx.settings.import_max_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD_BYTES:
            raise ContentTooLarge(f"the file is larger than {max_bytes} bytes")
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ValidationProblem.for_field("body.file", "a file is required")
            mapping = _mapping(form)
            options = _options(form)
            declared_format = _format(form)
            try:
                job = await imports.create_job(
                    ctx.uow,
                    company_id=manager.company_id,
                    created_by=manager.user_id,
                    upload=imports.Upload(
                        filename=upload.filename or "upload",
                        file=upload.file,
                        format=declared_format,
                    ),
                    mapping=mapping,
                    options=options,
                    max_bytes=max_bytes,
                )
            except ImportMappingError as error:
                raise validation_problem(error) from None
            except imports.UploadRejected as error:
                raise _upload_problem(error) from None
        response.headers["Location"] = f"/imports/{job.id}"
        return ImportJobOut.of(job)

    @api.get("/imports", responses=problem_responses(422), summary="List import jobs")
    async def list_imports(manager: Manager, ctx: Context, page: Paging) -> Page[ImportJobOut]:
        """Newest first."""
        jobs, next_cursor = await imports.list_jobs(
            ctx.uow, manager.company_id, cursor=page.cursor, limit=page.limit
        )
        return Page(items=[ImportJobOut.of(job) for job in jobs], next_cursor=next_cursor)

    @api.get(
        "/imports/{job_id}",
        responses=problem_responses(404, 422),
        summary="Get an import job and its progress",
    )
    async def get_import(job_id: UUID, manager: Manager, ctx: Context) -> ImportJobOut:
        return ImportJobOut.of(await imports.get_job(ctx.uow, manager.company_id, str(job_id)))

    @api.get(
        "/imports/{job_id}/errors",
        response_class=StreamingResponse,
        responses={
            200: {"description": "`row,column,code,reason`", "content": {"text/csv": {}}},
            **problem_responses(404, 422),
        },
        summary="Download the rows that were not imported (CSV)",
    )
    async def import_errors(
        job_id: UUID, manager: Manager, ctx: Context, delimiter: DelimiterQuery = CsvDelimiter.COMMA
    ) -> StreamingResponse:
        """One line per problem of a rejected row (``code``: ``required``, ``invalid``,
        ``too_long``, ``too_many``, ``unknown_field``, ``refused``) and one per row left
        out (``duplicate``: an earlier row had its phone; ``exists``: the job does not
        update existing contacts), in row order. Available while the job runs, growing
        batch by batch."""
        job = await imports.get_job(ctx.uow, manager.company_id, str(job_id))

        async def lines() -> AsyncIterator[list[str | int]]:
            async for line in imports.report_of(ctx.uow, job):
                yield [line.row, line.column, line.code, line.reason]

        body = exports.csv_stream(
            ("row", "column", "code", "reason"), lines(), delimiter=delimiter.char
        )
        return _csv_download(body, f"import-{job.id}-errors.csv")

    @api.get(
        "/exports/contacts",
        response_class=StreamingResponse,
        responses={
            200: {"description": "The contacts, as CSV", "content": {"text/csv": {}}},
            **problem_responses(404, 422),
        },
        summary="Download contacts as CSV",
    )
    async def export_contacts(
        manager: Manager,
        ctx: Context,
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=100,
                description="As in `GET /contacts`: a name prefix, or a phone prefix.",
            ),
        ] = None,
        tag: Annotated[str | None, Query(description="Has this tag (case ignored).")] = None,
        list_id: Annotated[UUID | None, Query(description="Is a member of this list.")] = None,
        opted_out: Annotated[bool | None, Query(description="Opted out, or not.")] = None,
        field: Annotated[
            list[str] | None,
            Query(description="`<field>:<value>`, repeatable, as in `GET /contacts`."),
        ] = None,
        delimiter: DelimiterQuery = CsvDelimiter.COMMA,
    ) -> StreamingResponse:
        """Live contacts matching every filter given, oldest first, streamed: the file's
        columns are ``id``, the contact fields, ``custom:<key>`` per custom field, and
        the times; it imports back as it is. An unknown ``list_id`` is a 404."""
        async with ctx.uow() as uow:
            definitions = await load_definitions(uow, manager.company_id)
        custom, text = field_filters(field or [], definitions)
        search = contact_search(q, ctx.settings.default_region) if q else None
        criteria = ContactFilter(
            name_prefix=search.name_prefix if search else None,
            phone_prefixes=search.phone_prefixes if search else (),
            tag=tag,
            list_id=None if list_id is None else str(list_id),
            opted_out=opted_out,
            field_values=custom,
            text_fields=text,
        )
        export = await exports.open_export(ctx.uow, manager.company_id, criteria)
        body = exports.csv_stream(export.header, export.rows, delimiter=delimiter.char)
        stamp = ctx.clock().strftime("%Y%m%d-%H%M%S")
        return _csv_download(body, f"contacts-{stamp}.csv")

    return api
