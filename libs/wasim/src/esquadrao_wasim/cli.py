"""``esquadrao-wasim``: run the WhatsApp simulator (also ``python -m esquadrao_wasim``)."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from esquadrao_wasim.app import DataDirectoryBusyError
from esquadrao_wasim.server import serve as serve_simulator

#: The port of a simulator started by hand (the local stack picks a free one).
DEFAULT_PORT = 8790

app = typer.Typer(
    name="esquadrao-wasim",
    help="WhatsApp simulator: Cloud API, WhatsApp-Web-like sessions, witness of every send.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """WhatsApp simulator."""


def raise_open_files_limit() -> int:
    """Raise this process's open-files limit to its hard limit (one descriptor per
    session connection); return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def _knobs_option(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        knobs = json.loads(text)
    except ValueError as error:
        raise typer.BadParameter(f"not JSON: {error}", param_hint="--knobs") from None
    if not isinstance(knobs, dict):
        raise typer.BadParameter("a JSON object of knobs", param_hint="--knobs")
    return knobs


@app.command()
def serve(
    data_dir: Annotated[
        Path, typer.Option(help="Where the witness database lives (kept across runs).")
    ] = Path(".run/wasim/data"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = DEFAULT_PORT,
    address_file: Annotated[
        Path | None, typer.Option(help="Write host:port here once accepting connections.")
    ] = None,
    knobs: Annotated[
        str | None,
        typer.Option(help="Global knobs to apply at start: JSON, or @file (e.g. '{\"seed\": 1}')."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Serve the Cloud API, the session protocol and the /_sim control API."""
    changes = _knobs_option(knobs)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    raise_open_files_limit()
    try:
        asyncio.run(
            serve_simulator(
                data_dir,
                host=host,
                port=port,
                address_file=address_file,
                knobs=changes,
                log_level=log_level,
            )
        )
    except (DataDirectoryBusyError, OSError, ValidationError) as error:
        typer.echo(f"esquadrao-wasim: {error}", err=True)
        raise typer.Exit(1) from None
