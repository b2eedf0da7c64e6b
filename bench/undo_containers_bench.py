"""How long an undo of a step that made an element holds the event loop, on a
3,000-paragraph Tiptap-style document (server/undo/containers.py: which of the step's
containers hold others' words and stay).

The document: a ``default`` XmlFragment of paragraphs (``paragraph`` > XmlText), each
written by one of three authors (each its own Yjs client), the two others then typing a
word into it, every fifth with a bold word: real Yjs content, logged as one event per
transaction. Built once and kept (``--cache``); each run works on a copy.

A server runs in this process, on this loop; a probe sleeps 1 ms at a time and notes how
late it wakes (a hold). Alice presses Enter twice in the middle (two paragraphs, two
steps), Bob types in both; then:

- ``live``: Alice's undo of her last Enter, recorded since the room loaded;
- ``reloaded``: the room unloaded (its snapshot carries the stacks) and loaded again,
  Alice's undo of her first Enter: a step from the snapshot's meta.

Each case's longest hold over the undo's request, per run, and the answer's
``kept_containers``.

    .venv/bin/python bench/undo_containers_bench.py [--runs 3] [--paragraphs 3000] [--port N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, XmlElement, XmlFragment, XmlText

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from loop_probe import Probe  # noqa: E402  (bench/loop_probe.py)

from palimpsest.history import yupdate  # noqa: E402
from palimpsest.store.base import NewEvent  # noqa: E402

ACTORS = ("alice", "bob", "carol")
DOC = "tiptap"
PROBE_S = 0.001
WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod".split()


def document_events(paragraphs: int, seed: int = 3) -> tuple[list[NewEvent], int]:
    """The document's events, and how many items its whole state holds."""
    rng = random.Random(seed)
    docs: dict[str, Doc[Any]] = {a: Doc(client_id=2000 + i) for i, a in enumerate(ACTORS)}
    captured: list[tuple[str, bytes]] = []
    for name, d in docs.items():
        d.observe(lambda e, name=name: captured.append((name, e.update)))
    events: list[NewEvent] = []
    ts = 1_700_000_000_000

    def log(author: str) -> None:
        nonlocal ts
        made = [update for who, update in captured if who == author]
        for update in made:
            for other, d in docs.items():
                if other != author:
                    d.apply_update(update)
            meta = {"clients": [2000 + ACTORS.index(author)]}
            events.append(NewEvent(author, "edit", update, meta, ts))
            ts += 1_000
        captured.clear()  # (and what applying them there made)

    for i in range(paragraphs):
        author = ACTORS[i % 3]
        frag = docs[author].get("default", type=XmlFragment)
        line = " ".join(rng.choice(WORDS) for _ in range(8))
        with docs[author].transaction():
            p = frag.children.append(XmlElement("paragraph"))
            p.children.append(XmlText(line))
        log(author)
        for other in ACTORS:
            if other == author:
                continue
            text = docs[other].get("default", type=XmlFragment).children[i].children[0]
            assert isinstance(text, XmlText)
            at = rng.randrange(len(text) + 1)
            with docs[other].transaction():
                text.insert(at, rng.choice(WORDS) + " ")
                if i % 5 == 0:
                    text.format(0, 3, {"bold": True})
            # the docs took in the first author's update as sent: theirs as they go
            log(other)
    # (the structs of the whole state, as the server's room reads it)
    structs, _ = yupdate.decode(docs["alice"].get_update())
    return events, len(structs)


async def build(cache: str, paragraphs: int) -> None:
    from palimpsest.backend import Backend
    from palimpsest.settings import Settings

    t = time.perf_counter()
    events, items = document_events(paragraphs)
    print(f"document: {paragraphs} paragraphs, {len(events)} events, {items} items "
          f"({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    tmp = cache + ".part"
    Path(tmp).unlink(missing_ok=True)  # noqa: ASYNC240 (before the loop is busy)
    async with Backend(Settings(db=tmp)) as backend:
        for i in range(0, len(events), 2000):
            await backend.store.append([(DOC, events[i : i + 2000])])
    os.replace(tmp, cache)


def fragment(s: Any) -> XmlFragment:
    doc: Doc[Any] = s.doc
    got: XmlFragment = doc.get("default", type=XmlFragment)
    return got


async def enter_and_typing(a: Any, b: Any, at: int, tag: str) -> None:
    """Alice's Enter (a paragraph with her words, one step), Bob's word in it."""
    with a.doc.transaction():
        p = fragment(a).children.insert(at, XmlElement("paragraph"))
        p.children.append(XmlText(f"alice {tag}"))
    await a.flush()
    await b.wait_for(lambda: f"alice {tag}" in str(fragment(b).children[at]), timeout=60)
    par = fragment(b).children[at]
    assert isinstance(par, XmlElement)
    text = par.children[0]
    assert isinstance(text, XmlText)
    text.insert(len(text), " bob")
    await b.flush()
    await a.wait_for(lambda: f"alice {tag} bob" in str(fragment(a).children[at]), timeout=60)


async def one_run(cache: str, port: int) -> dict[str, tuple[tuple[float, float], Any]]:
    from conftest import free_port, run_server

    from palimpsest import client
    from palimpsest.settings import Settings

    out: dict[str, tuple[tuple[float, float], Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = f"{tmp}/doc.db"
        shutil.copy(cache, db)
        settings = Settings(
            db=db, port=port or free_port(), unload_after_seconds=0.5, undo_capture_ms=0
        )
        async with run_server(settings) as srv:
            with Probe(PROBE_S) as probe:
                async with (
                    client.connect(srv.ws_url, DOC, user="alice") as a,
                    client.connect(srv.ws_url, DOC, user="bob") as b,
                ):
                    middle = len(fragment(a).children) // 2
                    await enter_and_typing(a, b, middle, "first")
                    await enter_and_typing(a, b, middle + 1, "second")
                    hold, answer = await probe.hold_of("live", a.request({"type": "undo"}))
                    out["live"] = (hold, answer.get("kept_containers"))
                while DOC in srv.backend.rooms:  # noqa: ASYNC110 (no event to wait on)
                    await asyncio.sleep(0.05)
                async with client.connect(srv.ws_url, DOC, user="alice") as a:
                    hold, answer = await probe.hold_of("reloaded", a.request({"type": "undo"}))
                    out["reloaded"] = (hold, answer.get("kept_containers"))
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--paragraphs", type=int, default=3000)
    ap.add_argument("--port", type=int, default=0, help="the server's (default: a free one)")
    ap.add_argument("--cache", default=None, help="the built log (default: in the temp dir)")
    args = ap.parse_args()
    cache = args.cache or str(
        Path(tempfile.gettempdir()) / f"palimpsest-tiptap-{args.paragraphs}.db"
    )
    if not os.path.exists(cache):  # noqa: ASYNC240 (before the loop is busy)
        await build(cache, args.paragraphs)
    holds: dict[str, list[tuple[float, float]]] = {}
    for n in range(args.runs):
        got = await one_run(cache, args.port)
        print(f"run {n + 1} (load average {os.getloadavg()[0]:.1f}): " + ", ".join(
            f"{case} {wall * 1e3:.1f} ms, CPU {cpu * 1e3:.1f} ms (kept {kept})"
            for case, ((wall, cpu), kept) in got.items()
        ), flush=True)  # fmt: skip
        for case, ((wall, cpu), _) in got.items():
            holds.setdefault(case, []).append((wall * 1e3, cpu * 1e3))
    print("longest hold of the loop during the undo, over the runs (wall; CPU):")
    for case, xs in holds.items():
        walls, cpus = [w for w, _ in xs], [c for _, c in xs]
        print(f"  {case:10} {min(walls):7.1f} - {max(walls):7.1f} ms; "
              f"{min(cpus):7.1f} - {max(cpus):7.1f} ms")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
