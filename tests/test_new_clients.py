"""The cap on new Yjs client ids per update (max_new_clients_per_update): one update of
many tiny items under as many new client ids held the event loop for seconds (32,000:
10.9 s) and each new id costs every later edit of the document. Refused with 4400 before
it is read past the cap, its document unchanged, everyone else served; a sync step 2
into an empty document (a whole document brought back into a fresh database) is not
capped. Real server, real sockets."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import websockets
from conftest import closed_with, eventually, free_port, run_server
from pycrdt import Doc, Text
from yclient import connect

from palimpsest import protocol as P
from palimpsest.routes.ws import READ_AHEAD_BYTES
from palimpsest.settings import Settings
from palimpsest.updates import too_many_new_clients

CAP = 16


def _string(s: str) -> bytes:
    b = s.encode()
    return P.write_var_uint(len(b)) + b


def many_clients(n: int, after: tuple[int, int] | None = None, seed: int = 1) -> bytes:
    """A v1 update of `n` new client ids, each inserting one letter into the root text
    "content" right after the previous one's (the first after `after`, or at the start)."""
    ids = random.Random(seed).sample(range(1, 1 << 32), n)
    out = bytearray(P.write_var_uint(n))
    prev = after
    for i, client in enumerate(ids):
        out += P.write_var_uint(1) + P.write_var_uint(client) + P.write_var_uint(0)
        if prev is None:
            out += bytes([0x04]) + P.write_var_uint(1) + _string("content")
        else:
            out += bytes([0x84]) + P.write_var_uint(prev[0]) + P.write_var_uint(prev[1])
        out += _string(chr(ord("a") + i % 26))
        prev = (client, 0)
    return bytes(out + P.write_var_uint(0))


def text_of(update: bytes) -> str:
    doc: Doc = Doc()
    doc.apply_update(update)
    return str(doc.get("content", type=Text))


def settings_for(tmp_path: Path, cap: int | None = CAP) -> Settings:
    s = Settings(db=str(tmp_path / "p.db"), port=free_port())
    if cap is not None:
        s.max_new_clients_per_update = cap
    return s


def test_the_cap_is_judged_before_the_update_is_read_past_it() -> None:
    update = many_clients(CAP + 1)
    assert too_many_new_clients(update, {}, CAP) is not None
    # what follows the header of the first id past the cap is never read: cut short
    # there (in its item's origin), it is refused the same, not read as truncated
    cut = update[:-4]
    assert "max_new_clients_per_update" in (too_many_new_clients(cut, {}, CAP) or "")
    assert too_many_new_clients(many_clients(CAP), {}, CAP) is None
    # ids the document holds already are not new
    assert too_many_new_clients(update, _ids_of(update), CAP) is None


def _ids_of(update: bytes) -> set[int]:
    r = P.Reader(update)
    out = set()
    for _ in range(r.read_var_uint("n")):
        r.read_var_uint("structs")
        out.add(r.read_var_uint("client"))
        r.read_var_uint("clock")
        r.pos += 1  # info
        if r.data[r.pos - 1] == 0x04:
            r.read_var_uint("parent")
            r.read_var_bytes("name")
        else:
            r.read_var_uint("oc")
            r.read_var_uint("ok")
        r.read_var_bytes("s")
    return out


async def test_over_the_cap_refused_doc_unchanged_others_keep_editing(tmp_path: Path) -> None:
    async with (
        run_server(settings_for(tmp_path)) as srv,
        connect(srv.ws_url, "other", "bob") as bob,
        connect(srv.ws_url, "target", "ann") as ann,
    ):
        ann.insert(0, "kept")  # accepted before the refusal: never lost
        await eventually(lambda: srv.backend.rooms.get_loaded("target").seq == 1)  # type: ignore[union-attr]
        room = srv.backend.rooms.get_loaded("target")
        assert room is not None
        before = room.doc.get_update()
        async with websockets.connect(f"{srv.ws_url}/target?user=eve", max_size=None) as eve:
            await eve.send(P.encode_sync_update(many_clients(CAP + 1)))
            code, reason = await closed_with(eve)
        assert code == 4400
        assert f"more than {CAP} new client ids" in reason
        assert room.doc.get_update() == before and room.seq == 1
        # everyone else is served: ann on the same document, bob on another
        ann.insert(4, "!")
        for i in range(5):
            bob.insert(i, "x")
            await asyncio.sleep(0)
        await eventually(lambda: room.seq == 2)
        other = srv.backend.rooms.get_loaded("other")
        await eventually(lambda: other is not None and other.seq >= 1)
        async with connect(srv.ws_url, "target", "carl") as carl:
            assert carl.content == "kept!"
        async with connect(srv.ws_url, "other", "dan") as dan:
            assert dan.content == "xxxxx"


async def test_up_to_the_cap_accepted(tmp_path: Path) -> None:
    async with run_server(settings_for(tmp_path)) as srv:
        update = many_clients(CAP)
        async with connect(srv.ws_url, "d", "eve") as eve:
            await eve.send_raw(P.encode_sync_update(update))
            await eventually(lambda: eve.content == text_of(update))
        async with connect(srv.ws_url, "d", "carl") as carl:
            assert carl.content == text_of(update) and len(carl.content) == CAP


async def test_a_step2_over_the_cap_into_a_document_with_content_is_refused(
    tmp_path: Path,
) -> None:
    async with run_server(settings_for(tmp_path)) as srv:
        async with connect(srv.ws_url, "d", "ann") as ann:
            ann.insert(0, "x")
            await eventually(lambda: srv.backend.rooms.get_loaded("d").seq == 1)  # type: ignore[union-attr]
        async with websockets.connect(f"{srv.ws_url}/d?user=eve", max_size=None) as eve:
            await eve.send(P.encode_sync_step2(many_clients(CAP + 1)))
            code, reason = await closed_with(eve)
        assert code == 4400 and "new client ids" in reason
        async with connect(srv.ws_url, "d", "carl") as carl:
            assert carl.content == "x"


async def test_a_whole_document_brought_back_into_an_empty_one_is_accepted(
    tmp_path: Path,
) -> None:
    """A recovery: a client holding a document of 6,000 client ids (more than the
    default cap of 1,024; 95 kB, read in a worker thread) answers the server's step 1 of
    a fresh database with all of it, no flag needed; the text is exact, and what the
    client typed right after it comes after it."""
    update = many_clients(6000)
    assert len(update) > READ_AHEAD_BYTES
    want = text_of(update)
    async with run_server(settings_for(tmp_path, cap=None)) as srv:
        assert srv.backend.settings.max_new_clients_per_update == 1024
        ydoc: Doc = Doc()
        ydoc.apply_update(update)
        async with connect(srv.ws_url, "back", "ann", ydoc=ydoc) as ann:
            # (connect answered the server's step 1 with the whole document: a step 2),
            # and it goes on editing at once
            ann.insert(len(ann.content), "!")
            await eventually(lambda: srv.backend.rooms.get_loaded("back").seq == 2)  # type: ignore[union-attr]
        async with connect(srv.ws_url, "back", "carl") as carl:
            assert carl.content == want + "!"


async def test_a_large_step_2_that_does_not_decode_into_an_empty_document_is_refused(
    tmp_path: Path,
) -> None:
    """Read ahead in a worker thread (over READ_AHEAD_BYTES, into an empty document),
    an update yrs cannot read was read ahead again and again (43,467 times in 5 s), the
    connection never answered: now it is refused as any update that does not decode."""
    bad = P.write_var_uint(1) + P.write_var_uint(1) + bytes([75]) * (READ_AHEAD_BYTES + 1)
    async with run_server(settings_for(tmp_path, cap=None)) as srv:
        async with websockets.connect(f"{srv.ws_url}/bad?user=eve", max_size=None) as eve:
            await eve.send(P.encode_sync_step2(bad))
            code, reason = await closed_with(eve)
        assert code == 4400, (code, reason)
        assert await srv.backend.store.head("bad") == 0
