"""/openapi.json describes the whole API accurately: every route is in it, and schemathesis,
generating requests from it, finds no 5xx and no answer that violates the document."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from schemathesis.checks import not_a_server_error
from starlette.routing import Route
from starlette.testclient import TestClient

from app.auth import create_key
from app.main import create_app
from app.web.openapi import document
from tests.conftest import make_settings
from tests.fake_twilio import FakeTwilio

_KEY: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Any]:
    """One app on a fresh SQLite file, with a key for acme and a few rows to read."""
    path = tmp_path_factory.mktemp("openapi") / "optline.db"
    shutil.copy(sqlite_template, path)
    with FakeTwilio() as fake:
        app = create_app(make_settings(f"sqlite:///{path}", fake))
        with TestClient(app) as client:
            state = app.state.optline
            _KEY["acme"] = state.writer.call(lambda c, now: create_key(c, now, brand="acme", name="schemathesis"))[1]
            client.post("/v1/profiles", json={"externalId": "crm-1", "phoneNumber": "+14155550123"},
                        headers={"x-api-key": _KEY["acme"]})
            yield app


# The document is built from the models alone, so the operations are known at collection time.
# (schemathesis' own pytest plugin does not run under pytest 9 yet: hypothesis drives it here.)
SCHEMA = schemathesis.openapi.from_dict(document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_api_conforms_to_its_document(api_app: Any, operation: Any) -> None:
    SCHEMA.app = api_app

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        case.call_and_validate(headers={"x-api-key": _KEY["acme"]}, checks=CHECKS, app=api_app)

    check()


def test_every_route_is_documented() -> None:
    documented = {(path, method.upper()) for path, methods in document()["paths"].items() for method in methods}
    from app.web import api_profiles, api_subscriptions

    routes: list[Route] = [*api_profiles.routes, *api_subscriptions.routes]
    served = {(r.path.replace(":path", ""), m) for r in routes for m in (r.methods or set()) if m != "HEAD"}
    served |= {("/v1/subscriptions", "GET"), ("/v1/consent-events", "GET"), ("/webhooks/twilio", "POST"),
               ("/webhooks/twilio/status", "POST")}
    assert served - documented == set()


def test_docs_page_renders(api_app: Any) -> None:
    with TestClient(api_app) as client:
        page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/subscriptions/opt-in" in page.text and "consentProof" in page.text


def test_every_dialect_route_is_documented_under_its_vendor() -> None:
    from app import dialects

    doc = document()["paths"]
    for route in dialects.routes():
        vendor = route.path.split("/")[2]
        for method in route.methods or set():
            if method == "HEAD":
                continue
            op = doc[route.path.replace(":path", "")][method.lower()]
            assert op["tags"] == [vendor], (route.path, method)
            assert op["security"], (route.path, method)
