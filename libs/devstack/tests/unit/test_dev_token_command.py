import time

import jwt
import pytest
from esquadrao_devstack.cli import app
from typer.testing import CliRunner

pytestmark = pytest.mark.unit


def test_mints_a_token_with_the_claims_services_verify() -> None:
    before = int(time.time())
    result = CliRunner().invoke(
        app,
        ["token", "--company", "acme", "--user", "ana", "--role", "agent"],
        env={"JWT_SECRET": "a-test-secret-of-at-least-32-bytes"},
    )

    assert result.exit_code == 0, result.output
    claims = jwt.decode(
        result.output.strip(),
        "a-test-secret-of-at-least-32-bytes",
        algorithms=["HS256"],
        audience="esquadrao",
        issuer="esquadrao",
    )
    assert claims["sub"] == "ana"
    assert claims["company_id"] == "acme"
    assert claims["role"] == "agent"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 12 * 3600


def test_secret_and_ttl_options() -> None:
    result = CliRunner().invoke(
        app,
        [
            "token",
            "--company",
            "c",
            "--user",
            "u",
            "--secret",
            "another-test-secret-32-bytes-long",
            "--ttl",
            "30m",
        ],
        env={"JWT_SECRET": "not-this-one"},
    )

    claims = jwt.decode(
        result.output.strip(),
        "another-test-secret-32-bytes-long",
        algorithms=["HS256"],
        audience="esquadrao",
    )
    assert claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == 1800


def test_rejects_an_unknown_role_and_a_bad_ttl() -> None:
    runner = CliRunner()

    assert (
        runner.invoke(app, ["token", "--company", "c", "--user", "u", "--role", "root"]).exit_code
        != 0
    )
    assert (
        runner.invoke(app, ["token", "--company", "c", "--user", "u", "--ttl", "soon"]).exit_code
        != 0
    )
