"""The fan-out on a managed-style Redis: ACL users, passwords, a failover.

Each test starts a private redis-server (scaleout.PrivateRedis) on a free loopback port
and sets its users there, and runs `palimpsest serve` processes on one SQLite file with
the fan-out through it. What is asserted is what an operator sees: /readyz, the metrics,
the log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import eventually
from pycrdt import Doc, Text
from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from scaleout import PrivateRedis
from serverproc import ServerProcess
from yclient import YClient, connect

from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.redis]

REPO = Path(__file__).resolve().parent.parent


def _url(redis: PrivateRedis, userinfo: str, prefix: str, check: float = 0.25) -> str:
    at = f"{userinfo}@" if userinfo else ""
    return f"redis://{at}127.0.0.1:{redis.port}/0?prefix={prefix}&check={check}"


async def _readyz(srv: ServerProcess) -> str:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{srv.http_url}/readyz", timeout=5)
        return str(r.json()["fanout"])


async def _connected_gauge(srv: ServerProcess) -> str:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{srv.http_url}/metrics", timeout=5)
    for line in r.text.splitlines():
        if line.startswith("palimpsest_fanout_connected "):
            return line.split()[1]
    raise AssertionError("no palimpsest_fanout_connected in /metrics")


def _denied(redis: PrivateRedis, user: str) -> int:
    """How many commands of `user` Redis refused (ACL LOG counts repeats of one entry)."""
    out = redis.cli("ACL", "LOG").splitlines()
    total = 0
    for i, line in enumerate(out):
        # the entries are flat key/value lines: "count", N, ... "username", NAME, ...
        if line == "count":
            entry = out[i : i + 20]
            if "username" in entry and entry[entry.index("username") + 1] == user:
                total += int(out[i + 1])
    return total


@pytest.mark.parametrize(
    ("user", "rules"),
    [
        ("nopsub", ["~*", "&*", "+@all", "-psubscribe"]),
        # a channel rule that covers the documents' channels but not the pattern itself
        ("narrow", ["resetchannels", "&PREFIX:doc*", "-@all", "+@pubsub", "+@connection"]),
    ],
)
async def test_a_user_without_psubscribe_to_the_prefix_is_told_not_looped(
    tmp_path: Path, user: str, rules: list[str]
) -> None:
    """Under RESP3 psubscribe() returns before Redis answers: the subscriber said "fan-out
    subscribed", reset its back-off and healed every room, then Redis's NOPERM came, and
    round again, about 9 times a second ("subscribed" and "lost Redis" 85 times each in
    10 s). Now "subscribed" waits for Redis's confirmation, the back-off keeps growing,
    the refusal is said once, naming the pattern the user needs."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with PrivateRedis(password="s3cret") as redis:
        rules = [r.replace("PREFIX", prefix) for r in rules]
        redis.cli("ACL", "SETUSER", user, "on", ">pw", *rules)
        url = _url(redis, f"{user}:pw", prefix)
        srv = ServerProcess(tmp_path / user, extra_args=["--fanout", url])
        await srv.astart()
        try:
            await eventually(lambda: _denied(redis, user) >= 3, timeout=20, what="retries")
            await asyncio.sleep(3.0)  # ample for a hot loop to show
            log = srv.log_text()
            denied = _denied(redis, user)
            ready = await _readyz(srv)
            gauge = await _connected_gauge(srv)
        finally:
            await asyncio.to_thread(srv.stop)
    assert "fan-out subscribed" not in log, srv.log_tail()
    assert "fan-out lost Redis" not in log, srv.log_tail()
    said = [line for line in log.splitlines() if "fan-out cannot subscribe" in line]
    assert len(said) == 1, srv.log_tail()  # once, not per try
    assert f"PSUBSCRIBE to '{prefix}:*'" in said[0], said[0]
    assert "no permissions" in said[0], said[0]
    # the back-off grows (0.1, 0.2, 0.4 ... 2 s): a handful of tries, not ~9 a second
    assert denied < 15, denied
    assert ready.startswith("degraded:") and f"'{prefix}:*'" in ready, ready
    assert float(gauge) == 0


@pytest.mark.parametrize("userinfo", ["", ":Wr0ngPW", "nobody:Wr0ngPW"])
async def test_a_missing_or_wrong_redis_password_is_said_to_be_one(
    tmp_path: Path, userinfo: str
) -> None:
    """Without a password redis-py's HELLO 3 is refused with "HELLO must be called with the
    client already authenticated…", which the log gave as "fan-out cannot reach Redis":
    now it says that Redis refused the credentials, a configuration error."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with PrivateRedis(password="s3cret") as redis:
        srv = ServerProcess(
            tmp_path / "srv", extra_args=["--fanout", _url(redis, userinfo, prefix)]
        )
        await srv.astart()
        try:
            await eventually(lambda: "fan-out cannot subscribe" in srv.log_text(), timeout=20)
            ready = await _readyz(srv)
            log = srv.log_text()
        finally:
            await asyncio.to_thread(srv.stop)
    line = next(line for line in log.splitlines() if "fan-out cannot subscribe" in line)
    assert "authentication failed" in line, line
    assert "configuration error" in line, line
    assert "cannot reach Redis" not in log, log
    assert "Wr0ngPW" not in line + ready and "s3cret" not in line + ready  # no password
    assert "authentication failed" in ready, ready


async def test_a_user_that_may_not_publish_stays_degraded_while_nobody_types(
    tmp_path: Path,
) -> None:
    """Redis refuses every PUBLISH (`+@all -publish`): /readyz said "degraded" while edits
    were being published, and "ok" (palimpsest_fanout_connected 1) half a second after
    the typing paused, because the idle PING the publisher sent to learn that Redis was
    back succeeded. A ping proves nothing about publishing: the failure stays until a
    PUBLISH goes through, which it does once the user may publish again."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with PrivateRedis(password="s3cret") as redis:
        redis.cli("ACL", "SETUSER", "mute", "on", ">pw", "~*", "&*", "+@all", "-publish")
        url = _url(redis, "mute:pw", prefix)
        srv = ServerProcess(tmp_path / "srv", extra_args=["--fanout", url])
        await srv.astart()
        try:
            await eventually(lambda: "fan-out subscribed" in srv.log_text(), timeout=20)
            async with connect(srv.ws_url, "muted", user="ann") as a:
                await type_into(a, "hello", pause=0.05)
                await eventually(lambda: _is_degraded(srv, "PUBLISH"), timeout=20, what="degraded")
                await asyncio.sleep(3.0)  # typing paused: six idle rounds of the publisher
                ready = await _readyz(srv)
                gauge = await _connected_gauge(srv)
                assert ready.startswith("degraded:") and "PUBLISH" in ready, ready
                assert "no permissions" in ready, ready
                assert float(gauge) == 0
                # the user may publish again: a PUBLISH goes through with nobody typing
                redis.cli("ACL", "SETUSER", "mute", "+publish")
                await eventually(lambda: _is_ok(srv), timeout=20, what="ok again")
                assert float(await _connected_gauge(srv)) == 1
        finally:
            await asyncio.to_thread(srv.stop)
    log = srv.log_text()
    assert log.count("fan-out cannot publish (") == 1, srv.log_tail()
    assert "fan-out publishes again" in log, srv.log_tail()


async def _is_degraded(srv: ServerProcess, says: str) -> bool:
    ready = await _readyz(srv)
    return ready.startswith("degraded:") and says in ready


async def _is_ok(srv: ServerProcess) -> bool:
    return await _readyz(srv) == "ok"


async def type_into(c: YClient, text: str, pause: float = 0.0) -> None:
    for ch in text:
        c.insert(len(c.content), ch)
        await asyncio.sleep(pause)


def _connections(redis: PrivateRedis) -> int:
    """How many connections `redis` has accepted (this one included)."""
    stats = redis.cli("INFO", "stats")
    return int(stats.split("total_connections_received:")[1].split()[0])


@pytest.mark.parametrize(
    "rules",
    [
        ["~*", "&*", "+@all"],  # asked with ROLE
        ["~*", "&*", "+@all", "-role"],  # ROLE refused: asked with INFO replication
    ],
)
async def test_a_process_left_on_a_demoted_primary_says_so_and_reconnects(
    tmp_path: Path, rules: list[str]
) -> None:
    """A failover demotes the Redis a process is connected to (REPLICAOF): its PUBLISHes
    are taken without complaint and reach only the subscribers of that replica, never
    the new primary's, and /readyz said "ok" everywhere. The publisher checks the role
    of the node it publishes to (ROLE, once a check period, with its publishes or on its
    own while idle): on a replica it says so and reconnects; once the node is a primary
    again, "ok"."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with PrivateRedis(password="s3cret") as old, PrivateRedis() as new:
        old.cli("ACL", "SETUSER", "app", "on", ">pw", *rules)
        url = _url(old, "app:pw", prefix)
        srv = ServerProcess(tmp_path / "srv", extra_args=["--fanout", url])
        await srv.astart()
        try:
            await eventually(lambda: _is_ok(srv), timeout=20, what="ok at first")
            assert old.cli("REPLICAOF", "127.0.0.1", str(new.port)) == "OK"
            await eventually(lambda: _is_degraded(srv, "replica"), timeout=20, what="degraded")
            ready = await _readyz(srv)
            assert "role slave" in ready and f"127.0.0.1:{new.port}" in ready, ready
            assert float(await _connected_gauge(srv)) == 0
            # it reconnects (here to the same address: the replica still; after a DNS
            # switch, to the new primary): connections other than ours arrive
            base, ours = _connections(old), [0]

            def reconnected() -> bool:
                ours[0] += 1
                return _connections(old) - base - ours[0] > 0

            await eventually(reconnected, timeout=20, interval=0.2, what="a new connection")
            assert old.cli("REPLICAOF", "NO", "ONE") == "OK"
            await eventually(lambda: _is_ok(srv), timeout=20, what="ok again")
        finally:
            await asyncio.to_thread(srv.stop)
    log = srv.log_text()
    assert "is a replica" in log, srv.log_tail()
    assert "is the primary again" in log, srv.log_tail()


async def test_a_user_that_may_not_ask_the_role_is_not_taken_for_a_replica(
    tmp_path: Path,
) -> None:
    """ROLE and INFO need permissions a managed Redis may not give: without them the
    role goes unchecked (said once), and nothing else changes."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with PrivateRedis(password="s3cret") as redis:
        redis.cli("ACL", "SETUSER", "plain", "on", ">pw", "resetchannels", f"&{prefix}:*",
                  "-@all", "+publish", "+psubscribe", "+ping")  # fmt: skip
        url = _url(redis, "plain:pw", prefix)
        srv = ServerProcess(tmp_path / "srv", extra_args=["--fanout", url])
        await srv.astart()
        try:
            await eventually(
                lambda: "role of the Redis node" in srv.log_text(), timeout=20, what="said"
            )
            async with connect(srv.ws_url, "plain", user="ann") as a:
                await type_into(a, "hello", pause=0.05)
                await asyncio.sleep(1.0)
                assert await _readyz(srv) == "ok"
        finally:
            await asyncio.to_thread(srv.stop)
    assert srv.log_text().count("role of the Redis node") == 1, srv.log_tail()
    assert "fan-out cannot publish" not in srv.log_text(), srv.log_tail()


async def test_the_documented_minimal_acl_user_serves(tmp_path: Path) -> None:
    """docs/scaleout.md's minimal ACL user ("What Redis must allow"), run as written
    there: two processes on it hear each other, both ready, nothing refused."""
    doc = (Path(__file__).parent.parent / "docs" / "scaleout.md").read_text()
    line = next(line for line in doc.splitlines() if line.startswith("ACL SETUSER palimpsest on"))
    prefix = f"t{uuid.uuid4().hex[:8]}"
    args = line.replace("PASSWORD", "pw").replace("&ft:*", f"&{prefix}:*").split()
    with PrivateRedis(password="s3cret") as redis:
        assert redis.cli(*args) == "OK", args
        url = _url(redis, "palimpsest:pw", prefix)
        procs = [
            ServerProcess(
                tmp_path / f"p{i}", db_path=tmp_path / "shared.db", extra_args=["--fanout", url]
            )
            for i in range(2)
        ]
        try:
            await asyncio.gather(*(p.astart() for p in procs))
            async with (
                connect(procs[0].ws_url, "acl", user="ann") as a,
                connect(procs[1].ws_url, "acl", user="bob") as b,
            ):
                await type_into(a, "through the bus", pause=0.02)
                await eventually(lambda: b.content == "through the bus", timeout=10)
                for p in procs:
                    await eventually(lambda p=p: _is_ok(p), timeout=10, what="ready")
            denied = redis.cli("ACL", "LOG")
        finally:
            for p in procs:
                await asyncio.to_thread(p.stop)
    assert "palimpsest" not in denied, denied  # nothing of the user's refused
    for p in procs:
        assert "fan-out cannot" not in p.log_text(), p.log_tail()
        assert "role of the Redis node" not in p.log_text(), p.log_tail()


def _palimpsest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def _heard(sub: PubSub, until: bytes) -> list[bytes]:
    """What `sub` (psubscribed) got, up to the message `until` (published after the
    commands ran: Redis delivers in the order it executed the publishes)."""
    got: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        # (None also for a subscription's confirmation, which is read and skipped)
        m = await sub.get_message(ignore_subscribe_messages=True, timeout=1)
        if m is None:
            assert asyncio.get_running_loop().time() < deadline, f"nothing after {got!r}"
            continue
        if m["data"] == until:
            return got
        got.append(m["data"])


async def test_the_cli_refuses_to_tell_a_replica_and_says_so(tmp_path: Path) -> None:
    """`palimpsest delete`, `revoke` and `compact --purge-deleted` tell the servers over
    the fan-out with one PUBLISH each. Pointed at a replica (a failover left --fanout on
    the old primary), the PUBLISH was taken and reached no server on the primary, and
    the command said nothing and exited 0. They now ask the node's role first, as the
    servers' publisher does: on a replica they publish nothing and exit 1 with one line
    saying so (the store's change is made). On the primary they publish as before."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    db = tmp_path / "cli.db"
    async with SQLiteStore(db) as store:
        for doc in ("gone", "kept", "purged"):
            d: Doc = Doc()
            text = d.get("content", type=Text)
            text.insert(0, "some text")
            first = d.get_update()
            before = d.get_state()
            del text[0:5]
            second = d.get_update(before)
            await store.append([(doc, [NewEvent("ann", "edit", u) for u in (first, second)])])
    with (
        PrivateRedis() as primary,
        PrivateRedis("--replicaof", "127.0.0.1", str(primary.port)) as replica,
    ):
        assert replica.cli("ROLE").splitlines()[0] == "slave"
        clients = [aioredis.Redis.from_url(n.url) for n in (primary, replica)]
        subs = [c.pubsub() for c in clients]
        try:
            for s in subs:
                await s.psubscribe(f"{prefix}:*")
            runs = {
                "delete": ("delete", "gone", "--yes"),
                "revoke": ("revoke", "ann"),
                "compact": ("compact", "purged", "--before", "2", "--yes", "--purge-deleted"),
            }
            for name, args in runs.items():
                r = _palimpsest(*args, "--db", str(db), "--fanout", _url(replica, "", prefix))
                assert r.returncode == 1, (name, r)
                [line] = r.stderr.splitlines()
                assert f"palimpsest {name}: " in line and "is a replica" in line, line
                assert f"127.0.0.1:{primary.port}" in line, line
            await clients[1].publish(f"{prefix}:end", b"end")
            assert await _heard(subs[1], b"end") == []  # nothing published on the replica
            r = _palimpsest("delete", "kept", "--yes", "--db", str(db), "--fanout",
                            _url(primary, "", prefix))  # fmt: skip
            assert r.returncode == 0 and r.stderr == "", r
            await clients[0].publish(f"{prefix}:end", b"end")
            [told] = await _heard(subs[0], b"end")
            assert told.startswith(b"D"), told
        finally:
            for s in subs:
                await s.aclose()
            for c in clients:
                await c.aclose()
    async with SQLiteStore(db) as store:  # the changes were made all the same
        assert await store.head("gone") == 0 and await store.head("kept") == 0
        assert [r.user for r in await store.revocations().list()] == ["ann"]
        assert (await store.compaction_bases(["purged"]))["purged"][0] == 2
