"""Two deployments on one Redis: pub/sub ignores the database number, so servers of two
stores whose fan-out URLs differ only in ``/DB`` share the channels. Each message names
its deployment (the store's identity) and a server drops another deployment's: no
presence, edit or deletion crosses, while the processes of one deployment, an older one's
messages included (they name none), still hear each other."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import eventually
from redis import asyncio as aioredis
from scaleout import PrivateRedis, cluster, fresh_schema, open_store
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest.fanout import (
    deployment_of,
    encode,
    encode_awareness,
    encode_deleted,
    foreign_deployment,
    shared_channels_warning,
)
from palimpsest.store.base import Event
from palimpsest.store.postgres import PostgresStore
from palimpsest.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parent.parent
FOREIGN = "palimpsest_fanout_foreign_messages_total"


def presence(c: YClient) -> dict[int, str]:
    seen: dict[int, str] = {}
    for f in c.frames:
        if isinstance(f, P.AwarenessUpdate):
            for client, _clock, state in P.decode_awareness(f.payload):
                seen[client] = state
    return seen


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(url + "/metrics", timeout=10)).text
    [line] = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[-1])


@pytest.mark.postgres
@pytest.mark.redis
async def test_deployments_on_one_redis_with_other_db_numbers_keep_apart(tmp_path: Path) -> None:
    """The field report: deployment A (two processes) on ``/1``, B on ``/2``, the default
    prefix. Before, B's client saw A's presence, A's first edit (its seq followed B's
    room's), then was closed with 4404 (B's store had no such event: "deleted"), and A's
    DELETE closed B's clients with 4404 while B's document stayed."""
    ann_state = '{"user":{"name":"ann"}}'
    with PrivateRedis() as redis:
        base = f"redis://127.0.0.1:{redis.port}"
        async with (
            fresh_schema() as store_a,
            fresh_schema() as store_b,
            cluster(tmp_path / "a", 2, store_url=store_a, fanout=f"{base}/1?check=0.5") as a,
            cluster(tmp_path / "b", 1, store_url=store_b, fanout=f"{base}/2?check=0.5") as b,
        ):
            b_log = b.procs[0].log_text
            assert "names Redis database 2 and no ?prefix=" in b_log()
            async with (
                connect(b.ws(0), "shared", user="bob") as bob,  # B's room at seq 0
                connect(a.ws(0), "shared", user="ann") as ann,
                connect(a.ws(1), "shared", user="cy") as cy,
            ):
                await ann.send_raw(P.encode_awareness(P.encode_awareness_entries(
                    [(4242, 1, ann_state)])))  # fmt: skip
                ann.insert(0, "from A")  # seq 1 in A's store: it would follow B's room
                # one deployment's processes still hear each other
                await eventually(lambda: cy.content == "from A", what="A's edit on a1")
                await eventually(lambda: presence(cy).get(4242) == ann_state, what="on a1")
                # B got them (counted) and dropped them
                await eventually(
                    lambda: _at_least(b.procs[0].http_url, 2), what="presence and the edit"
                )
                assert 4242 not in presence(bob)
                assert bob.content == ""
                bob.insert(0, "from B")
                async with open_store(store_b) as sb:
                    await eventually(lambda: _head(sb, "shared", 1), what="B's edit logged")
                    seen_on_b = await metric(b.procs[0].http_url, FOREIGN)
                    # A deletes its document: A's clients go, B's stays
                    async with httpx.AsyncClient() as http:
                        r = await http.delete(
                            f"{a.procs[0].http_url}/api/docs/shared", params={"user": "root"}
                        )
                    assert r.status_code == 200, r.text
                    await eventually(
                        lambda: ann.close_code == 4404 and cy.close_code == 4404,
                        what="A's clients closed",
                    )
                    await eventually(
                        lambda: _at_least(b.procs[0].http_url, seen_on_b + 1),
                        what="A's deletion reached B",
                    )
                    assert bob.close_code is None
                    bob.insert(len(bob.content), ", still here")
                    await eventually(lambda: _head(sb, "shared", 2), what="B goes on")
                    # B's edits never reached A's processes either
                    assert cy.content == "from A"
                    assert await metric(a.procs[1].http_url, FOREIGN) >= 1

                    # `palimpsest delete --fanout` on A's store names A's deployment too
                    async with connect(a.ws(0), "second", user="ann") as ann2:
                        ann2.insert(0, "A's second")
                    async with open_store(store_a) as sa:
                        await eventually(lambda: _head(sa, "second", 1), what="logged on A")
                    async with connect(b.ws(0), "second", user="bob") as bob2:
                        seen_on_b = await metric(b.procs[0].http_url, FOREIGN)
                        r2 = await asyncio.to_thread(
                            subprocess.run,
                            [sys.executable, "-m", "palimpsest", "delete", "second", "--yes",
                             "--store", store_a, "--fanout", f"{base}/1"],
                            cwd=REPO, capture_output=True, text=True, timeout=60,
                        )  # fmt: skip
                        assert r2.returncode == 0, r2.stderr
                        await eventually(
                            lambda: _at_least(b.procs[0].http_url, seen_on_b + 1),
                            what="the command's deletion reached B",
                        )
                        assert bob2.close_code is None

                # an older process's message names no deployment: taken (rolling upgrade)
                old = encode_awareness("old-process", P.encode_awareness_entries(
                    [(4343, 1, '{"user":"old"}')]))  # fmt: skip
                await _publish(base, "palimpsest:shared", old)
                await eventually(lambda: 4343 in presence(bob), what="the old message taken")
                # a deletion naming another deployment is not
                before = await metric(b.procs[0].http_url, FOREIGN)
                await _publish(base, "palimpsest:shared", encode_deleted("x", "m", "zzzzzzzz"))
                await eventually(
                    lambda: _at_least(b.procs[0].http_url, before + 1),
                    what="the foreign deletion counted",
                )
                assert bob.close_code is None
            warned = [ln for ln in b_log().splitlines() if "ANOTHER DEPLOYMENT" in ln]
            assert len(warned) == 2, warned  # A's, then zzzzzzzz's: once each
            assert "zzzzzzzz" in warned[1]


async def _at_least(url: str, n: float) -> bool:
    return await metric(url, FOREIGN) >= n


async def _head(store: PostgresStore, doc: str, n: int) -> bool:
    return await store.head(doc) == n


async def _publish(url: str, channel: str, message: bytes) -> None:
    """What a process would publish (an older one's, another deployment's)."""
    r = aioredis.Redis.from_url(url)
    try:
        await r.publish(channel, message)
    finally:
        await r.aclose()


def test_messages_name_their_deployment_and_older_ones_none() -> None:
    ev = [Event("d", 3, 1000, "ann", "edit", b"\x01\x02", {"conn": "x"})]
    mark = b'{"d":"' + b"abcdefgh" + b'"'
    for mine, theirs, old in (
        (encode("p", ev, "abcdefgh"), encode("p", ev, "zzzzzzzz"), encode("p", ev)),
        (
            encode_awareness("p", b"\x01", "abcdefgh"),
            encode_awareness("p", b"\x01", "zzzzzzzz"),
            encode_awareness("p", b"\x01"),
        ),
        (
            encode_deleted("p", "ann", "abcdefgh"),
            encode_deleted("p", "ann", "zzzzzzzz"),
            encode_deleted("p", "ann"),
        ),
    ):
        assert foreign_deployment(mine, mark) is None
        assert foreign_deployment(old, mark) is None  # an older process's: taken
        assert foreign_deployment(theirs, mark) == "zzzzzzzz"
        assert foreign_deployment(theirs, b"") is None  # ours unknown: every one taken
        # the key adds a few bytes
        assert len(mine) - len(old) == len(b'"d":"abcdefgh",')
    # a deployment is 8 characters that JSON and the comparison take as they are
    d = deployment_of("postgresql:1:2:public")
    assert d is not None and len(d) == 8 and d.isascii() and '"' not in d
    assert d != deployment_of("postgresql:1:2:other")
    assert deployment_of(None) is None


def test_a_db_number_without_a_prefix_is_warned_of() -> None:
    said = shared_channels_warning("redis://h:6379/2")
    assert said is not None and "database 2" in said and "prefix" in said
    assert shared_channels_warning("unix:///tmp/r.sock?db=3") is not None
    assert shared_channels_warning("redis://h:6379/2?prefix=mine") is None
    assert shared_channels_warning("redis://h:6379/0") is None
    assert shared_channels_warning("redis://h:6379") is None


@pytest.mark.postgres
async def test_store_identities_tell_stores_apart_not_their_processes(tmp_path: Path) -> None:
    async with fresh_schema() as one, fresh_schema() as two:
        async with open_store(one) as s1, open_store(one) as s1b, open_store(two) as s2:
            i1 = await s1.identity()
            assert i1 is not None and i1.startswith("postgresql:")
            assert await s1b.identity() == i1
            assert await s2.identity() not in (None, i1)
    path = tmp_path / "p.db"
    link = tmp_path / "link.db"
    first = SQLiteStore(str(path))
    await first.start()
    try:
        os.symlink(path, link)
        other = SQLiteStore(str(link))
        await other.start()
        try:
            assert await first.identity() == await other.identity() is not None
        finally:
            await other.stop()
    finally:
        await first.stop()
