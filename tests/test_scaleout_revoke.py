"""Revoking a user with two `palimpsest serve` processes on PostgreSQL and Redis: the
process that did not revoke closes the user's sockets too (fan-out) and refuses their
old tokens (one minted just before it by an issuer whose clock is fast too); a token
issued LEEWAY after the revocation works on both."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import eventually
from scaleout import Cluster, cluster, fanout_url, fresh_schema, open_store

from palimpsest import protocol as P
from palimpsest.auth.identity import LEEWAY
from palimpsest.auth.tokens import mint

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SECRET = "scaleout-secret-of-at-least-32-bytes!!"


def tok(user: str, role: str = "write", now: float | None = None) -> str:
    return mint(SECRET, user, role, ["*"], 600, now=now)


def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {tok('boss', 'admin')}"}


@contextlib.asynccontextmanager
async def two_processes(tmp_path: Path) -> AsyncIterator[tuple[Cluster, httpx.AsyncClient]]:
    """Two `palimpsest serve` processes on a fresh schema and the fan-out, with the JWT
    secret, and an HTTP client."""
    async with (
        fresh_schema() as store_url,
        cluster(
            tmp_path,
            2,
            store_url=store_url,
            fanout=fanout_url(),
            env={"PALIMPSEST_JWT_SECRET": SECRET},
        ) as c,  # fmt: skip
        httpx.AsyncClient() as http,
    ):
        yield c, http


async def opened(url: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url, compression=None)
    await ws.send(P.encode_sync_step1(b"\x00"))
    while not isinstance(P.decode(await asyncio.wait_for(ws.recv(), 10)), P.SyncStep2):
        pass
    return ws


async def closed(ws: websockets.ClientConnection) -> tuple[int, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 20)
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None, "closed without a close frame"
        return e.rcvd.code, e.rcvd.reason


async def test_a_revocation_closes_the_users_sockets_on_every_process(tmp_path: Path) -> None:
    old = tok("fired", now=time.time() - 60)
    admin = admin_headers()
    async with two_processes(tmp_path) as (c, http):
        on = [await opened(f"{c.ws(i)}/team?token={old}") for i in (0, 1)]
        stays = await opened(f"{c.ws(1)}/team?token={tok('stays')}")
        r = await http.post(f"{c.procs[0].http_url}/api/revocations/fired", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["closed"] == 1  # its own; the other process closes its own
        for ws in on:
            code, reason = await closed(ws)
            assert code == 4401 and reason.startswith("access revoked for 'fired'"), reason
        assert stays.close_code is None, "another user's socket stays open"
        for p in c.procs:
            r = await http.get(f"{p.http_url}/api/docs", headers={"authorization": f"Bearer {old}"})
            assert r.status_code == 401 and "access revoked" in r.json()["detail"], r.text
        since = int(datetime.fromisoformat((await http.get(
            f"{c.procs[1].http_url}/api/revocations", headers=admin)).json()["revoked"][0]["since"]
        ).timestamp())  # fmt: skip
        # (a token issued at `since`, LEEWAY after the revocation: minted with that iat
        # once this clock is within LEEWAY of it)
        await eventually(lambda: time.time() >= since - LEEWAY, what="since within LEEWAY")
        fresh = tok("fired", now=since)
        for i in (0, 1):
            ws = await opened(f"{c.ws(i)}/team?token={fresh}")
            await ws.close()
        async with open_store(c.store_url) as store:
            assert [r.user for r in await store.revocations().list()] == ["fired"]
        # lifted on one process: the other lets the old token in again
        r = await http.delete(f"{c.procs[1].http_url}/api/revocations/fired", headers=admin)
        assert r.status_code == 200, r.text

        async def let_in() -> bool:
            r = await http.get(
                f"{c.procs[0].http_url}/api/docs", headers={"authorization": f"Bearer {old}"}
            )
            return r.status_code == 200

        await eventually(let_in, what="the lifting reached the other process")
        await stays.close()


async def test_a_token_minted_ahead_before_the_revocation_is_refused_by_the_other_process(
    tmp_path: Path,
) -> None:
    """Before, a token whose iat was a few seconds ahead (its issuer's clock fast, within
    the 30 s leeway) and minted before the revocation still got in, on either process."""
    admin = admin_headers()
    async with two_processes(tmp_path) as (c, http):
        ahead = tok("fired", now=time.time() + 5)  # (minted now: the start took seconds)
        on = await opened(f"{c.ws(1)}/team?token={ahead}")
        r = await http.post(f"{c.procs[0].http_url}/api/revocations/fired", headers=admin)
        assert r.status_code == 200, r.text
        code, reason = await closed(on)  # the other process's socket of it: closed
        assert code == 4401 and reason.startswith("access revoked for 'fired'"), reason
        for p in c.procs:
            r = await http.get(
                f"{p.http_url}/api/docs", headers={"authorization": f"Bearer {ahead}"}
            )
            assert r.status_code == 401 and "access revoked" in r.json()["detail"], r.text
