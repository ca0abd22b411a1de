"""HTTP RED metrics labelled by route template, and the /metrics endpoint."""

from __future__ import annotations

import uuid

import httpx
import pytest
from esquadrao_common.metrics import UNMATCHED_ROUTE, install_http_metrics, metrics_router
from fastapi import APIRouter, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

pytestmark = pytest.mark.unit

REQUESTS = "esquadrao_http_requests_total"
DURATION_COUNT = "esquadrao_http_request_duration_seconds_count"


def make_app() -> FastAPI:
    """An app shaped like a service's: versioned routers with prefixes, /metrics, a mount."""
    contacts = APIRouter(prefix="/contacts")

    @contacts.get("/{contact_id}")
    async def get_contact(contact_id: str) -> dict[str, str]:
        return {"id": contact_id}

    @contacts.post("/{contact_id}/fail")
    async def fail(contact_id: str) -> None:
        raise RuntimeError(f"handler failed for {contact_id}")

    v1 = APIRouter(prefix="/v1")
    v1.include_router(contacts)

    admin = FastAPI()

    @admin.get("/jobs/{job_id}")
    async def get_job(job_id: int) -> dict[str, int]:
        return {"id": job_id}

    app = FastAPI()
    app.include_router(v1)
    app.include_router(metrics_router())
    app.mount("/admin", admin)
    install_http_metrics(app)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def requests_count(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value(REQUESTS, labels) or 0.0


def duration_count(method: str, route: str) -> float:
    return REGISTRY.get_sample_value(DURATION_COUNT, {"method": method, "route": route}) or 0.0


async def test_requests_are_counted_and_timed_under_their_route_template() -> None:
    route = "/v1/contacts/{contact_id}"
    before = requests_count("GET", route, "200"), duration_count("GET", route)
    contact_id = uuid.uuid4().hex

    async with client(make_app()) as http:
        response = await http.get(f"/v1/contacts/{contact_id}")

    assert response.status_code == 200
    assert requests_count("GET", route, "200") == before[0] + 1
    assert duration_count("GET", route) == before[1] + 1
    assert requests_count("GET", f"/v1/contacts/{contact_id}", "200") == 0


async def test_a_mounted_app_route_includes_the_mount_path() -> None:
    route = "/admin/jobs/{job_id}"
    before = requests_count("GET", route, "200")

    async with client(make_app()) as http:
        response = await http.get("/admin/jobs/42")

    assert response.status_code == 200
    assert requests_count("GET", route, "200") == before + 1


async def test_routes_fastapi_adds_itself_are_labelled_by_their_path() -> None:
    before = requests_count("GET", "/openapi.json", "200")

    async with client(make_app()) as http:
        response = await http.get("/openapi.json")

    assert response.status_code == 200
    assert requests_count("GET", "/openapi.json", "200") == before + 1


async def test_unknown_paths_share_one_unmatched_label() -> None:
    before = requests_count("GET", UNMATCHED_ROUTE, "404")

    async with client(make_app()) as http:
        for _ in range(3):
            assert (await http.get(f"/no/such/{uuid.uuid4().hex}")).status_code == 404

    assert requests_count("GET", UNMATCHED_ROUTE, "404") == before + 3


async def test_a_handler_exception_counts_as_500() -> None:
    route = "/v1/contacts/{contact_id}/fail"
    before = requests_count("POST", route, "500")

    async with client(make_app()) as http:
        response = await http.post("/v1/contacts/c-1/fail")

    assert response.status_code == 500
    assert requests_count("POST", route, "500") == before + 1


async def test_wrong_and_unusual_methods_keep_bounded_labels() -> None:
    route = "/v1/contacts/{contact_id}"
    before_delete = requests_count("DELETE", route, "405")
    before_other = requests_count("OTHER", route, "405")

    async with client(make_app()) as http:
        assert (await http.delete("/v1/contacts/c-1")).status_code == 405
        assert (await http.request("BREW", "/v1/contacts/c-1")).status_code == 405

    assert requests_count("DELETE", route, "405") == before_delete + 1
    assert requests_count("OTHER", route, "405") == before_other + 1
    assert requests_count("BREW", route, "405") == 0


async def test_metrics_endpoint_serves_the_text_exposition() -> None:
    async with client(make_app()) as http:
        await http.get("/v1/contacts/c-1")
        response = await http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "# TYPE esquadrao_http_requests_total counter" in response.text
    assert "# TYPE esquadrao_http_request_duration_seconds histogram" in response.text
    assert (
        'esquadrao_http_requests_total{method="GET",route="/v1/contacts/{contact_id}",'
        'status="200"}' in response.text
    )


async def test_several_apps_in_one_process_share_the_metrics() -> None:
    route = "/v1/contacts/{contact_id}"
    before = requests_count("GET", route, "200")
    first, second = make_app(), make_app()

    async with client(first) as http_first, client(second) as http_second:
        await http_first.get("/v1/contacts/a")
        await http_second.get("/v1/contacts/b")

    assert requests_count("GET", route, "200") == before + 2


async def test_installing_twice_counts_each_request_once() -> None:
    app = make_app()
    install_http_metrics(app)
    route = "/v1/contacts/{contact_id}"
    before = requests_count("GET", route, "200")

    async with client(app) as http:
        await http.get("/v1/contacts/c-1")

    assert requests_count("GET", route, "200") == before + 1
