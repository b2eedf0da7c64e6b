"""Unmodified `@hocuspocus/provider` clients (2.x and 3.x, pinned in tests/node/package.json
as npm aliases) against `/hocuspocus`, beside plain y-websocket clients on `/ws`, all under
Node.js (tests/node/hocuspocus.mjs), against the real server as a subprocess.

Run:  .venv/bin/pytest -m node tests/test_hocuspocus_node.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Text
from scaleout import cluster, fanout_url, fresh_schema, open_store
from serverproc import REPO_ROOT, ServerProcess
from test_interop_node import NODE_DIR, node_modules

from palimpsest.auth.tokens import LEEWAY, mint
from palimpsest.store.sqlite import SQLiteStore

pytestmark = pytest.mark.node
__all__ = ["node_modules"]  # the session fixture that runs `npm ci` when needed

DRIVER_JS = NODE_DIR / "hocuspocus.mjs"
SECRET = "hocuspocus-node-test-secret-32-bytes-long"


def cli_token(user: str, role: str, docs: str = "hp-*") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "palimpsest", "token", "--user", user, "--role", role,
         "--docs", docs, "--ttl", "600", "--secret", SECRET],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout.strip()


class Driver:
    """One `node hocuspocus.mjs` process holding any number of sockets and providers."""

    def __init__(self, server: ServerProcess, log_path: Path) -> None:
        self.server = server
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log: Any = None

    @property
    def hocuspocus_url(self) -> str:
        return f"ws://{self.server.host}:{self.server.port}/hocuspocus"

    async def __aenter__(self) -> Driver:
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            "node", str(DRIVER_JS), cwd=NODE_DIR, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=self._log, limit=16 << 20,
        )  # fmt: skip
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._log.close()

    async def call(self, op: str, **kw: Any) -> Any:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        wait = kw.get("timeout", 10_000) / 1000 + 10
        line = await asyncio.wait_for(self.proc.stdout.readline(), wait)
        while line and not line.startswith(b'{"ok"'):  # a library's console.log
            line = await asyncio.wait_for(self.proc.stdout.readline(), wait)
        context = (
            f"\n--- driver stderr ({self.log_path}):\n{self.log_path.read_text()[-3000:]}"
            f"\n--- server log tail:\n{self.server.log_tail(30)}"
        )
        assert line, f"{op}: the node driver exited" + context
        reply = json.loads(line)
        assert reply["ok"], f"{op} {kw}: {reply.get('error')}" + context
        return reply["result"]

    async def socket(self, name: str, version: int) -> None:
        await self.call("socket", name=name, version=version, url=self.hocuspocus_url)

    async def open(
        self, name: str, socket: str, doc: str, token: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "open", name=name, socket=socket, doc=doc, token=token, **kw
        )
        return result

    async def yws(self, name: str, doc: str, **params: str) -> None:
        await self.call("yws", name=name, url=self.server.ws_url, doc=doc, params=params)

    async def wait(self, name: str, field: str, **cond: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("wait", name=name, field=field, **cond)
        return result

    async def request(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """An extension request over stateless messages; its JSON result."""
        await self.call("stateless", name=name, payload=json.dumps(body))
        rid = json.dumps(body["id"])
        state = await self.wait(name, "stateless", contains=f'"id":{rid}')
        for payload in state["stateless"]:
            answer: dict[str, Any] = json.loads(payload)
            if answer.get("id") == body["id"]:
                return answer
        raise AssertionError(f"no result for {body}: {state}")


async def events_of(srv: ServerProcess, doc: str) -> list[Any]:
    async with SQLiteStore(str(srv.db_path)) as store:
        return await store.read(doc)


async def stored_text(srv: ServerProcess, doc: str) -> str:
    """The document's text as its log (the SQLite file) holds it."""
    folded: Doc = Doc()
    for ev in await events_of(srv, doc):
        folded.apply_update(ev.update)
    return str(folded.get("content", type=Text))


class StallingProxy:
    """A TCP proxy between the providers and the server whose path can stall, as a mobile
    network's does: `stall()` and every open connection goes half-open (nothing it
    carries arrives, in either direction, and neither end is told); connections opened
    during the stall hang (their handshake waits). `resume()`: new connections go
    through, and the stalled ones are reset (what a NAT that forgot them answers)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.conns: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> StallingProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for down, up, _ in self.conns:
            down.transport.abort()
            up.transport.abort()

    def stall(self) -> None:
        self.flowing.clear()
        for _, _, dead in self.conns:
            dead[0] = True

    def resume(self) -> None:
        for down, up, dead in self.conns:
            if dead[0]:
                down.transport.abort()
                up.transport.abort()
        self.flowing.set()

    async def _accept(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # (the proxy closing)
            await self.flowing.wait()
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:
                down_w.transport.abort()
                return
            dead = [False]
            self.conns.append((down_w, up_w, dead))
            await asyncio.gather(self._pump(down_r, up_w, dead), self._pump(up_r, down_w, dead))

    async def _pump(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, dead: list[bool]
    ) -> None:
        try:
            while data := await r.read(65536):
                if not dead[0]:  # a stalled path loses what it carries
                    w.write(data)
                    await w.drain()
        except (ConnectionError, OSError):
            pass
        if not dead[0]:
            w.close()


async def test_both_provider_versions_share_a_socket_and_converge_with_y_websocket(
    node_modules: Path, tmp_path: Path
) -> None:
    async with ServerProcess(tmp_path / "srv") as srv, Driver(srv, tmp_path / "d.log") as d:
        await d.socket("s2", 2)
        await d.socket("s3", 3)
        # 2.x without a token (open mode: ?user= semantics, anonymous), 2.x and 3.x with
        # a token that, in open mode, names the user
        await d.open("a2", "s2", "hp-a")
        await d.open("b2", "s2", "hp-b", token="bob")
        await d.open("a3", "s3", "hp-a", token="carol")
        await d.open("b3", "s3", "hp-b", token="dave")
        await d.yws("ya", "hp-a", user="yuri")
        await d.yws("yb", "hp-b", user="yvonne")
        for name in ("a2", "b2", "a3", "b3", "ya", "yb"):
            await d.wait(name, "synced")
        assert (await d.wait("b2", "scope", truthy=True))["scope"] == "read-write"
        assert (await d.wait("a3", "scope", truthy=True))["scope"] == "read-write"

        docs = {"a2": "a", "a3": "a", "ya": "a", "b2": "b", "b3": "b", "yb": "b"}
        for name in docs:
            await d.call("insert", name=name, text=f"<{name}>", pos=0)
        texts = {}
        for name, doc in docs.items():
            want = [f"<{n}>" for n, other in docs.items() if other == doc]
            texts[name] = (await d.wait(name, "text", contains=want))["text"]
        for name in ("a2", "a3", "b2", "b3"):
            # every update acknowledged after its commit; 2.x counts exactly, no negatives
            await d.wait(name, "unsynced", equals=0)
        # converged: identical texts per document, whatever the protocol
        for doc in ("a", "b"):
            assert len({texts[n] for n, other in docs.items() if other == doc}) == 1, texts

        # the edits are in the log with their users; the echo to the sender logged nothing
        actors_a = sorted(e.actor for e in await events_of(srv, "hp-a"))
        actors_b = sorted(e.actor for e in await events_of(srv, "hp-b"))
        assert actors_a == ["anonymous", "carol", "yuri"]
        assert actors_b == ["bob", "dave", "yvonne"]


async def test_a_crowded_presence_lets_newcomers_of_both_protocols_in(
    node_modules: Path, tmp_path: Path
) -> None:
    """45 y-websocket users with ~1.6 KB presence states (an avatar data URL): the
    document's presence, ~75 KB, is more than one presence update may change (64 KiB),
    and every newcomer's provider sends the whole snapshot back. That echo is no
    change: nobody is closed, a y-websocket and a @hocuspocus/provider 3.x newcomer sync,
    type, are saved, and see every presence state."""
    crowd = 45
    avatar = "data:image/png;base64," + "iVBORw0KGgo" * 140  # ~1.6 KB with the rest

    def presence(name: str) -> dict[str, Any]:
        return {"user": {"name": name, "color": "#30bced", "avatar": avatar}}

    names = [f"u{i:02}" for i in range(crowd)]
    async with ServerProcess(tmp_path / "srv") as srv, Driver(srv, tmp_path / "d.log") as d:
        for name in names:
            await d.yws(name, "hp-crowd", user=name)
            await d.call("awareness", name=name, state=presence(name))
            await d.wait(name, "synced")
        # the last one sees all the others (each joined after the snapshot passed 64 KiB)
        await d.wait(names[-1], "presence", equals=names[:-1], timeout=20_000)
        await d.yws("ynew", "hp-crowd", user="ynew")
        await d.call("awareness", name="ynew", state=presence("ynew"))
        await d.socket("s3", 3)
        await d.open("hnew", "s3", "hp-crowd", token="hnew")
        await d.call("awareness", name="hnew", state=presence("hnew"))
        everyone = sorted([*names, "ynew", "hnew"])
        for name in ("ynew", "hnew"):
            await d.wait(name, "synced")
            others = [n for n in everyone if n != name]
            await d.wait(name, "presence", equals=others, timeout=20_000)
        await d.call("insert", name="ynew", text="from y-websocket. ")
        await d.call("insert", name="hnew", text="from hocuspocus. ")
        for name in (names[0], "ynew", "hnew"):
            await d.wait(name, "text", contains=["from y-websocket. ", "from hocuspocus. "])
        await d.wait("hnew", "unsynced", equals=0)
        for name in [*names, "ynew", "hnew"]:
            state = await d.call("state", name=name)
            assert state["closes"] == [] and state["connected"], (name, state)
        assert (await d.call("state", name="hnew"))["socketCloses"] == 0
        assert "over the limit" not in srv.log_text()
        async with httpx.AsyncClient(base_url=srv.http_url) as http:
            resp = await http.get("/api/docs/hp-crowd/versions", params={"user": "check"})
        assert resp.status_code == 200, resp.text
        assert "from y-websocket. " in resp.text and "from hocuspocus. " in resp.text


async def test_a_refused_y_websocket_provider_backs_off_and_the_readme_handler_stops_it(
    node_modules: Path, tmp_path: Path
) -> None:
    """y-websocket reconnects after every close, and counts a socket that opened (then
    was refused with 4401) as a success, so it never backed off. The server refuses the
    same request at the handshake once it was refused 3 times in 30 s: the provider then
    counts failed attempts (its back-off). The handler README.md gives stops it at the
    first 44xx close. Another token from the same address is not held back."""
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        await d.call("yws", name="stopped", url=srv.ws_url, doc="hp-stop",
                     params={"token": "not-a-token"}, stopOn44xx=True)  # fmt: skip
        state = await d.wait("stopped", "closes", truthy=True)
        assert state["closes"][0][0] == 4401 and state["shouldConnect"] is False, state
        await d.yws("looping", "hp-door", token="not-a-token")
        state = await d.wait("looping", "retries", atLeast=2, timeout=15_000)
        reasoned = [c for c in state["closes"] if c[0] == 4401]
        assert len(reasoned) >= 3 and "token" in reasoned[0][1], state
        await d.yws("ann", "hp-door", token=cli_token("ann", "write"))
        await d.wait("ann", "synced")
        await d.call("insert", name="ann", text="in")
        assert (await d.call("state", name="ann"))["closes"] == []
        assert len((await d.call("state", name="stopped"))["closes"]) == 1  # never came back


async def test_one_socket_holds_presence_on_more_documents_than_one_connections_share(
    node_modules: Path, tmp_path: Path
) -> None:
    """Each document's provider has a Yjs client id of its own; the share of presence
    clients one connection may hold (8) is per document, not per socket: the 9th
    document opened on one socket was closed as soon as it set its presence."""
    async with ServerProcess(tmp_path / "srv") as srv, Driver(srv, tmp_path / "d.log") as d:
        await d.socket("s3", 3)
        names = [f"p{i}" for i in range(10)]
        for i, name in enumerate(names):
            await d.open(name, "s3", f"hp-many{i}", token="ann")
            await d.wait(name, "synced")
            await d.call("awareness", name=name, state={"user": {"name": name}})
        await d.yws("watch", "hp-many9", user="watch")
        await d.wait("watch", "presence", equals=["p9"])
        await d.call("insert", name="p9", text="still open")
        await d.wait("watch", "text", equals="still open")
        for name in names:
            state = await d.call("state", name=name)
            assert state["closes"] == [] and state["denied"] == [], (name, state)


async def test_read_only_tokens_are_refused_on_write_and_nothing_is_logged(
    node_modules: Path, tmp_path: Path
) -> None:
    write_tok, read_tok = cli_token("writer", "write"), cli_token("reader", "read")
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        await d.socket("s2", 2)
        await d.socket("s3", 3)
        await d.socket("sw", 3)  # a socket has one provider per document name
        await d.open("w", "sw", "hp-ro", token=write_tok)
        await d.open("r2", "s2", "hp-ro", token=read_tok)
        await d.open("r3", "s3", "hp-ro", token=read_tok)
        await d.wait("w", "synced")
        await d.call("insert", name="w", text="hello ")
        for name in ("r2", "r3"):
            await d.wait(name, "text", equals="hello ")
            assert (await d.wait(name, "scope", truthy=True))["scope"] == "readonly"
            await d.call("insert", name=name, text=f"SECRET-{name}", pos=0)
            # frames of one socket are handled in order: once the answer to this request
            # is back, the edit before it was handled (refused)
            hello = await d.request(name, {"type": "hello", "id": name})
            assert hello["ok"] and hello["user"] == "reader" and hello["role"] == "read"
            state = await d.call("state", name=name)
            assert state["hasUnsynced"] is True, "a refused edit is never acknowledged"
            assert state["connected"] is True, "the read-only client stays connected"
            # nor can it undo
            undo = await d.request(name, {"type": "undo", "id": f"u-{name}"})
            assert undo["ok"] is False and undo["code"] == "Forbidden"
        await d.call("insert", name="w", text="MARK")
        for name in ("r2", "r3"):
            text = (await d.wait(name, "text", contains="MARK"))["text"]
            assert f"SECRET-{name}" in text, "the reader keeps its local edit"
        state = await d.wait("w", "unsynced", equals=0)
        assert state["text"] == "hello MARK"
        assert {e.actor for e in await events_of(srv, "hp-ro")} == {"writer"}


async def test_a_provider_renews_its_token_before_it_expires_and_its_document_stays_open(
    node_modules: Path, tmp_path: Path
) -> None:
    """Hocuspocus's own provider, its token valid twelve seconds more: one renews it with
    ``sendToken()`` and keeps editing past the old token's expiry; the other does not,
    and its document is closed (its provider's onClose), its later edit never logged.
    (Four seconds were too few for the set-up on a loaded machine: the token to renew
    had lapsed before the renewal; so were eight counted from before the server and the
    driver started. Twelve, counted from when the sockets are up.)"""
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        await d.socket("sa", 3)
        await d.socket("sb", 3)
        short = mint(SECRET, "ann", "write", ["hp-*"], ttl=-LEEWAY + 12)
        await d.open("renewed", "sa", "hp-renew", token=short)
        await d.open("lapsed", "sb", "hp-lapse", token=short)
        for name in ("renewed", "lapsed"):
            await d.wait(name, "synced")
            await d.call("insert", name=name, text="before ")
            await d.wait(name, "unsynced", equals=0)
        await d.call("renew", name="renewed", token=cli_token("ann", "write"))
        await d.wait("lapsed", "closes", truthy=True, timeout=30_000)
        state = await d.call("state", name="renewed")
        assert state["closes"] == [] and state["connected"] is True, state
        await d.call("insert", name="renewed", text="after")
        await d.wait("renewed", "unsynced", equals=0)
        await d.call("insert", name="lapsed", text="late")
        await asyncio.sleep(0.5)
        assert (await d.call("state", name="lapsed"))["hasUnsynced"] is True
    fold = [ev.actor for ev in await events_of(srv, "hp-renew")]
    assert len(fold) == 2 and set(fold) == {"ann"}
    assert len(await events_of(srv, "hp-lapse")) == 1


@pytest.mark.parametrize("version", [2, 3])
async def test_a_token_callback_carries_a_provider_across_its_tokens_expiry(
    node_modules: Path, tmp_path: Path, version: int
) -> None:
    """An unmodified provider whose ``token`` is a callback, typing once every 0.4 s
    while its first token expires: the server closes the socket (4205), the provider
    reconnects and calls the callback again, and every line reaches the log; the other
    document on the socket re-syncs and loses nothing either. Before, the document alone
    was closed with a close message: a 2.x provider cannot read one (Node died on
    "Can't apply message of unknown type: 7"; a browser's stayed synced while its edits
    were dropped) and a 3.x provider held every later edit, never calling the callback."""
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        fresh = cli_token("ann", "write")
        await d.socket("s", version)
        await d.open("other", "s", "hp-beside", token=fresh)
        short = mint(SECRET, "ann", "write", ["hp-*"], ttl=-LEEWAY + 4)
        await d.open("ann", "s", "hp-expiry", tokens=[short, fresh])
        for name in ("ann", "other"):
            await d.wait(name, "synced")
        lines = [f"line{i};" for i in range(20)]
        for line in lines:  # 8 s: the first token lapses after 4
            await d.call("insert", name="ann", text=line)
            await asyncio.sleep(0.4)
        await d.call("insert", name="other", text="beside;")
        ann = await d.wait("ann", "hasUnsynced", equals=False, timeout=20_000)
        assert ann["text"] == "".join(lines) == await stored_text(srv, "hp-expiry"), ann
        assert ann["tokenCalls"] >= 2 and ann["socketCloses"] >= 1, ann
        assert ann["denied"] == [], ann
        await d.wait("other", "hasUnsynced", equals=False)
        assert await stored_text(srv, "hp-beside") == "beside;"
        assert "token expired" in srv.log_tail(300)
    assert {e.actor for e in await events_of(srv, "hp-expiry")} == {"ann"}


async def test_a_2x_provider_whose_frame_is_refused_is_told_so_and_keeps_its_socket(
    node_modules: Path, tmp_path: Path
) -> None:
    """A 2.x provider cannot read a close message (type 7): its Node process died on
    "Can't apply message of unknown type: 7". A refused frame of its document (a
    presence nested too deep) is answered with PermissionDenied and the reason instead,
    which every provider reads; the socket and its other document go on."""
    async with ServerProcess(tmp_path / "srv") as srv, Driver(srv, tmp_path / "d.log") as d:
        await d.socket("s", 2)
        await d.open("bad", "s", "hp-deep", token="ann")
        await d.open("good", "s", "hp-fine", token="ann")
        for name in ("bad", "good"):
            await d.wait(name, "synced")
        deep: dict[str, Any] = {}
        for _ in range(20):
            deep = {"d": deep}
        await d.call("awareness", name="bad", state=deep)
        bad = await d.wait("bad", "denied", truthy=True)
        assert "nested" in bad["denied"][0] or "deep" in bad["denied"][0], bad
        await d.call("insert", name="good", text="still here")
        good = await d.wait("good", "unsynced", equals=0)
        assert good["socketCloses"] == 0 and good["connected"] is True, good
        assert await stored_text(srv, "hp-fine") == "still here"


REOPENS = ["token_expired", "renewal_refused", "frame_refused", "denied_at_open"]


@pytest.mark.parametrize("how", REOPENS)
async def test_a_document_reopened_by_a_new_auth_message_loses_no_edit(
    node_modules: Path, tmp_path: Path, how: str
) -> None:
    """A document the server closed (its token expired, a renewal refused, a frame
    refused) or refused at open (an expired token), opened again by ``sendToken()`` with
    a fresh token, as docs/hocuspocus.md says: the provider sends no sync step 1 then
    (only when its socket opens), so the server brings the two sides together itself.
    What Ann typed while it was closed (its frames dropped) and just after the new
    token reaches the log, what Bob typed meanwhile reaches Ann, and her provider ends
    synced with nothing unsynced. (The server sent no sync step 1 on reopening, nor on
    the gap Ann's next update left: every later edit of that tab was dropped.)"""
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        await d.socket("sa", 3)
        await d.socket("sb", 3)
        fresh = cli_token("ann", "write")
        ttl = {"token_expired": -LEEWAY + 6, "denied_at_open": -LEEWAY - 60}.get(how, 600)
        first = mint(SECRET, "ann", "write", ["hp-*"], ttl=ttl)
        await d.open("ann", "sa", "hp-reopen", token=first)
        await d.open("bob", "sb", "hp-reopen", token=cli_token("bob", "write"))
        await d.wait("bob", "synced")
        want = ["while-closed;", "after-reopen;", "bob-meanwhile;"]
        if how == "denied_at_open":
            await d.wait("ann", "denied", truthy=True)
        else:
            await d.wait("ann", "synced")
            await d.call("insert", name="ann", text="before;")
            await d.wait("ann", "unsynced", equals=0)
            want.append("before;")
            if how == "token_expired":
                await d.wait("ann", "closes", truthy=True, timeout=30_000)
            elif how == "renewal_refused":
                await d.call("renew", name="ann", token=cli_token("eve", "write"))
                await d.wait("ann", "denied", contains="cannot renew")
            else:  # a presence state nested past max_awareness_depth closes the document
                # (one over max_awareness_state_bytes is dropped, the document kept open)
                deep: dict[str, Any] = {}
                for _ in range(20):
                    deep = {"d": deep}
                await d.call("awareness", name="ann", state=deep)
                await d.wait("ann", "denied", contains="nested")
                await d.call("awareness", name="ann", state={"user": {"name": "ann"}})
        await d.call("insert", name="ann", text="while-closed;")
        await d.call("insert", name="bob", text="bob-meanwhile;")
        await d.wait("bob", "unsynced", equals=0)
        await d.call("renew", name="ann", token=fresh)
        await d.call("insert", name="ann", text="after-reopen;")
        ann = await d.wait("ann", "text", contains=want)
        ann = await d.wait("ann", "unsynced", equals=0)
        bob = await d.wait("bob", "text", contains=want)
        assert ann["synced"] is True and ann["hasUnsynced"] is False, ann
        assert ann["text"] == bob["text"] == await stored_text(srv, "hp-reopen"), (ann, bob)
        # (an expiry closes the socket, 4205: the provider sent the expired token again)
        expired = how == "token_expired"
        assert ann["connected"] is True and ann["socketCloses"] == expired, ann
        assert ann["closes"] == ([4205] if expired else []), ann
        assert {e.actor for e in await events_of(srv, "hp-reopen")} == {"ann", "bob"}


async def test_a_reopened_document_shows_its_user_to_the_others_at_once(
    node_modules: Path, tmp_path: Path
) -> None:
    """Ann's presence leaves the room as the server closes her document (here: a renewal
    refused). Reopened by ``sendToken()``, the server asks her provider for its presence
    (query awareness), so Bob sees her again without her changing it; her provider sends
    it by itself only when it changes, or at its renewal 15 s later. Her answer to that
    query goes before her step 2, which alone brings Bob what she typed while closed: once
    Bob has that text, he has her presence. (Before, he had not.)"""
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        await d.socket("sa", 3)
        await d.socket("sb", 3)
        await d.open("ann", "sa", "hp-presence", token=cli_token("ann", "write"))
        await d.open("bob", "sb", "hp-presence", token=cli_token("bob", "write"))
        for name in ("ann", "bob"):
            await d.wait(name, "synced")
            await d.call("awareness", name=name, state={"user": {"name": name}})
        await d.wait("bob", "presence", equals=["ann"])
        await d.wait("ann", "presence", equals=["bob"])
        await d.call("renew", name="ann", token=cli_token("eve", "write"))
        await d.wait("ann", "denied", contains="cannot renew")
        await d.wait("bob", "presence", equals=[])  # she left with her document
        await d.call("insert", name="ann", text="while-closed;")
        await d.call("renew", name="ann", token=cli_token("ann", "write"))
        bob = await d.wait("bob", "text", contains="while-closed;")
        assert bob["presence"] == ["ann"], bob
        ann = await d.wait("ann", "unsynced", equals=0)
        assert ann["presence"] == ["bob"] and ann["text"] == bob["text"], ann


async def test_a_read_only_document_reopened_gets_the_document_and_its_edits_are_refused(
    node_modules: Path, tmp_path: Path
) -> None:
    """A reader's document closed by the server (a renewal refused) and opened again by
    ``sendToken()`` with a fresh read token: as docs/hocuspocus.md says, the server's
    step 2 brings it what the writer typed meanwhile; the reader's step 2, which holds
    what it typed while closed, is refused as any reader's update: sync status ``0``
    (counted as a ``read_only`` refusal), never logged, no close; the provider's
    unsynced count stays at that one edit (a refused edit is never acknowledged)."""
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        await d.socket("sw", 3)
        await d.socket("sr", 3)
        await d.open("w", "sw", "hp-ro-reopen", token=cli_token("writer", "write"))
        await d.open("r", "sr", "hp-ro-reopen", token=cli_token("reader", "read"))
        await d.wait("w", "synced")
        await d.call("insert", name="w", text="hello;")
        await d.wait("r", "text", equals="hello;")
        assert (await d.wait("r", "scope", truthy=True))["scope"] == "readonly"
        await d.call("renew", name="r", token=cli_token("eve", "read"))
        await d.wait("r", "denied", contains="cannot renew")
        await d.call("insert", name="r", text="SECRET;", pos=0)
        await d.call("insert", name="w", text="meanwhile;")
        await d.wait("w", "unsynced", equals=0)
        before = (await d.call("state", name="r"))["statuses"]
        await d.call("renew", name="r", token=cli_token("reader", "read"))
        await d.wait("r", "text", contains="meanwhile;")
        # frames of one socket are handled in order: the reader's step 2 answered the
        # server's step 1, before the step 2 that brought "meanwhile;"; once this request
        # is answered, that step 2 was handled
        hello = await d.request("r", {"type": "hello", "id": "after"})
        assert hello["ok"] and hello["role"] == "read", hello
        r = await d.call("state", name="r")
        assert r["text"] == "SECRET;hello;meanwhile;", r
        assert r["statuses"][len(before) :] == [0], r  # its step 2 refused, once
        assert r["unsynced"] == 1 and r["hasUnsynced"] is True, r
        assert r["connected"] is True and r["closes"] == [] and r["scope"] == "readonly", r
        assert len(r["denied"]) == 1, r  # the refused renewal only
        w = await d.call("state", name="w")
        assert w["text"] == "hello;meanwhile;" == await stored_text(srv, "hp-ro-reopen"), w
        assert {e.actor for e in await events_of(srv, "hp-ro-reopen")} == {"writer"}
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{srv.http_url}/metrics")).text
        assert 'palimpsest_refused_total{reason="read_only"} 1.0' in metrics, metrics


async def test_a_reader_upgraded_by_send_token_gets_what_it_typed_in(
    node_modules: Path, tmp_path: Path
) -> None:
    """A reader types once (refused: sync status 0, never logged), then its provider is
    given a write token and calls ``sendToken()``: the server asks it for a re-sync,
    whose step 2 brings both that edit and the next one in, and its unsynced count comes
    back to 0. Before, its scope said read-write and it stayed synced, but its next edit,
    past the gap of the refused one, was dropped: nothing asked for the step 2 that
    carries it (the reader's first step 2 had been refused, so one counted as on its
    way), and it never reached the log. (3.x: 2.x providers have no ``sendToken()``.)"""
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        await d.socket("sw", 3)
        await d.socket("sr", 3)
        await d.open("w", "sw", "hp-upgrade", token=cli_token("writer", "write"))
        await d.open("r", "sr", "hp-upgrade", token=cli_token("erin", "read"))
        await d.wait("w", "synced")
        await d.call("insert", name="w", text="base;")
        await d.wait("r", "text", equals="base;")
        assert (await d.wait("r", "scope", truthy=True))["scope"] == "readonly"
        await d.call("insert", name="r", text="typed-read-only;", pos=0)
        await d.wait("r", "statuses", contains="0")  # refused, as a reader's edit is
        await d.call("renew", name="r", token=cli_token("erin", "write"))
        await d.wait("r", "scope", equals="read-write")
        await d.call("insert", name="r", text="after-upgrade;")
        want = ["typed-read-only;", "after-upgrade;", "base;"]
        w = await d.wait("w", "text", contains=want)
        r = await d.wait("r", "unsynced", equals=0)
        assert r["text"] == w["text"] == await stored_text(srv, "hp-upgrade"), (r, w)
        assert r["synced"] is True and r["closes"] == [] and r["denied"] == [], r
    assert {e.actor for e in await events_of(srv, "hp-upgrade")} == {"writer", "erin"}


async def test_bad_tokens_and_bad_names_get_permission_denied_with_a_reason(
    node_modules: Path, tmp_path: Path
) -> None:
    good = cli_token("writer", "write")
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        for v in (2, 3):
            s = f"s{v}"
            await d.socket(s, v)
            await d.open(f"ok{v}", s, "hp-fine", token=good)
            await d.open(f"garbage{v}", s, "hp-x", token="not-a-jwt")
            await d.open(f"other{v}", s, "elsewhere", token=good)
            await d.open(f"name{v}", s, "../etc/passwd", token=good)
            await d.open(f"none{v}", s, "hp-y")
            reasons = {}
            for kind in ("garbage", "other", "name", "none"):
                state = await d.wait(f"{kind}{v}", "denied", truthy=True)
                reasons[kind] = state["denied"][0]
                assert state["scope"] is None
            assert reasons["garbage"] == "the token is damaged or not a token"
            assert "does not grant document 'elsewhere'" in reasons["other"]
            assert "not allowed" in reasons["name"]
            assert "token is required" in reasons["none"]
            # the socket keeps serving the documents it may open
            await d.wait(f"ok{v}", "synced")
            await d.call("insert", name=f"ok{v}", text=f"v{v} ")
            await d.wait(f"ok{v}", "unsynced", equals=0)
        assert {e.actor for e in await events_of(srv, "hp-fine")} == {"writer"}
        assert await events_of(srv, "elsewhere") == []


async def test_a_token_callback_that_throws_is_told_of_the_auth_message(
    node_modules: Path, tmp_path: Path
) -> None:
    """A 3.x provider whose token callback throws (its identity provider down) sends no
    auth message, only its sync step 1; it says so itself (``Failed to get token``), and
    the server's PermissionDenied after it speaks of the auth message's token, the only
    one that counts on /hocuspocus besides ?token=. It said "?token= on the websocket,
    Authorization: Bearer on HTTP", the header not counting here. A fresh token sent then
    opens the document with what was typed meanwhile."""
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        await d.socket("s", 3)
        await d.open("x", "s", "hp-idp", tokens=[None])
        x = await d.wait("x", "denied", contains="no token came")
        assert "idp down" in x["denied"][0], x
        server = x["denied"][1]
        assert "auth message" in server and "'hp-idp'" in server, server
        assert "Authorization" not in server and "HTTP" not in server, server
        await d.call("insert", name="x", text="typed-while-idp-down;")
        await d.call("renew", name="x", token=cli_token("dave", "write"))
        await d.wait("x", "unsynced", equals=0)
        assert await stored_text(srv, "hp-idp") == "typed-while-idp-down;"


async def test_a_refused_edit_closes_its_document_and_the_socket_keeps_the_others(
    node_modules: Path, tmp_path: Path
) -> None:
    """Mallory's provider edits with Alice's Yjs client id (a forgery the server refuses):
    that document is closed with a close message saying why, as Hocuspocus closes a
    document whose message failed, and her other document on the same socket goes on
    syncing, its socket never closed."""
    async with ServerProcess(tmp_path / "srv") as srv, Driver(srv, tmp_path / "d.log") as d:
        await d.socket("sa", 3)
        await d.socket("sm", 3)
        alice = (await d.open("alice", "sa", "hp-owned", token="alice"))["clientID"]
        await d.wait("alice", "synced")
        await d.call("insert", name="alice", text="mine")
        await d.wait("alice", "unsynced", equals=0)
        await d.open("forger", "sm", "hp-owned", token="mallory")
        await d.open("honest", "sm", "hp-other", token="mallory")
        await d.yws("watcher", "hp-other", user="wendy")
        for name in ("forger", "honest", "watcher"):
            await d.wait(name, "synced")
        await d.wait("forger", "text", equals="mine")
        # Yjs itself takes a new client id when it syncs items of its own: forge after
        await d.call("forge", name="forger", clientID=alice)
        await d.call("insert", name="forger", text=" evil")
        closed = await d.wait("forger", "denied", truthy=True)
        assert closed["connected"] is True and closed["closes"] == [], closed
        await d.call("insert", name="honest", text="still here")
        await d.wait("watcher", "text", equals="still here")
        state = await d.wait("honest", "unsynced", equals=0)
        assert state["socketCloses"] == 0 and state["connected"] is True
        assert "belongs to another user" in srv.log_tail(200)
        assert [e.actor for e in await events_of(srv, "hp-owned")] == ["alice"]
        assert [e.actor for e in await events_of(srv, "hp-other")] == ["mallory"]


async def test_undo_and_redo_over_stateless_messages_and_http(
    node_modules: Path, tmp_path: Path
) -> None:
    async with ServerProcess(tmp_path / "srv") as srv, Driver(srv, tmp_path / "d.log") as d:
        await d.socket("s2", 2)
        await d.socket("s3", 3)
        await d.open("alice", "s3", "hp-undo", token="alice")
        await d.open("bob", "s2", "hp-undo", token="bob")
        await d.yws("obs", "hp-undo", user="observer")
        for name in ("alice", "bob", "obs"):
            await d.wait(name, "synced")
        await d.call("insert", name="alice", text="alpha ")
        await d.wait("alice", "unsynced", equals=0)
        assert (await d.request("alice", {"type": "close_group", "id": 1}))["ok"] is True
        await d.call("insert", name="bob", text="bravo ")
        await d.wait("obs", "text", contains=["alpha", "bravo"])

        hello = await d.request("alice", {"type": "hello", "id": "h"})
        assert hello["user"] == "alice" and "undo" in hello["ops"]
        undo = await d.request("alice", {"type": "undo", "id": 2})
        assert undo["ok"] is True and undo["reverts"], undo
        for name in ("alice", "bob", "obs"):
            text = (await d.wait(name, "text", contains="bravo"))["text"]
            await d.wait(name, "text", equals=text.replace("alpha ", ""))
        redo = await d.request("alice", {"type": "redo", "id": 3})
        assert redo["ok"] is True and redo["reverts"] == [undo["seq"]]
        await d.wait("obs", "text", contains=["alpha", "bravo"])

        # bob (2.x provider) undoes over HTTP as the same user: one undo, whichever way
        async with httpx.AsyncClient(base_url=srv.http_url) as http:
            resp = await http.post("/api/docs/hp-undo/undo", params={"user": "bob"})
        assert resp.json()["ok"] is True
        for name in ("alice", "bob", "obs"):
            await d.wait(name, "text", equals="alpha ")
        nothing = await d.request("bob", {"type": "undo", "id": 4})
        assert nothing.pop("can_undo") is False and isinstance(nothing.pop("can_redo"), bool)
        assert nothing == {"type": "result", "id": 4, "ok": False, "reason": "nothing to undo"}
        unknown = await d.request("bob", {"type": "frobnicate", "id": 5})
        assert unknown["ok"] is False and "unknown" in unknown["reason"]
        kinds = [e.kind for e in await events_of(srv, "hp-undo")]
        assert kinds == ["edit", "undo_mark", "edit", "undo", "redo", "undo"]


async def test_providers_resync_after_the_server_is_killed(
    node_modules: Path, tmp_path: Path
) -> None:
    async with ServerProcess(tmp_path / "srv") as srv, Driver(srv, tmp_path / "d.log") as d:
        await d.socket("s2", 2)
        await d.socket("s3", 3)
        names = {"a2": ("s2", "hp-k1"), "b2": ("s2", "hp-k2"),
                 "a3": ("s3", "hp-k1"), "b3": ("s3", "hp-k2")}  # fmt: skip
        for name, (sock, doc) in names.items():
            await d.open(name, sock, doc, token=name)
        for name in names:
            await d.wait(name, "synced")
            await d.call("insert", name=name, text=f"<{name} before>")
        for name in names:
            await d.wait(name, "unsynced", equals=0)  # durable: acknowledged after commit

        await srv.akill9()
        for name in names:
            await d.wait(name, "connected", truthy=False)
            await d.call("insert", name=name, text=f"<{name} offline>")
        await srv.astart()

        for name, (_, doc) in names.items():
            same = [n for n, (_, other) in names.items() if other == doc]
            want = [f"<{n} {when}>" for n in same for when in ("before", "offline")]
            await d.wait(name, "text", contains=want, timeout=20_000)
            if name.endswith("3"):
                await d.wait(name, "unsynced", equals=0, timeout=20_000)
            else:
                # 2.x sends an edit queued offline AND the step 2 that holds it, and counts
                # both acknowledgements against one reset: it ends at -1 against
                # Hocuspocus's own server too. Nothing is unsynced either way.
                await d.wait(name, "hasUnsynced", truthy=False, timeout=20_000)
        # a newcomer through the other protocol loads all of it from the log
        await d.yws("late", "hp-k1", user="late")
        await d.wait("late", "text", contains=["<a2 offline>", "<a3 offline>", "<a3 before>"])
        actors = {e.actor for e in await events_of(srv, "hp-k1")}
        assert actors == {"a2", "a3"}


async def test_offline_edits_sent_before_their_documents_auth_on_reconnect_are_kept(
    node_modules: Path, tmp_path: Path
) -> None:
    """JWT mode, one 3.x socket with two documents, one of whose tokens comes from a
    callback that takes a while (an app fetching it). The server is killed; both type
    while it is down; it starts again. On reconnect the socket sends every provider's
    auth message as soon as it has its token, and what it queued offline once the first
    answer arrives: the slow document's offline edit comes before its auth message. It
    must wait for that auth message (as Hocuspocus's server queues it), not open the
    document without a token: that answered PermissionDenied (``a token is required``)
    to a provider whose token was good, and the edit was dropped."""
    token = cli_token("ann", "write")
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv, \
            Driver(srv, tmp_path / "d.log") as d:  # fmt: skip
        await d.socket("s", 3)
        await d.open("fast", "s", "hp-off-fast", token=token)
        await d.open("slow", "s", "hp-off-slow", token=token, tokenDelay=1500)
        for name in ("fast", "slow"):
            await d.wait(name, "synced")
            await d.call("insert", name=name, text=f"<{name} before>")
            await d.wait(name, "unsynced", equals=0)
        await srv.akill9()
        for name in ("fast", "slow"):
            await d.wait(name, "connected", truthy=False)
            await d.call("insert", name=name, text=f"<{name} offline>")
        await srv.astart()
        for name in ("fast", "slow"):
            state = await d.wait(name, "unsynced", equals=0, timeout=20_000)
            assert state["denied"] == [], (name, state)
            assert state["text"] == f"<{name} before><{name} offline>", state
            assert await stored_text(srv, f"hp-off-{name}") == state["text"], name


async def type_through_a_stall(d: Driver, proxy: StallingProxy, version: int, doc: str) -> str:
    """A provider through `proxy` types a line every 100 ms, before, during and after a
    stall that lasts until the provider gives the connection up; then waits until nothing
    is unsynced. Returns every line typed; asserts the provider has them all and that the
    document was never closed."""
    url = f"ws://127.0.0.1:{proxy.port}/hocuspocus"
    # the provider gives a silent connection up after 1.5 s (30 s by default)
    await d.call("socket", name="s", version=version, url=url,
                 options={"messageReconnectTimeout": 1500})  # fmt: skip
    await d.open("p", "s", doc, token="alice")
    await d.wait("p", "synced")
    lines: list[str] = []

    async def type_line() -> dict[str, Any]:
        lines.append(f"line {len(lines)}\n")
        state: dict[str, Any] = await d.call("insert", name="p", text=lines[-1])
        await asyncio.sleep(0.1)
        return state

    for _ in range(5):
        await type_line()
    await d.wait("p", "hasUnsynced", truthy=False)
    proxy.stall()
    for _ in range(300):  # until the provider gives the connection up
        if not (await type_line())["connected"]:
            break
    else:
        raise AssertionError("the provider never noticed the stalled connection")
    for _ in range(10):  # typed while it reconnects (the connection hangs): queued
        await type_line()
    proxy.resume()
    for _ in range(5):
        await type_line()

    want = "".join(lines)
    state = await d.wait("p", "hasUnsynced", truthy=False, timeout=20_000)
    assert state["text"] == want
    assert state["connected"] is True and state["closes"] == []
    return want


@pytest.mark.parametrize("version", [2, 3])
async def test_every_line_typed_through_a_stalled_connection_is_stored(
    node_modules: Path, tmp_path: Path, version: int
) -> None:
    """A provider types through a network path that stalls (half-open: the lines written
    into it never arrive) until the provider gives the connection up, then comes back.
    On reconnect the provider sends the lines it queued meanwhile ahead of its sync step
    2, and they start past the lost ones: the server drops them (the step 2 carries them)
    instead of closing the document, and every line is stored."""
    async with (
        ServerProcess(tmp_path / "srv") as srv,
        StallingProxy(srv.host, srv.port) as proxy,
        Driver(srv, tmp_path / "d.log") as d,
    ):
        want = await type_through_a_stall(d, proxy, version, "hpgap")
        assert await stored_text(srv, "hpgap") == want
        assert "closing 'hpgap'" not in srv.log_text()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("version", [2, 3])
async def test_every_line_typed_through_a_stalled_connection_is_stored_when_scaled_out(
    node_modules: Path, tmp_path: Path, version: int
) -> None:
    """The same through PostgreSQL + Redis: the provider on one process, a y-websocket
    reader on the other sees every line, and the shared log holds them all."""
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
        StallingProxy(c.procs[0].host, c.procs[0].port) as proxy,
        Driver(c.procs[0], tmp_path / "d.log") as d,
    ):
        await d.call("yws", name="reader", url=c.ws(1), doc="hpgap", params={"user": "r"})
        want = await type_through_a_stall(d, proxy, version, "hpgap")
        await d.wait("reader", "text", equals=want, timeout=20_000)
        async with open_store(store_url) as store:
            folded: Doc = Doc()
            for ev in await store.read("hpgap"):
                folded.apply_update(ev.update)
        assert str(folded.get("content", type=Text)) == want
        assert "closing 'hpgap'" not in c.logs()


@pytest.mark.parametrize("version", [2, 3])
async def test_an_update_past_a_gap_after_the_sync_asks_for_a_resync(
    node_modules: Path, tmp_path: Path, version: int
) -> None:
    """A frame lost on an open connection (the provider never sends one edit): the next
    update starts past it. Rather than closing the document (a 3.x provider would stay
    connected and never open it again; a 2.x provider cannot read a close message and
    throws), the server answers with a sync step 1, and the provider's step 2 carries
    both edits. Its sync status stands for the dropped update: nothing stays unsynced."""
    async with ServerProcess(tmp_path / "srv") as srv, Driver(srv, tmp_path / "d.log") as d:
        await d.socket("s", version)
        await d.open("p", "s", "hp-lost", token="alice")
        await d.yws("watcher", "hp-lost", user="wendy")
        for name in ("p", "watcher"):
            await d.wait(name, "synced")
        await d.call("insert", name="p", text="one ")
        await d.wait("p", "hasUnsynced", truthy=False)
        await d.call("unsent", name="p", text="two ")  # lost on the way
        await d.call("insert", name="p", text="three ")  # past the gap
        await d.wait("watcher", "text", equals="one two three ")
        state = await d.wait("p", "unsynced", equals=0)
        assert state["closes"] == [] and state["socketCloses"] == 0
        assert await stored_text(srv, "hp-lost") == "one two three "
        assert "asking" in srv.log_tail(200) and "re-sync" in srv.log_tail(200)
