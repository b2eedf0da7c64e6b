"""A JavaScript Yjs client that inserts between the two UTF-16 halves of an emoji (or
deletes one half) made an update yrs cannot apply faithfully: the server's document and
its own encoding disagreed ("a🌍Xb" live, "a🌍bX" in its snapshot, another text after a
restart), verify found the snapshot and the log apart, and a Python client's later edits
were silently lost. Such an update is refused with 4400 before it is logged; everyone
else goes on (server.surrogates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import websockets
from conftest import eventually
from pycrdt import Doc, Text
from serverproc import ServerProcess
from test_hocuspocus import Raw
from test_interop_node import NodeClient, node_modules
from test_ops import scrape, val
from yclient import connect

from palimpsest import hocuspocus as H
from palimpsest import protocol as P
from palimpsest.store import open_store
from palimpsest.store.base import NewEvent
from palimpsest.surrogates import SPLIT_KEY
from palimpsest.updates import astral_starts, split_points

__all__ = ["node_modules"]  # the session fixture that runs `npm ci` when needed


async def _head(srv: ServerProcess, doc: str) -> str:
    async with httpx.AsyncClient(base_url=srv.http_url) as http:
        r = await http.get(f"/api/docs/{doc}/versions/head", params={"user": "reader"})
    r.raise_for_status()
    value: str = r.json()["roots"]["content"]["value"]
    return value


async def test_an_update_that_splits_an_emoji_is_refused(
    node_modules: Path, tmp_path: Path
) -> None:
    async with ServerProcess(tmp_path / "server") as srv:
        alice = NodeClient(srv, "sdoc", "alice", tmp_path / "alice.log")
        bob = NodeClient(srv, "sdoc", "bob", tmp_path / "bob.log")
        try:
            await alice.start()
            await alice.connect()
            await alice.call("insert", pos=0, text="a🌍b")  # UTF-16: a, 🌍 (2 units), b
            await eventually(lambda: _head(srv, "sdoc"), what="alice's text stored")
            assert await _head(srv, "sdoc") == "a🌍b"
            async with connect(srv.ws_url, "sdoc", "bot") as bot:  # a pycrdt client
                await bob.start()
                await bob.connect()
                # between the emoji's halves: refused, nothing logged or relayed
                await alice.call("insert", pos=2, text="X")
                closed = await alice.call("waitClosed", code=4400)
                assert "splits a character past U+FFFF" in closed["reason"], closed
                # one half deleted: refused too
                await bob.call("delete", pos=1, len=1)
                closed = await bob.call("waitClosed", code=4400)
                assert "splits a character past U+FFFF" in closed["reason"], closed
                # the Python client goes on, and its edits are kept (they were lost)
                bot.text += "!"  # (pycrdt's insert(len, ...) after an emoji names a
                # right origin past the text's end, which the server refuses as a gap)
                await eventually(lambda: _ends_with(srv, "sdoc", "!"), what="the bot's edit stored")
                assert await _head(srv, "sdoc") == "a🌍b!"
                assert bot.content == "a🌍b!"
                assert bot.close_code is None
        finally:
            await alice.aclose()
            await bob.aclose()
        # the state persisted with the snapshot (or read from the document) refuses the
        # same after a restart, and an edit beside the emoji is fine
        await srv.astop()
        await srv.astart()
        async with connect(srv.ws_url, "sdoc", "carol") as carol:
            assert carol.content == "a🌍b!"
            emoji_clock = _clock_of_emoji(carol.doc)
            client, clock = emoji_clock
            splitter = _insert_after(client, clock, "Y")  # as alice's client made it
            async with connect(srv.ws_url, "sdoc", "mallory") as mallory:
                await mallory.send_raw(P.encode_sync_update(splitter))
                await eventually(lambda: mallory.close_code is not None, what="refused")
                assert mallory.close_code == 4400, mallory.close_reason
            carol.text += "Z"  # (see the bot's "!")
            await eventually(lambda: _ends_with(srv, "sdoc", "a🌍b!Z"), what="carol's Z")
            assert carol.close_code is None
        assert await _head(srv, "sdoc") == "a🌍b!Z"


async def _ends_with(srv: ServerProcess, doc: str, tail: str) -> bool:
    try:
        return (await _head(srv, doc)).endswith(tail)
    except httpx.HTTPError:
        return False


def _clock_of_emoji(doc: Doc[Any]) -> tuple[int, int]:
    [(client, [clock])] = astral_starts(doc.get_update()).items()
    return client, clock


def _insert_after(client: int, clock: int, text: str) -> bytes:
    """An item whose left origin is the emoji's first half and right origin its second,
    from a client of its own: what Yjs sends for `ytext.insert(2, text)` into "a🌍b"."""
    origin = P.write_var_uint(client) + P.write_var_uint(clock)
    right = P.write_var_uint(client) + P.write_var_uint(clock + 1)
    item = b"\xc4" + origin + right + P.write_var_string(text)
    return b"\x01\x01" + P.write_var_uint(4242) + b"\x00" + item + b"\x00"


async def test_a_refused_update_sent_again_on_every_reconnect_is_logged_once(
    node_modules: Path, tmp_path: Path
) -> None:
    """y-websocket 3.0 keeps the refused update in its Y.Doc, reconnects at once (the
    socket was accepted, so it does not back off) and sends it again in every sync step
    2: each reconnect is refused, and was logged in three INFO lines (connect, closing
    with, disconnect): 3,400 lines in minutes from one tab. Now the first is said, the
    repeats go to DEBUG, and their count is said (at the latest when the server stops)."""
    async with ServerProcess(tmp_path / "server") as srv:
        alice = NodeClient(srv, "storm", "alice", tmp_path / "alice.log")
        try:
            await alice.start()
            await alice.connect()
            await alice.call("insert", pos=0, text="a🌍b")
            await eventually(lambda: _head(srv, "storm"), what="alice's text stored")
            await alice.call("insert", pos=2, text="X")  # between the emoji's halves

            async def refused(at_least: int) -> float | None:
                m = await scrape(srv.http_url)
                n = val(m, "palimpsest_disconnects_total", cause="protocol_error")
                return n if n >= at_least else None

            await eventually(lambda: refused(20), timeout=30, what="20 reconnects refused")
            closed = await alice.call("waitClosed", code=4400)  # each one still refused
            assert "splits a character past U+FFFF" in closed["reason"], closed
        finally:
            await alice.aclose()
        total = await refused(20)
        assert total is not None
        await srv.astop()  # (says the count of the repeats held back)
    lines = [line for line in srv.log_text().splitlines() if "storm" in line]
    refusals = [line for line in lines if "closing with 4400" in line]
    assert len(refusals) == 1, "\n".join(lines[:20])
    assert sum("palimpsest.ws: disconnect " in line for line in lines) == 1, "\n".join(lines)
    assert sum("palimpsest.ws: connect " in line for line in lines) == 1, "\n".join(lines)
    said = [line for line in lines if "more connections of alice" in line]
    assert said, "\n".join(lines[-10:])
    held = sum(int(line.split(" more connections")[0].rsplit(" ", 1)[1]) for line in said)
    assert held == total - 1, said
    assert all("splits a character past U+FFFF" in line for line in said), said
    assert len(lines) <= 10, "\n".join(lines)


async def test_a_hocuspocus_document_refused_again_on_every_reopen_is_logged_once(
    tmp_path: Path,
) -> None:
    """The same on /hocuspocus: a document closed for an update splitting an emoji is
    opened again by its provider with an auth message (sendToken(), or its socket's
    reconnect) and the update comes again, refused again. Each close was logged at INFO
    (closing, and the document's open, reopen and close lines); now the first is said,
    the repeats go to DEBUG, counted, and each close message still comes."""

    def sync(sub: int, payload: bytes) -> bytes:
        return bytes([sub]) + P.write_var_bytes(payload)

    async with ServerProcess(tmp_path / "server") as srv:
        url = srv.ws_url.rsplit("/ws", 1)[0] + "/hocuspocus"
        splitter = _insert_after(77, 1, "X")
        closed: list[H.Frame] = []

        async def refused(raw: Raw, n: int) -> None:
            await raw.send("hstorm", H.SYNC, sync(P.SYNC_UPDATE, splitter))
            await eventually(lambda: len(raw.refusals("hstorm")) >= n, what=f"refusal {n}")

        async with websockets.connect(url) as ws:
            raw = Raw(ws)
            await raw.auth("hstorm", "alice")
            await raw.send("hstorm", H.SYNC, sync(P.SYNC_STEP1, b"\x00"))
            d: Doc[Any] = Doc(client_id=77)
            d.get("content", type=Text).insert(0, "a🌍b")
            await raw.send("hstorm", H.SYNC, sync(P.SYNC_UPDATE, d.get_update()))
            await eventually(lambda: raw.of("hstorm", H.SYNC_STATUS), what="the text saved")
            await refused(raw, 1)
            for n in range(2, 16):
                await raw.auth("hstorm", "alice")  # (sendToken(): opens it again)
                await refused(raw, n)
            closed += raw.refusals("hstorm")
            raw.task.cancel()
        for _ in range(5):  # (its socket reconnected: the provider's auth and sync)
            async with websockets.connect(url) as ws:
                raw = Raw(ws)
                await raw.auth("hstorm", "alice")
                await raw.send("hstorm", H.SYNC, sync(P.SYNC_STEP1, b"\x00"))
                await refused(raw, 1)
                closed += raw.refusals("hstorm")
                raw.task.cancel()
        assert len(closed) == 20  # each one still refused, with its reason
        assert all(b"splits a character past U+FFFF" in f.body for f in closed), closed
        m = await scrape(srv.http_url)
        assert val(m, "palimpsest_refused_total", reason="update_rejected") == 20, m
        await srv.astop()  # (says the count of the repeats held back)
    lines = [line for line in srv.log_text().splitlines() if "hstorm" in line]
    refusals = [line for line in lines if "closing 'hstorm'" in line]
    assert len(refusals) == 1, "\n".join(lines[:20])
    said = [line for line in lines if "more connections of alice" in line]
    assert said, "\n".join(lines[-10:])
    held = sum(int(line.split(" more connections")[0].rsplit(" ", 1)[1]) for line in said)
    assert held == 19, said
    assert all("splits a character past U+FFFF" in line for line in said), said
    assert len(lines) <= 10, "\n".join(lines)


def test_where_an_update_splits_and_where_emoji_begin() -> None:
    doc: Doc[Any] = Doc(client_id=7)
    text = doc.get("content", type=Text)
    text += "a🌍b😀"
    assert astral_starts(doc.get_update()) == {7: [1, 4]}
    assert astral_starts(b"\x00\x00") == {}
    splitter = _insert_after(7, 1, "X")
    assert split_points(splitter) == [(7, 2), (7, 2)]
    sv = doc.get_state()
    del text[0:1]
    deletion = doc.get_update(sv)
    assert split_points(deletion) == [(7, 0), (7, 1)]


def _old_log() -> tuple[bytes, bytes]:
    """What an old version (0732fb1) took into a log: "a😀b" by client 7, then client
    4242's "X" between the emoji's halves (accepted then)."""
    doc: Doc[Any] = Doc(client_id=7)
    doc.get("content", type=Text).insert(0, "a😀b")  # UTF-16 clocks: a 0, 😀 1-2, b 3
    return doc.get_update(), _insert_after(7, 1, "X")


async def test_a_character_split_before_the_refusal_can_be_edited_beside(
    node_modules: Path, tmp_path: Path
) -> None:
    """A document an old version wrote may hold a character split already. A JavaScript
    client that never splits one names that boundary all the same when it types beside
    it (its keystroke's right origin is the second half). That is the document's split,
    not the update's: refused, the client was cut off for good and its text lost (10 of
    60 keystrokes beside such a character). A split the update makes is still refused."""
    base, splitter = _old_log()
    srv = ServerProcess(tmp_path / "server")
    async with open_store(f"sqlite:///{srv.db_path}", migrate=True) as store:
        # "log": its events replayed at the load; "snap": a snapshot without this
        # feature's meta (as the old version wrote it, migrate keeps it), nothing after it
        old = [NewEvent("alice", "edit", base), NewEvent("bob", "edit", splitter)]
        await store.append([("log", old), ("snap", old)])
        state: Doc[Any] = Doc()
        state.apply_update(base)
        state.apply_update(splitter)
        await store.put_snapshot("snap", 2, state.get_update(), {})
    async with srv:
        for doc in ("log", "snap"):
            await _edit_beside_the_old_split(srv, doc, tmp_path)
        # the boundaries the document has, kept in the snapshot's meta: after a restart
        # (the snapshots taken when the rooms unloaded) the same holds
        await srv.astop()
        async with open_store(f"sqlite:///{srv.db_path}") as store:
            for doc in ("log", "snap"):
                snap = await store.latest_snapshot(doc)
                assert snap is not None and snap.meta[SPLIT_KEY] == {"7": [2]}, snap
        await srv.astart()
        for doc in ("log", "snap"):
            await _edit_beside_the_old_split(srv, doc, tmp_path)


async def _edit_beside_the_old_split(srv: ServerProcess, doc: str, tmp_path: Path) -> None:
    carol = NodeClient(srv, doc, "carol", tmp_path / f"carol-{doc}.log")
    dave = NodeClient(srv, doc, "dave", tmp_path / f"dave-{doc}.log")
    try:
        await carol.start()
        await carol.connect()
        # Yjs shows each half of the split emoji as U+FFFD, the second after the "X" that
        # split it ("a\ufffdbX\ufffd": yrs wrote the halves as the emoji and an empty item)
        text = (await carol.call("state"))["text"]
        first = text.index("\ufffd")
        second = text.index("\ufffd", first + 1)
        assert "X" in text[first:second], text
        await carol.call("insert", pos=second, text="Y")  # right origin: the second half
        await carol.call("insert", pos=first + 1, text="Z")  # left origin: the first half
        want = f"{text[: first + 1]}Z{text[first + 1 : second]}Y{text[second:]}"
        assert (await carol.call("state"))["text"] == want
        await eventually(lambda: _count(srv, doc, "Y", text.count("Y") + 1), what="Y stored")
        await eventually(lambda: _count(srv, doc, "Z", text.count("Z") + 1), what="Z stored")
        emoji = (await _head(srv, doc)).count("😀")  # (yrs shows the split one whole)
        # a new emoji split by the update: refused as before
        await dave.start()
        await dave.connect()
        await dave.call("waitText", equals=want)
        await carol.call("insert", pos="end", text="😀")
        await dave.call("waitText", equals=want + "😀")
        await carol.call("insert", pos=len(want) + 1, text="!")  # between its halves (UTF-16)
        closed = await carol.call("waitClosed", code=4400)
        assert "splits a character past U+FFFF" in closed["reason"], closed
        dave_state = await dave.call("state")
        assert dave_state["connected"], dave_state
        assert "!" not in dave_state["text"]
        assert "!" not in await _head(srv, doc)
        assert (await _head(srv, doc)).count("😀") == emoji + 1
        await dave.call("delete", pos=len(want), len=2)  # the new emoji, whole
        await eventually(lambda: _count(srv, doc, "😀", emoji), what="dave's deletion")
        assert (await dave.call("state"))["connected"]
    finally:
        await carol.aclose()
        await dave.aclose()


async def _count(srv: ServerProcess, doc: str, part: str, n: int) -> bool:
    try:
        return (await _head(srv, doc)).count(part) == n
    except httpx.HTTPError:
        return False


def _split_points_read(monkeypatch: Any) -> list[int]:
    from palimpsest import surrogates

    read: list[int] = []

    def counted(update: bytes) -> list[tuple[int, int]]:
        read.append(len(update))
        return split_points(update)

    monkeypatch.setattr(surrogates, "split_points", counted)
    return read


def test_a_document_without_emoji_is_not_read_for_split_points(monkeypatch: Any) -> None:
    """A snapshot written before the split points were kept: the document is read once
    for its characters past U+FFFF, and, with none (a book typed in ASCII), not parsed
    item by item for where it is split (1.1-1.4 s in one piece on a 1.26 M-character
    book, docs/history.md): none can be inside one. The same points either way."""
    from types import SimpleNamespace

    from palimpsest.surrogates import Starts, _add_splits

    read = _split_points_read(monkeypatch)
    for text_of in (lambda i: f"word {i} ", lambda i: f"w{i} 🌍 "):
        read.clear()
        a: Doc[Any] = Doc(client_id=1)
        b: Doc[Any] = Doc(client_id=2)
        ta, tb = a.get("t", type=Text), b.get("t", type=Text)
        for i in range(50):  # two writers typing into each other's words: items split
            ta.insert(len(ta) // 2, text_of(i))
            b.apply_update(a.get_update(b.get_state()))
            tb.insert(len(tb) // 3, text_of(i))
            a.apply_update(b.get_update(a.get_state()))
        starts = Starts(SimpleNamespace(snapshot_meta={}, doc=a))  # type: ignore[arg-type]
        high, split = starts.known()
        parsed = len(read)  # the whole document parsed for its split points
        whole = a.get_update()
        expected_high = {c: set(v) for c, v in astral_starts(whole).items()}
        expected_split: dict[int, set[int]] = {}
        _add_splits(expected_split, expected_high, whole)
        assert (high, split) == (expected_high, expected_split)
        if "🌍" in str(ta):
            assert high and parsed == 1  # (as before)
        else:
            assert high == {} and split == {} and parsed == 0
