"""The store's connections to PostgreSQL: TCP keepalive on each, and the command timeout
as configured (PALIMPSEST_PG_COMMAND_TIMEOUT)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from conftest import PG_URL

from palimpsest.backend import Backend
from palimpsest.errors import StoreUnavailable
from palimpsest.serving_lock import PostgresServingLock
from palimpsest.settings import Settings
from palimpsest.store import postgres
from palimpsest.store.postgres import PostgresStore, split_url

pytestmark = pytest.mark.postgres


def _keepalive(conn: Any) -> tuple[int, int, int, int]:
    """SO_KEEPALIVE and TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT of `conn`'s socket, as
    the kernel holds them."""
    sock = conn._transport.get_extra_info("socket")
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


WANT = (1, postgres.KEEPALIVE_IDLE, postgres.KEEPALIVE_INTERVAL, postgres.KEEPALIVE_COUNT)


async def test_every_connection_of_the_store_keeps_alive(schema: str) -> None:
    """A connection whose peer went without a word (a NAT or firewall that forgot it: no
    RST, no FIN) stayed in the pool, to be handed to the next command, which then held
    every document of the process for the command timeout and the cancel's (60 s). With
    keepalive, an idle one is found dead and dropped from the pool."""
    store = PostgresStore(f"{PG_URL}?schema={schema}")
    await store.start()
    try:
        async with store.pool.acquire() as conn:
            assert _keepalive(conn) == WANT
        async with store.server_changes("d"):  # (the turns' pool)
            assert store._turns is not None
            [turn] = [h._con for h in store._turns._holders if h._con is not None and h._in_use]
            assert _keepalive(turn) == WANT
    finally:
        await store.stop()
    lock = PostgresServingLock(split_url(f"{PG_URL}?schema={schema}")[0], schema, shared=True)
    await lock.acquire()
    try:
        assert lock._conn is not None
        assert _keepalive(lock._conn) == WANT
    finally:
        await lock.release()


async def test_the_command_timeout_is_a_setting_that_reaches_the_driver(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PALIMPSEST_PG_COMMAND_TIMEOUT", "0.5")
    settings = Settings.from_env(store=f"{PG_URL}?schema={schema}")
    assert settings.pg_command_timeout == 0.5
    store = Backend(settings).store
    assert isinstance(store, PostgresStore)
    await store.start()
    try:
        async with store.pool.acquire() as conn:
            assert conn._config.command_timeout == 0.5
        # a statement longer than that is given up (30 s by default: it would finish)
        with pytest.raises(StoreUnavailable):
            await store._fetch("SELECT pg_sleep(3)")
    finally:
        await store.stop()
