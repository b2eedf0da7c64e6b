"""`--url` with a query (open mode's ``?user=``) or a path prefix (a server mounted under
``/collab``): every command appends its path to the base's path and keeps the base's
query, merged with its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer
from pycrdt import Doc, Text
from starlette.applications import Starlette
from starlette.routing import Mount
from test_admin_cli import cli
from test_embedding import running

from palimpsest.app import create_app
from palimpsest.backend import Backend
from palimpsest.client import History
from palimpsest.client.cli import main as client_main
from palimpsest.handshake import uvicorn_options
from palimpsest.limits import Limits
from palimpsest.settings import Settings


async def client_cli(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capfd.readouterr()
    code = await asyncio.to_thread(client_main, list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def an_update(text: str) -> bytes:
    d: Doc[Any] = Doc()
    d["content"] = Text(text)
    return d.get_update()


@contextlib.asynccontextmanager
async def mounted(settings: Settings, prefix: str) -> AsyncIterator[tuple[Backend, str]]:
    """The server's app mounted under `prefix` in a host app, served by uvicorn: its
    base URL is http://127.0.0.1:PORT/PREFIX (nothing answers outside the prefix)."""
    backend = Backend(settings)
    app = create_app(settings, backend)
    host = Starlette(routes=[Mount(prefix, app=app)], lifespan=app.lifespan)
    async with running(host, **uvicorn_options(settings, backend.extension(Limits))) as at:
        yield backend, f"http://{at}{prefix}"


async def test_a_base_url_with_a_query_keeps_it_for_every_command(
    server: RunningServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`import DOC FILE --url http://H:P?user=admin` (the field's case: it was sent to
    ``/?user=adminapi/docs/...``, answered 415), `edit` and `cat` with ``?user=`` in the
    base: the query is kept, a name the command gives itself takes the command's value."""
    f = tmp_path / "one.yjs"
    f.write_bytes(an_update("imported"))
    r = await cli(capfd, "import", "q", str(f), "--url", f"{server.url}?user=admin")
    assert r.code == 0, r
    assert "q@1" in r.out
    txt = tmp_path / "t.txt"
    txt.write_text("imported, then edited\n")
    code, _out, err = await client_cli(
        capfd, "edit", "q", str(txt), "--url", f"{server.url}/?user=ann"
    )
    assert code == 0, err
    code, out, err = await client_cli(capfd, "cat", "q", "--url", f"{server.url}?user=ann")
    assert (code, out) == (0, "imported, then edited\n"), err
    # the base's user made the edit; --user replaces it
    txt.write_text("by bob\n")
    code, _out, err = await client_cli(
        capfd, "edit", "q", str(txt), "--url", f"{server.url}?user=ann", "--user", "bob"
    )
    assert code == 0, err
    evs = await server.backend.store.read("q")
    assert [e.actor for e in evs] == ["admin", "ann", "bob"]


async def test_a_base_url_with_a_path_prefix_reaches_a_mounted_server(
    settings: Settings, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A server mounted under /collab: the HTTP commands (import, cat, history) and the
    websocket ones (edit) append their paths under /collab, with the base's query."""
    async with mounted(settings, "/collab") as (backend, base):
        f = tmp_path / "one.yjs"
        f.write_bytes(an_update("under a prefix"))
        r = await cli(capfd, "import", "p", str(f), "--url", f"{base}?user=admin")
        assert r.code == 0, r
        txt = tmp_path / "t.txt"
        txt.write_text("under a prefix, edited\n")
        code, _out, err = await client_cli(
            capfd, "edit", "p", str(txt), "--url", f"{base}/?user=ann"
        )
        assert code == 0, err
        code, out, err = await client_cli(capfd, "cat", "p", "--url", f"{base}?user=ann")
        assert (code, out) == (0, "under a prefix, edited\n"), err
        code, out, err = await client_cli(
            capfd, "cat", "p", "--seq", "1", "--url", f"{base}/?user=ann"
        )
        assert (code, out) == (0, "under a prefix"), err
        async with History(f"{base}?user=ann") as h:
            assert [e.actor for e in (await h.events("p")).events] == ["admin", "ann"]
        assert [e.actor for e in await backend.store.read("p")] == ["admin", "ann"]
