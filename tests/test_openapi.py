"""docs/openapi.yaml is the HTTP API's contract: a valid OpenAPI 3.1 document that names
every HTTP route the app serves, with its methods, and nothing the app does not serve;
and the API's errors are JSON even where no route matched."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, http_routes
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from palimpsest.app import create_app
from palimpsest.settings import Settings

SPEC = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
#: served, but not part of the API: the page (HTML)
NOT_API = {("GET", "/")}
METHODS = {"get", "put", "post", "delete", "patch"}


def spec() -> dict[str, Any]:
    document, _ = read_from_filename(str(SPEC))
    return dict(document)


def app_routes(settings: Settings) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route, path parameters without their converters."""
    routes = http_routes(create_app(settings))
    return {(m, re.sub(r"\{(\w+):\w+\}", r"{\1}", path)) for m, path in routes} - NOT_API


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec()["paths"].items()
        for method in item
        if method in METHODS
    }


def test_the_file_is_valid_openapi() -> None:
    validate(spec())  # raises on anything OpenAPI 3.1 does not allow


@pytest.mark.parametrize("auth", ["open", "jwt"])
def test_every_route_is_documented_and_nothing_else(tmp_path: Path, auth: str) -> None:
    settings = Settings(db=str(tmp_path / "p.db"))
    if auth == "jwt":
        settings.jwt_secret = "a-test-secret-of-at-least-thirty-two-bytes"
    served, written = app_routes(settings), documented()
    assert not served - written, f"routes missing from docs/openapi.yaml: {served - written}"
    assert not written - served, f"docs/openapi.yaml names routes nobody serves: {written - served}"


async def test_no_route_under_api_is_a_json_error(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/api/docs/notes/content")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json", r.text
        assert r.json() == {"error": "NotFound", "detail": "no route GET /api/docs/notes/content"}

        r = await http.put("/api/docs/notes/undo")
        assert r.status_code == 405 and r.headers["allow"] == "POST", r.headers
        assert r.json() == {
            "error": "MethodNotAllowed",
            "detail": "/api/docs/notes/undo does not take PUT; it takes POST",
        }
        # the API's own not-found is the same shape
        r = await http.get("/api/docs/never-written/events")
        assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text

        # outside the API, Starlette's plain text stays
        r = await http.get("/no/such/page")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain")
        assert r.text == "Not Found"
        r = await http.get("/static/no-such-file.js")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain")
