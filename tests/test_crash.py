"""kill -9 while clients type: nothing that was broadcast is lost, everyone converges."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from conftest import eventually
from pycrdt import Doc, Text
from serverproc import ServerProcess
from yclient import connect as raw_connect

from palimpsest import client
from palimpsest import protocol as P
from palimpsest.store.sqlite import events_in_file


def fold_log(db: Path, doc: str) -> Doc:
    d: Doc = Doc()
    rows = [(e.seq, e.update) for e in events_in_file(db, doc)]
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)), "seqs are gap-free"
    for _, data in rows:
        d.apply_update(data)
    return d


async def type_forever(session: client.Session, mark: str) -> None:
    i = 0
    while True:
        text = session.text()
        text.insert(len(text) if i % 3 else 0, f"{mark}{i % 10}")
        i += 1
        await asyncio.sleep(0.005)


async def test_kill9_while_typing_loses_nothing_broadcast(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    await srv.astart()
    try:
        url = srv.ws_url
        async with (
            client.connect(url, "crash", user="ann", max_backoff=0.5) as ann,
            client.connect(url, "crash", user="ben", max_backoff=0.5) as ben,
        ):
            typers = [
                asyncio.create_task(type_forever(ann, "a")),
                asyncio.create_task(type_forever(ben, "b")),
            ]
            async with raw_connect(url, "crash", "observer") as obs:
                await eventually(lambda: len(obs.content) > 200, what="typing reaches the observer")
                await srv.akill9()
                # what the observer holds was broadcast before the kill
                seen_sv = P.decode_state_vector(obs.doc.get_state())
                seen_text = obs.content
            await asyncio.sleep(0.3)  # typing goes on offline: unsent edits
            for t in typers:
                t.cancel()
            for t in typers:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            logged = fold_log(srv.db_path, "crash")
            logged_sv = P.decode_state_vector(logged.get_state())
            missing = {c: k for c, k in seen_sv.items() if logged_sv.get(c, 0) < k}
            assert not missing, f"broadcast before the kill but not in the log: {missing}"
            assert len(str(logged.get("content", type=Text))) >= len(seen_text)

            await srv.astart()
            await ann.flush(timeout=30)
            await ben.flush(timeout=30)
            await eventually(
                lambda: str(ann.text()) == str(ben.text()), timeout=30, what="converge"
            )
        async with client.connect(url, "crash", user="late") as late:
            assert str(late.text()) == str(ann.text())
        final = fold_log(srv.db_path, "crash")
        assert str(final.get("content", type=Text)) == str(ann.text())
    finally:
        with contextlib.suppress(Exception):
            await srv.astop()
