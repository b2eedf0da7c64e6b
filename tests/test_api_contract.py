"""The HTTP API against its contract, docs/openapi.yaml, with generated requests.

Schemathesis reads the OpenAPI file and sends requests to a real server on a loopback
port, once on SQLite and once on PostgreSQL: the file's examples (the document
``notes``, its tag ``v1``), requests at the edges of each parameter's schema, and random
ones, valid and invalid (bad document names, numbers out of range, odd bytes). Every
answer is checked against the file: no 5xx, only documented status codes, a JSON body
where JSON is promised, the documented schema, a request the schema allows not refused
and one it forbids not accepted.

Three callers: an admin, a reader (whose writes must be refused with 403) and nobody
(401 on every route that needs a token). The two streaming routes are left out: their
answers never end (tests/test_changefeed_sse.py covers them).

Generation is derandomized, so a failure reproduces on the next run; the report names
the request as a curl command.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from scaleout import fresh_schema
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from serverproc import REPO_ROOT, ServerProcess

from palimpsest.auth.tokens import mint

pytestmark = pytest.mark.slow

SECRET = "contract-" + "k" * 40
OPENAPI = REPO_ROOT / "docs" / "openapi.yaml"
#: requests per operation and caller (the examples and edge cases come on top)
EXAMPLES = 25

schema = schemathesis.openapi.from_path(OPENAPI).exclude(path_regex="/stream$")


class Caller:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with the documents the file's examples name: ``notes`` (three events,
    the tag ``v1`` at seq 1) and ``draft`` (the example of DELETE /api/docs/{doc}); on
    SQLite, and on PostgreSQL (a schema of its own), whose driver refuses what SQLite
    takes (a number past a bigint reached it once)."""
    work = tmp_path_factory.mktemp("contract")
    args = ["--jwt-secret", SECRET]
    # the generated requests are a flood from one address by design: the write rate
    # limit (429, documented on every write) would answer most of them instead of the
    # routes; tests/test_hostile.py holds the limit itself
    env = {"PALIMPSEST_MAX_HTTP_WRITES_PER_SECOND": "0"}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            schema_cm = fresh_schema()
            args += ["--store", asyncio.run(schema_cm.__aenter__())]
            stack.callback(lambda: asyncio.run(schema_cm.__aexit__(None, None, None)))
        srv = stack.enter_context(ServerProcess(work, extra_args=args, env=env))
        admin = mint(SECRET, "ann", "admin", ["*"])
        for doc, texts in (("notes", ["hello", "hello world", "hello, world"]), ("draft", ["x"])):
            for text in texts:
                _edit(srv.http_url, admin, doc, text, work)
        r = httpx.post(
            f"{srv.http_url}/api/docs/notes/tags",
            json={"name": "v1", "seq": 1},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 201, r.text
        _EXAMPLES_ON_START[srv.http_url] = _examples_answers(srv.http_url, admin)
        yield srv.http_url


#: each live server's answers to the requests its file's examples name, taken as soon as
#: it was seeded: the generated tests delete documents, and run in any order
_EXAMPLES_ON_START: dict[str, list[tuple[str, int, str]]] = {}


def _examples_answers(url: str, admin: str) -> list[tuple[str, int, str]]:
    spec = yaml.safe_load(OPENAPI.read_text())
    params = spec["components"]["parameters"]
    doc, ref = params["doc"]["example"], params["ref"]["example"]
    tag = spec["components"]["schemas"]["TagName"]["example"]
    answers = []
    for path in (
        f"/api/docs/{doc}/versions/{ref}",
        f"/api/docs/{doc}/versions/{tag}",
        f"/api/docs/{params['deletedDoc']['example']}/events",
    ):
        r = httpx.get(url + path, headers={"Authorization": f"Bearer {admin}"})
        answers.append((path, r.status_code, r.text))
    return answers


def _edit(url: str, token: str, doc: str, text: str, work: Path) -> None:
    f = work / "text.txt"
    f.write_text(text)
    subprocess.run(
        [sys.executable, "-m", "palimpsest", "edit", doc, str(f), "--url", url, "--token", token],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _check(case: Any, caller: Caller) -> Any:
    response = case.call(base_url=caller.url, headers=caller.headers, timeout=30)
    excluded = []
    if _cross_field(case, response) or _deleted(response) or _not_an_update(response):
        excluded.append(positive_data_acceptance)
    if _empty_means_absent(case, caller, response):
        # `?until=` is not a date-time, so the schema calls it invalid; the file's rule
        # is that an empty value is none, and _empty_means_absent checked just that
        excluded.append(negative_data_rejection)
    case.validate_response(response, headers=caller.headers, excluded_checks=excluded)
    return response


def _empty_means_absent(case: Any, caller: Caller, response: Any) -> bool:
    """True when the request had empty query values, was accepted, and the server
    answers the same request without them identically (status and body)."""
    query = case.query or {}
    # (an empty object or list, which schemathesis draws for an integer, is sent as
    # `?after=` too)
    empty = [k for k, v in query.items() if v in ("", {}, [])]
    if not empty or response.status_code >= 400 or case.method != "GET":
        return False
    rest = {k: v for k, v in query.items() if k not in empty}
    again = httpx.get(
        caller.url + case.formatted_path, params=rest, headers=caller.headers, timeout=30
    )
    assert (again.status_code, _steady(again)) == (response.status_code, _steady(response)), (
        f"?{'=&'.join(empty)}= answered otherwise than leaving {empty} out"
    )
    return True


def _steady(response: Any) -> Any:
    """The body without what changes between two requests by itself: whether a listed
    document is loaded now (rooms load and unload as the other requests come and go)."""
    if (
        httpx.URL(str(response.request.url)).path.endswith("/api/docs")
        and response.status_code == 200
    ):
        body = response.json()
        for d in body["docs"]:
            d.pop("loaded")
        return body
    return response.content


#: the refusals the schema cannot say (two parameters each valid, together not), as
#: docs/openapi.yaml describes them: (the error's detail, the two parameters)
CROSS_FIELD = (
    (re.compile(r"\?since= is after \?until="), ("since", "until")),
    (re.compile(r"give a seq \(or tag\) or \?at=, not both"), ("seq", "at")),
    (re.compile(r"from \(\d+\) is after to \(\d+\)"), ("from", "to")),
    (re.compile(r'"until" \(\d+\) is before "since" \(\d+\)'), ("since", "until")),
)


def _deleted(response: Any) -> bool:
    """A valid request about a document a generated DELETE removed: 410, as the file
    says (schemathesis takes a 404 for such an answer, not a 410)."""
    if response.status_code != 410:
        return False
    return bool(response.json().get("error") == "Deleted")


def _not_an_update(response: Any) -> bool:
    """Bytes the schema allows (any binary) that are not a Yjs update the document can
    take (POST /api/docs/{doc}/updates): 400 `UpdateRejected` or `UpdateGap`, as the file
    says; no schema can say what a Yjs update is."""
    if response.status_code != 400:
        return False
    return response.json().get("error") in ("UpdateRejected", "UpdateGap")


def _cross_field(case: Any, response: Any) -> bool:
    if response.status_code != 400:
        return False
    # (in the query, or in a JSON body: POST /revert's since and until)
    query = {**(case.body if isinstance(case.body, dict) else {}), **(case.query or {})}
    detail = str(response.json().get("detail"))
    return any(
        pattern.fullmatch(detail) and all(query.get(p) not in (None, "") for p in pair)
        for pattern, pair in CROSS_FIELD
    )


def test_the_examples_name_what_the_server_holds(live: str) -> None:
    """The generated requests are only as good as the data they reach: the file's
    examples must name a document, a version and a tag the server holds, or every
    example request ends in a 404. Asked when the server was seeded, before any
    generated request (some delete), whatever order the tests run in."""
    answers = _EXAMPLES_ON_START[live]
    assert len(answers) == 3
    for path, status, text in answers:
        assert status == 200, (path, text)


#: what is refused before the token is looked at: a bad document name (400), a body too
#: large (413) or not JSON (415)
REFUSED_FIRST = (400, 413, 415)

CONTRACT = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@CONTRACT
def test_as_admin(case: Any, live: str) -> None:
    _check(case, Caller(live, mint(SECRET, "ann", "admin", ["*"])))


@schema.parametrize()
@CONTRACT
def test_as_reader(case: Any, live: str) -> None:
    response = _check(case, Caller(live, mint(SECRET, "rob", "read", ["*"])))
    if _own_method(case) and case.method != "GET" and not _open_route(case):
        assert response.status_code in (403, *REFUSED_FIRST), (case.path, response.text)


@schema.parametrize()
@CONTRACT
def test_without_a_token(case: Any, live: str) -> None:
    response = _check(case, Caller(live, None))
    if _own_method(case) and not _open_route(case):
        assert response.status_code in (401, *REFUSED_FIRST), (case.path, response.text)


def _own_method(case: Any) -> bool:
    """Not one of the methods a route does not take, which the coverage phase sends too."""
    return bool(case.method.upper() == case.operation.method.upper())


def _open_route(case: Any) -> bool:
    """The operations routes, which need no token (`security: []`)."""
    return case.operation.definition.raw.get("security") == []
