"""The command line refuses bad knobs before it serves anything."""

from __future__ import annotations

import pytest
from esquadrao_wasim.cli import app
from typer.testing import CliRunner

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("knobs", ["{not json", "[1, 2]"])
def test_knobs_must_be_a_json_object(knobs: str) -> None:
    result = CliRunner().invoke(app, ["serve", "--knobs", knobs])

    assert result.exit_code == 2
    assert "--knobs" in result.output


def test_help_names_the_serve_command() -> None:
    result = CliRunner().invoke(app, ["--help"])

    assert result.exit_code == 0
    assert "serve" in result.output
