"""``python -m contacts import FILE``: upload a file to the import API and follow the job.

The command is a client of the REST API (it needs no database access): it uploads the
file to ``POST /imports``, then, with ``--wait`` (the default), polls ``GET /imports/{id}``
and shows a live progress bar until the job ends, and prints the counts and where the
report of the rows that were not imported can be downloaded (or saves it with
``--errors-out``). Exit status: 0 when the job completed, 1 when it failed, 2 when the API
refused the upload or could not be reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from contacts.config import HTTP_PORT

DEFAULT_API: Final = f"http://127.0.0.1:{HTTP_PORT}"
#: Statuses of a job that will not change any more.
FINISHED: Final = frozenset({"completed", "failed"})

console = Console()


def _problem_text(response: httpx.Response) -> str:
    """What a problem document says: its detail and each field error."""
    try:
        problem = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    lines = [f"HTTP {response.status_code}: {problem.get('detail') or problem.get('title')}"]
    lines.extend(
        f"  {error.get('field')}: {error.get('message')}" for error in problem.get("errors", [])
    )
    return "\n".join(lines)


def upload(
    client: httpx.Client,
    file: Path,
    *,
    mapping: str | None,
    list_id: str | None,
    update_existing: bool,
    format: str | None,
) -> dict[str, Any]:
    """``POST /imports``; the queued job. Raises typer.Exit(2) when the API refuses it."""
    data = {"update_existing": "true" if update_existing else "false"}
    if mapping is not None:
        data["mapping"] = mapping
    if list_id is not None:
        data["list_id"] = list_id
    if format is not None:
        data["format"] = format
    with file.open("rb") as stream:
        response = client.post("/imports", files={"file": (file.name, stream)}, data=data)
    if response.status_code != httpx.codes.ACCEPTED:
        console.print(f"[red]upload refused[/red]\n{_problem_text(response)}")
        raise typer.Exit(2)
    job: dict[str, Any] = response.json()
    return job


def follow(
    client: httpx.Client,
    job: Mapping[str, Any],
    *,
    poll_interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the job until it ends, with a live progress bar; the finished job."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    current = dict(job)
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{current['filename']} ({current['status']})", total=None)
        while True:
            progress.update(
                task,
                description=f"{current['filename']} ({current['status']})",
                total=current.get("total_rows") or None,
                completed=current.get("processed", 0),
            )
            if current["status"] in FINISHED:
                return current
            sleep(poll_interval)
            response = client.get(f"/imports/{current['id']}")
            if response.status_code != httpx.codes.OK:
                console.print(f"[red]cannot follow the job[/red]\n{_problem_text(response)}")
                raise typer.Exit(2)
            current = response.json()


def summary(job: Mapping[str, Any]) -> Table:
    """The counts of a job, as a table."""
    table = Table(title=f"import {job['status']}", title_justify="left")
    table.add_column("rows")
    table.add_column("count", justify="right")
    for name in ("processed", "created", "updated", "skipped", "unchanged", "errors"):
        label = "  of which unchanged" if name == "unchanged" else name
        table.add_row(label, f"{job.get(name, 0):,}")
    return table


def save_report(client: httpx.Client, job: Mapping[str, Any], target: Path) -> None:
    """Download the job's report of rows not imported to ``target``, streaming."""
    with client.stream("GET", str(job["errors_url"])) as response, target.open("wb") as out:
        if response.status_code != httpx.codes.OK:
            response.read()
            console.print(f"[red]cannot download the report[/red]\n{_problem_text(response)}")
            raise typer.Exit(2)
        for chunk in response.iter_bytes():
            out.write(chunk)


def run_import(
    client: httpx.Client,
    file: Path,
    *,
    mapping: str | None = None,
    list_id: str | None = None,
    update_existing: bool = True,
    format: str | None = None,
    wait: bool = True,
    errors_out: Path | None = None,
    poll_interval: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Upload, follow and report (see the module docstring); the exit status."""
    job = upload(
        client,
        file,
        mapping=mapping,
        list_id=list_id,
        update_existing=update_existing,
        format=format,
    )
    console.print(f"queued import job [bold]{job['id']}[/bold]")
    if not wait:
        console.print(f"follow it at {client.base_url}imports/{job['id']}")
        return 0
    job = follow(client, job, poll_interval=poll_interval, sleep=sleep)
    console.print(summary(job))
    if job["status"] == "failed":
        console.print(f"[red]the import failed:[/red] {job.get('error')}")
    if job.get("errors", 0) or job.get("skipped", 0) > job.get("unchanged", 0):
        if errors_out is not None:
            save_report(client, job, errors_out)
            console.print(f"rows not imported: saved to {errors_out}")
        else:
            console.print(f"rows not imported: GET {client.base_url}{job['errors_url'][1:]}")
    return 0 if job["status"] == "completed" else 1


def import_cli(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="A .csv or .xlsx."),
    ],
    token: Annotated[
        str, typer.Option(envvar="ESQUADRAO_TOKEN", help="A bearer token (JWT) of the company.")
    ],
    api: Annotated[
        str, typer.Option(envvar="CONTACTS_API", help="Base URL of the contacts API.")
    ] = DEFAULT_API,
    mapping: Annotated[
        str | None,
        typer.Option(help='JSON: header → target, e.g. \'{"Celular": "phone"}\'.'),
    ] = None,
    list_id: Annotated[
        str | None, typer.Option(help="Add the imported contacts to this list.")
    ] = None,
    update_existing: Annotated[
        bool,
        typer.Option(
            "--update-existing/--keep-existing",
            help="Update contacts whose phone exists, or leave them alone.",
        ),
    ] = True,
    format: Annotated[
        str | None, typer.Option(help="csv or xlsx (default: from the file name).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the job until it ends.")
    ] = True,
    errors_out: Annotated[
        Path | None, typer.Option(help="Save the report of rows not imported here (CSV).")
    ] = None,
    poll_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 0.5,
) -> None:
    """Import contacts from a CSV or XLSX file through the API, with a live progress bar."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=api, headers=headers, timeout=60.0) as client:
            status = run_import(
                client,
                file,
                mapping=mapping,
                list_id=list_id,
                update_existing=update_existing,
                format=format,
                wait=wait,
                errors_out=errors_out,
                poll_interval=poll_interval,
            )
    except httpx.HTTPError as error:
        console.print(f"[red]cannot reach the contacts API at {api}:[/red] {error}")
        raise typer.Exit(2) from None
    raise typer.Exit(status)
