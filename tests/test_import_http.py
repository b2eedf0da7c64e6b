"""`POST /api/docs/{doc}/updates`: a Yjs update imported into a running server, through
the document's live room (durable first, then sent to its clients), by an admin. Its
client ids stay free for the tabs that wrote them elsewhere, as with `palimpsest import`
(tests/test_import_ids.py). Also the Python client's `History.import_update` and
`palimpsest import --url`, which use it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually, run_server
from pycrdt import Doc, Text
from scaleout import cluster, fanout_url, fresh_schema, open_store
from test_admin_cli import cli
from test_import_ids import _append, _forged_write_refused, _old_server
from yclient import connect

from palimpsest.auth.tokens import mint
from palimpsest.client import History
from palimpsest.settings import Settings

DOC = "moved"
BINARY = {"content-type": "application/octet-stream"}


def _post(
    c: httpx.AsyncClient, body: bytes, headers: dict[str, str] | None = None, **params: str
) -> Any:
    return c.post(
        f"/api/docs/{DOC}/updates",
        content=body,
        headers=BINARY if headers is None else headers,
        params={"user": "ops", **params},
    )


async def _text(server: RunningServer) -> str:
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.get(f"/api/docs/{DOC}/versions/head", params={"user": "ops"})
    r.raise_for_status()
    return str(r.json()["roots"]["content"]["value"])


async def test_an_update_imported_into_a_running_server_reaches_its_clients(
    server: RunningServer,
) -> None:
    """Carol has the document open on the new server. The document Alice and Bob wrote
    on the old one is imported over HTTP: Carol gets it at once, it is one event of kind
    import by the caller, and Alice's and Bob's tabs, still open, reconnect with their
    offline edits and type on, refused nothing. Who wrote under an id again owns it."""
    carol: Doc[Any] = Doc()
    alice, bob = _old_server("Alice. ", "Bob. ")
    async with (
        connect(server.ws_url, DOC, "carol", ydoc=carol) as c,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        c.insert(0, "Carol. ")
        await eventually(lambda: _has(server, "Carol. "), what="carol's edit")
        r = await _post(http, alice.get_update(), source="hocuspocus:moved")
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["clients"] == 2 and answer["seq"] == 2
        await eventually(lambda: "Alice. Bob. " in c.content, what="carol got the import")
        [_, ev] = await server.backend.store.read(DOC)
        assert (ev.kind, ev.actor, ev.seq) == ("import", "ops", answer["seq"])
        assert ev.meta["source"] == "hocuspocus:moved" and ev.meta["format"] == "update"
        assert ev.meta["relays"] == sorted([alice.client_id, bob.client_id])

        # the same again: nothing new, no event
        r = await _post(http, alice.get_update())
        assert r.status_code == 200 and r.json()["seq"] is None
        assert await server.backend.store.head(DOC) == 2

        _append(alice, "[alice offline] ")
        _append(bob, "[bob offline] ")
        async with (
            connect(server.ws_url, DOC, "alice", ydoc=alice) as a,
            connect(server.ws_url, DOC, "bob", ydoc=bob) as b,
        ):
            for part in ("[alice offline]", "[bob offline]"):
                await eventually(lambda p=part: p in c.content, what=part)
            a.insert(len(a.content), "Alice here.")
            await eventually(lambda: "Alice here." in c.content, what="alice typed on")
            b.insert(0, "Bob here. ")
            await eventually(lambda: "Bob here." in c.content, what="bob typed on")
        for x in (a, b):
            assert x.close_code in (None, 1000), x.close_reason
        # Alice's id is hers now: Carol cannot write under it
        await _forged_write_refused(server.ws_url, alice, "carol")
    text = await _text(server)
    for part in ("Carol. ", "Alice. Bob. ", "[alice offline]", "[bob offline]", "Alice here."):
        assert part in text
    assert "Carol as Alice" not in text


async def _has(server: RunningServer, part: str) -> bool:
    return part in await _text(server)


async def test_an_update_that_cannot_be_taken_is_refused_with_a_reason(
    server: RunningServer,
) -> None:
    """Not an update, an update with a gap, an update of items the document lacks, the
    wrong media type, no body: refused with the reason, nothing logged."""
    ahead: Doc[Any] = Doc()
    text = ahead.get("content", type=Text)
    text.insert(0, "first ")
    before = ahead.get_state()
    text.insert(6, "second")
    gap = ahead.get_update(before)  # clocks 6.., the document has none of that client
    async with httpx.AsyncClient(base_url=server.url) as http:
        for body, headers, status, says in [
            (b"\xff\xfe not an update", BINARY, 400, "not a Yjs v1 update"),
            (gap, BINARY, 400, "start at clock 6, the document has 0: import"),
            (b"", BINARY, 400, "must be a Yjs v1 update"),
            (ahead.get_update(), {"content-type": "application/json"}, 415, "octet-stream"),
            (ahead.get_update(), {}, 415, "octet-stream"),
        ]:
            r = await _post(http, body, headers)
            assert r.status_code == status, (body[:20], r.text)
            assert says in r.json()["detail"], r.text
        assert await server.backend.store.head(DOC) == 0
        r = await _post(http, ahead.get_update())
        assert r.status_code == 200 and r.json()["seq"] == 1
        # JSON routes still take JSON only
        r = await http.put(
            f"/api/docs/{DOC}/text", content=b'{"text": "x"}', headers=BINARY,
            params={"user": "ops"},
        )  # fmt: skip
        assert r.status_code == 415 and "application/json" in r.json()["detail"]


async def test_only_an_admin_imports(tmp_path: Path, settings: Settings) -> None:
    """An import writes under foreign client ids: a writer's token is refused (403), an
    admin's is taken, and named as the actor."""
    settings.jwt_secret = "import-http-test-secret-32-bytes-long!"
    update = _old_server("Old text.")[0].get_update()
    async with run_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for user, role, status in [("wes", "write", 403), ("ada", "admin", 200)]:
                token = mint(settings.jwt_secret, user, role, ["*"], 60)
                r = await http.post(
                    f"/api/docs/{DOC}/updates", content=update,
                    headers={**BINARY, "authorization": f"Bearer {token}"},
                )  # fmt: skip
                assert r.status_code == status, r.text
            r = await http.post(f"/api/docs/{DOC}/updates", content=update, headers=BINARY)
            assert r.status_code == 401
        [ev] = await server.backend.store.read(DOC)
        assert (ev.kind, ev.actor) == ("import", "ada")


async def test_the_client_and_the_command_import_through_a_running_server(
    server: RunningServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`History.import_update` and `palimpsest import --url` reach a connected client."""
    old: Doc[Any] = Doc()
    _append(old, "One. ")
    first, before = old.get_update(), old.get_state()
    _append(old, "Two.")
    second = old.get_update(before)
    async with connect(server.ws_url, DOC, "carol") as c:
        async with History(server.url, user="ops") as h:
            assert await h.import_update(DOC, first, source="script") == 1
            await eventually(lambda: c.content == "One. ", what="the client's import")
        f = tmp_path / "two.yjs"
        f.write_bytes(second)
        r = await cli(capfd, "import", DOC, str(f), "--url", server.url, "--user", "mig")
        assert r.code == 0, r
        assert f"{DOC}@2" in r.out
        await eventually(lambda: c.content == "One. Two.", what="the command's import")
        text = tmp_path / "t.txt"
        text.write_text("plain text")
        r = await cli(capfd, "import", DOC, str(text), "--url", server.url)
        assert r.code == 1 and "palimpsest edit" in r.err
    evs = await server.backend.store.read(DOC)
    assert [(e.actor, e.meta["source"]) for e in evs] == [("ops", "script"), ("mig", "two.yjs")]


@pytest.mark.postgres
@pytest.mark.redis
async def test_an_import_on_one_process_leaves_the_ids_free_on_the_others(
    tmp_path: Path,
) -> None:
    """Two processes on PostgreSQL and Redis. The import is made on the first while Carol
    has the document open on the second: she gets it through fan-out, and Alice's tab,
    reconnecting to the second with offline edits, is taken there (the event's relays
    travelled with it). Alice's id is hers then on the first process too."""
    alice, bob = _old_server("Alice. ", "Bob. ")
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as cl,
    ):
        async with connect(cl.ws(1), DOC, "carol") as c:
            async with httpx.AsyncClient(base_url=cl.procs[0].http_url) as http:
                r = await _post(http, alice.get_update())
                assert r.status_code == 200 and r.json()["seq"] == 1, r.text
            await eventually(lambda: c.content == "Alice. Bob. ", what="fanned out")
            _append(alice, "[alice offline]")
            async with connect(cl.ws(1), DOC, "alice", ydoc=alice) as a:
                await eventually(lambda: "[alice offline]" in c.content, what="alice's step 2")
                a.insert(0, "Alice here. ")
                await eventually(lambda: "Alice here." in c.content, what="alice typed on")
            assert a.close_code in (None, 1000), a.close_reason
            forged: Doc[Any] = Doc(client_id=alice.client_id)
            forged.apply_update(alice.get_update())
            async with connect(cl.ws(0), DOC, "bob", ydoc=forged) as f:
                _append(forged, "Bob as Alice")
                await eventually(lambda: f.close_code is not None, what="refused")
            assert f.close_code == 4403, f.close_reason
        async with open_store(store_url) as store:
            evs = await store.read(DOC)
        assert (evs[0].kind, evs[0].actor) == ("import", "ops")
        assert {e.actor for e in evs[1:]} == {"alice"}


# --- a whole document, larger than the 1 MiB of the other routes -------------------------

MiB = 1024 * 1024


def _book(nbytes: int) -> Doc[Any]:
    """A document of about `nbytes` of text, written in pieces at scattered places by two
    writers (so its update has many items, two clients and a delete set)."""
    import random

    rng = random.Random(8)
    docs: list[Doc[Any]] = [Doc(), Doc()]
    size = 0
    for i in range(400):
        d = docs[i % 2]
        if i % 50 == 49:  # the writers exchange their work now and then
            other = docs[(i + 1) % 2]
            other.apply_update(d.get_update(other.get_state()))
        text = d.get("content", type=Text)
        piece = "".join(rng.choice("abcdefgh ijklmn\nopqrst uvwxyz") for _ in range(nbytes // 400))
        at = rng.randint(0, len(text))
        text.insert(at, piece)
        del text[at + 10 : at + 20]
        size += len(piece)
    docs[0].apply_update(docs[1].get_update(docs[0].get_state()))
    return docs[0]


async def test_a_document_larger_than_the_body_limit_is_copied_to_a_running_server(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """README's recipe for a copy: `palimpsest export --format update` on one store, then
    `palimpsest import --url` into a running server (`palimpsest serve`). The update is
    several MiB, over the 1 MiB that a request body may be on other routes: it is taken
    whole, one event, and the text on the target is the source's exactly. A connected
    client gets it too. Other routes still refuse a body over 1 MiB."""
    from serverproc import ServerProcess

    book = _book(3 * MiB)
    want = str(book.get("content", type=Text))
    source = tmp_path / "source.db"
    (tmp_path / "book.yjs").write_bytes(book.get_update())
    r = await cli(capfd, "import", "book", str(tmp_path / "book.yjs"), "--db", str(source))
    assert r.code == 0, r
    export = tmp_path / "export.yjs"
    r = await cli(capfd, "export", "book", "--format", "update", "--db", str(source),
                  "-o", str(export))  # fmt: skip
    assert r.code == 0, r
    assert export.stat().st_size > 3 * MiB
    async with ServerProcess(tmp_path / "target") as srv:
        async with connect(srv.ws_url, "book", "carol") as c:
            r = await cli(capfd, "import", "book", str(export), "--url", srv.http_url)
            assert r.code == 0, r
            assert "book@1 (" in r.out, r
            await eventually(lambda: c.content == want, what="the client got the copy")
        async with httpx.AsyncClient(base_url=srv.http_url, params={"user": "ops"}) as http:
            r = await http.get("/api/docs/book/versions/head")
            assert r.status_code == 200
            assert r.json()["seq"] == 1 and r.json()["roots"]["content"]["value"] == want
            # the other routes keep their 1 MiB
            r = await http.put("/api/docs/other/text", json={"text": "x" * (MiB + 1000)})
            assert r.status_code == 413 and r.json()["error"] == "BodyTooLarge", r.text
            assert "MAX_HTTP_BODY_BYTES" in r.json()["detail"], r.text
            r = await http.post("/api/docs/book/tags", json={"name": "x" * (2 * MiB)})
            assert r.status_code == 413 and r.json()["error"] == "BodyTooLarge", r.text
            r = await http.get("/api/docs/book/events")
            assert [e["kind"] for e in r.json()["events"]] == ["import"]


async def test_an_import_over_the_body_limit_names_that_limit(settings: Settings) -> None:
    """With MAX_DOC_BYTES under MAX_HTTP_BODY_BYTES, the import route takes the larger,
    the body's: an update over it is refused naming MAX_HTTP_BODY_BYTES and its figure
    (it named MAX_DOC_BYTES with the body's figure)."""
    settings.max_doc_bytes = MiB // 2
    settings.max_http_body_bytes = MiB
    big = _book(MiB + MiB // 2).get_update()
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        r = await _post(http, big)
    assert r.status_code == 413 and r.json()["error"] == "BodyTooLarge", r.text
    assert f"limit of {MiB} bytes (MAX_HTTP_BODY_BYTES)" in r.json()["detail"], r.text
    assert "nothing of it was applied" in r.json()["detail"], r.text


async def test_an_import_over_the_document_limit_is_refused_whole(
    tmp_path: Path, settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    """With MAX_DOC_BYTES at 2 MiB, a 3 MiB update is refused (413) with a message that
    names the setting: by its Content-Length before it is read; sent without one
    (chunked), as soon as what arrived is over the limit, while the client still sends;
    and by the CLI. Nothing is applied. An update under the limit that would take the
    document over it is refused naming the setting too, after one of 1.5 MiB was taken."""
    settings.max_doc_bytes = 2 * MiB
    big = _book(3 * MiB).get_update()
    assert len(big) > 3 * MiB
    async with run_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await _post(http, big)
            assert r.status_code == 413 and r.json()["error"] == "BodyTooLarge", r.text
            assert f"limit of {2 * MiB} bytes (MAX_DOC_BYTES)" in r.json()["detail"], r.text
        # no Content-Length: counted as it arrives; the answer comes while we send
        status, answer, sent = await _chunked_post(server.port, f"/api/docs/{DOC}/updates")
        assert status == 413 and b"MAX_DOC_BYTES" in answer, answer
        assert sent < 64 * MiB, sent  # it did not wait for the end of an endless body
        f = tmp_path / "big.yjs"
        f.write_bytes(big)
        r = await cli(capfd, "import", DOC, str(f), "--url", server.url)
        assert r.code == 1 and "MAX_DOC_BYTES" in r.err, r
        assert await server.backend.store.doc_info(DOC) is None

        # a connection lost mid-way applies nothing
        first = _book(MiB + MiB // 2)
        whole = first.get_update()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"POST /api/docs/{DOC}/updates?user=ops HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/octet-stream\r\ncontent-length: {len(whole)}\r\n"
            "\r\n".encode()
            + whole[: len(whole) // 2]
        )
        await writer.drain()
        writer.close()
        # under the limit, but the document would grow over it
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await _post(http, first.get_update())
            assert r.status_code == 200 and r.json()["seq"] == 1, r.text
            more: Doc[Any] = Doc()
            more.get("content", type=Text).insert(0, "y" * (MiB + MiB // 2))
            r = await _post(http, more.get_update())
            assert r.status_code == 413, r.text
            assert "would grow over the limit" in r.text and "MAX_DOC_BYTES" in r.text, r.text
        assert await server.backend.store.head(DOC) == 1


async def _chunked_post(port: int, path: str) -> tuple[int, bytes, int]:
    """POST an endless chunked body of update-like bytes until the server answers; return
    the status, the answer and how many body bytes were sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path}?user=ops HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        "content-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n".encode()
    )
    chunk = b"\x01" * (256 * 1024)
    sent = 0
    answer = asyncio.ensure_future(reader.read(4096))
    try:
        while not answer.done() and sent < 256 * MiB:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except (ConnectionError, TimeoutError):
                await asyncio.wait([answer], timeout=5)
                break
            sent += len(chunk)
        head = await answer
        while b"\r\n\r\n" not in head or not head.rstrip().endswith(b"}"):
            more = await reader.read(4096)
            if not more:
                break
            head += more
    finally:
        writer.close()
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, head, sent


async def test_undoing_an_import_names_the_writers_of_what_it_takes_out(
    server: RunningServer,
) -> None:
    """The imported text is the importer's undo step, and its client ids its writers'
    once they type again (Alice's tab reconnects and types on). Undoing the import then
    takes out Alice's text and Bob's (his id nobody's yet: `user: null`), and the answer
    said nothing of it: `removed_others` left out whatever the reverted event carried,
    whoever's client id it was under. It counts by the owners of the ids now."""
    alice, bob = _old_server("Alice. ", "Bob. ")
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await _post(http, alice.get_update())
        assert r.status_code == 200, r.text
        async with connect(server.ws_url, DOC, "alice", ydoc=alice) as a:
            a.insert(len(a.content), "More.")
            await eventually(lambda: _has(server, "Alice. Bob. More."), what="alice typed on")
        r = await http.post(f"/api/docs/{DOC}/undo", params={"user": "ops"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["removed"] == {"characters": 12, "items": 0}, got
        assert got["removed_others"] == [
            {"user": "alice", "characters": 7, "items": 0},
            {"user": None, "characters": 5, "items": 0},
        ], got
    assert await _text(server) == "More."
    del bob
