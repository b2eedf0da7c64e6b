"""``Backend.disconnect``: an app (or an extension) closes connections it no longer
allows, now, on every process: a permission withdrawn in the app's own records while a
socket is open (docs/extending.md, "Closing connections")."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import eventually, free_port, run_server
from scaleout import fanout_url, fresh_schema
from yclient import YClient, connect

from palimpsest.fanout import Fanout
from palimpsest.settings import Settings


def closed(c: YClient) -> tuple[int | None, str | None]:
    return c.ws.close_code, c.ws.close_reason


async def test_an_app_closes_a_users_connections_to_a_document(settings: Settings) -> None:
    """dave's permission on d1 is withdrawn in the app's users table while his socket is
    open: nothing asked the app again, and his socket kept receiving every new edit. The
    app closes it: only his connection to d1, with the code and reason it gives."""
    async with run_server(settings) as srv:
        backend = srv.backend
        async with (
            connect(srv.ws_url, "d1", "ann") as ann1,
            connect(srv.ws_url, "d1", "dave") as dave1,
            connect(srv.ws_url, "d1", "carl") as carl1,
            connect(srv.ws_url, "d2", "dave") as dave2,
            connect(srv.ws_url, "d2", "ann") as ann2,
        ):
            n = backend.disconnect(user="dave", doc="d1", reason="your access to d1 ended")
            assert n == 1
            await eventually(lambda: dave1.ws.close_code is not None, what="dave's d1 closed")
            assert closed(dave1) == (4403, "your access to d1 ended")
            ann1.insert(0, "secret")
            await eventually(lambda: str(carl1.text) == "secret", what="the edit went out")
            assert str(dave1.text) == ""
            assert ann1.ws.close_code is None and dave2.ws.close_code is None
            # everyone on a document, with a code of the app's choosing
            assert backend.disconnect(doc="d2", code=4401, reason="sign in again") == 2
            await eventually(lambda: dave2.ws.close_code and ann2.ws.close_code)
            assert closed(dave2) == closed(ann2) == (4401, "sign in again")
            assert ann1.ws.close_code is None
            with pytest.raises(ValueError, match="a user, a document"):
                backend.disconnect()
            with pytest.raises(ValueError, match="4000"):
                backend.disconnect(user="ann", code=1000)
            assert backend.disconnect(user="nobody") == 0


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_disconnect_closes_the_users_connections_on_every_process(
    tmp_path: Path,
) -> None:
    """With several processes, the app calls one of them: the others close their
    connections of that user too (the fan-out carries it, as a revocation)."""
    async with fresh_schema() as url:
        bus = fanout_url()
        a = Settings(store=url, fanout=bus, port=free_port(), instance="close-a")
        b = Settings(store=url, fanout=bus, port=free_port(), instance="close-b")
        async with run_server(a) as sa, run_server(b) as sb:
            fa, fb = sa.backend.extension(Fanout), sb.backend.extension(Fanout)
            assert fa is not None and fb is not None
            await eventually(lambda: fa.connected and fb.connected, what="both subscribed")
            async with (
                connect(sb.ws_url, "shared", "dave") as dave_b,
                connect(sb.ws_url, "shared", "ann") as ann_b,
            ):
                assert sa.backend.disconnect(user="dave", reason="removed from shared") == 0
                await eventually(lambda: dave_b.ws.close_code, what="closed on the other process")
                assert closed(dave_b) == (4403, "removed from shared")
                assert ann_b.ws.close_code is None
