"""The attribution index folded by Yjs ids (attribution_ids) answers exactly what the fold
by text deltas answers, and what the document says, on concurrent editing sessions of
real pycrdt documents; it hands over to the fold by deltas at updates it does not
follow, and its owner builds it again by deltas when the ids stop mirroring the text."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

import palimpsest.history.attribution_ids as I
from palimpsest.backend import Backend
from palimpsest.history import attribution_codec as codec
from palimpsest.history import history_of, yupdate
from palimpsest.history.attribution import AttributionIndex
from palimpsest.protocol import decode_state_vector
from palimpsest.settings import Settings
from palimpsest.store.base import Event, NewEvent

ROOTS = ("content", "notes")
ALPHABET = "abcxyz é→😀\n"


def _bounds(t: Text) -> list[int]:
    """The byte positions between characters (an embed counts one)."""
    out = [0]
    for chunk, _attrs in t.diff():
        if isinstance(chunk, str):
            for ch in chunk:
                out.append(out[-1] + len(ch.encode()))
        else:
            out.append(out[-1] + 1)
    return out


def _edit(rng: random.Random, doc: Doc[Any]) -> None:
    if rng.random() < 0.1:
        doc.get("meta", type=Map)[f"k{rng.randrange(3)}"] = rng.randrange(100)
        return
    t = doc.get("content" if rng.random() < 0.8 else "notes", type=Text)
    with doc.transaction():
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            b = _bounds(t)
            n = len(b) - 1
            r = rng.random()
            if n and r < 0.35:
                i = rng.randrange(n)
                del t[b[i] : b[min(n, i + rng.randint(1, 6))]]
            elif r < 0.4:
                t.insert_embed(b[rng.randint(0, n)], {"img": rng.randrange(9)})
            elif n and r < 0.45:
                i = rng.randrange(n)
                t.format(b[i], b[min(n, i + rng.randint(1, 6))], {"bold": True})
            else:
                word = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 5)))
                t.insert(b[rng.randint(0, n)], word)


def session(
    seed: int, steps: int = 400, edit: Callable[[random.Random, Doc[Any]], None] | None = None
) -> tuple[list[Event], list[dict[str, str]]]:
    """Three clients editing at once through a server, each seeing the others' updates
    late: the server's log (in the order updates reached it) and its texts at each seq.
    Each client's edit is `edit`'s (default: typing, deleting, embeds and bold)."""
    edit = edit or _edit
    rng = random.Random(seed)
    clients: list[Doc[Any]] = [Doc(client_id=rng.choice([5, 10, 99]) * 1000 + i) for i in range(3)]
    outbox: list[list[bytes]] = [[] for _ in clients]
    inbox: list[list[bytes]] = [[] for _ in clients]
    remote = [False] * 3
    for i, d in enumerate(clients):
        d.observe(lambda e, i=i: None if remote[i] else outbox[i].append(e.update))
    server: Doc[Any] = Doc()
    log: list[Event] = []
    texts: list[dict[str, str]] = [dict.fromkeys(ROOTS, "")]
    for _ in range(steps):
        i = rng.randrange(3)
        r = rng.random()
        if r < 0.6:
            edit(rng, clients[i])
        elif r < 0.85 and outbox[i]:
            update = outbox[i].pop(0)
            server.apply_update(update)
            log.append(Event("d", len(log) + 1, 0, f"u{i}", "edit", update, {}))
            texts.append({n: str(server.get(n, type=Text)) for n in ROOTS})
            for j in range(3):
                if j != i:
                    inbox[j].append(update)
        elif inbox[i]:
            k = rng.randint(1, len(inbox[i]))
            remote[i] = True
            for update in inbox[i][:k]:
                clients[i].apply_update(update)
            remote[i] = False
            del inbox[i][:k]
    return log, texts


def _same_answers(a: AttributionIndex, b: AttributionIndex, texts: list[dict[str, str]],
                  rng: random.Random) -> None:  # fmt: skip
    n = len(texts) - 1
    for seq in range(n + 1):
        for name in ROOTS:
            assert a.text_at(name, seq).replace("\ufffc", "") == texts[seq][name], (seq, name)
            assert a.blame(name, seq) == b.blame(name, seq), (seq, name)
    for _ in range(30):
        x, y = sorted(rng.randint(0, n) for _ in range(2))
        for name in ROOTS:
            assert a.diff(name, x, y) == b.diff(name, x, y), (x, y, name)


def test_concurrent_sessions_fold_by_ids_as_by_deltas(monkeypatch: Any) -> None:
    resolved = []
    resolve = I.IdFold._resolve

    def counted(self: I.IdFold, *args: Any) -> Any:
        resolved.append(1)
        return resolve(self, *args)

    monkeypatch.setattr(I.IdFold, "_resolve", counted)
    for seed in range(25):
        log, texts = session(seed)
        by_ids = AttributionIndex("d", list(ROOTS))
        by_ids.fold(log)
        by_deltas = AttributionIndex("d", list(ROOTS), by_ids=False)
        by_deltas.fold(log)
        assert by_ids.by_ids == len(log) and by_deltas.by_ids == 0
        assert by_ids.verify() and not by_ids.broken
        _same_answers(by_ids, by_deltas, texts, random.Random(seed))
    # concurrent inserts at one place were there to order, many times
    assert len(resolved) > 100


def test_a_fold_in_slices_equals_one_fold() -> None:
    log, texts = session(3)
    whole = AttributionIndex("d", list(ROOTS))
    whole.fold(log)
    sliced = AttributionIndex("d", list(ROOTS))
    for i in range(0, len(log), 7):
        sliced.fold(log[i : i + 7])
    assert sliced.by_ids == len(log)
    _same_answers(sliced, whole, texts, random.Random(3))


def _text_log(updates: list[tuple[bytes, str]]) -> list[Event]:
    return [Event("d", i + 1, 0, a, "edit", u, {}) for i, (u, a) in enumerate(updates)]


def _server_texts(log: list[Event], name: str = "content") -> list[str]:
    server: Doc[Any] = Doc()
    out = [""]
    for ev in log:
        server.apply_update(ev.update)
        out.append(str(server.get(name, type=Text)))
    return out


def _capture(doc: Doc[Any]) -> list[bytes]:
    got: list[bytes] = []
    doc.observe(lambda e: got.append(e.update))
    return got


def test_updates_it_does_not_follow_hand_over_to_deltas() -> None:
    a: Doc[Any] = Doc(client_id=1)
    ta = a.get("content", type=Text)
    ua = _capture(a)
    ta.insert(0, "hello")
    ta.insert(5, " world")
    # a nested text deleted with its map entry: its items are sent as GC structs
    b: Doc[Any] = Doc(client_id=2)
    b.apply_update(a.get_update())
    m = b.get("meta", type=Map)
    m["note"] = Text("gone soon")
    m["note"] = 1
    gc_state = b.get_update(a.get_state())
    with pytest.raises(yupdate.Unsupported, match="GC"):
        yupdate.decode(gc_state)
    ta.insert(0, ">> ")
    log = _text_log([(ua[0], "a"), (ua[1], "a"), (gc_state, "b"), (ua[2], "a")])
    index = AttributionIndex("d", ["content"])
    index.fold(log)
    assert index.by_ids == 2 and not index.broken
    texts = _server_texts(log)
    for seq, text in enumerate(texts):
        assert index.text_at("content", seq) == text
    assert index.blame("content", 4) == [
        {"text": ">> ", "actor": "a", "seq": 4},
        {"text": "hello", "actor": "a", "seq": 1},
        {"text": " world", "actor": "a", "seq": 2},
    ]


def test_an_update_that_arrives_before_its_dependency() -> None:
    a: Doc[Any] = Doc(client_id=1)
    ta = a.get("content", type=Text)
    ua = _capture(a)
    ta.insert(0, "abc")
    ta.insert(3, "def")  # depends on the first
    ta.insert(0, "0")
    log = _text_log([(ua[1], "a"), (ua[0], "a"), (ua[2], "a")])
    index = AttributionIndex("d", ["content"])
    index.fold(log)
    assert index.by_ids == 0
    texts = _server_texts(log)
    assert texts == ["", "", "abcdef", "0abcdef"]
    for seq, text in enumerate(texts):
        assert index.text_at("content", seq) == text


def test_a_snapshot_start_folds_by_deltas() -> None:
    a: Doc[Any] = Doc(client_id=1)
    ta = a.get("content", type=Text)
    ta.insert(0, "base")
    state = a.get_update()
    ua = _capture(a)
    ta.insert(4, "!")
    index = AttributionIndex("d", ["content"])
    index.start_from(10, state)
    index.fold([Event("d", 11, 0, "a", "edit", ua[0], {})])
    assert index.by_ids == 0
    assert index.blame("content", 11) == [
        {"text": "base", "actor": None, "seq": 10},  # by nobody known
        {"text": "!", "actor": "a", "seq": 11},
    ]


def test_decoded_lengths_add_up_to_the_state_vector() -> None:
    """Every kind of content pycrdt writes: the clock ranges the reader finds are
    contiguous per client and end where the document's state vector says."""
    doc: Doc[Any] = Doc(client_id=42)
    updates = _capture(doc)
    t = doc.get("content", type=Text)
    t.insert(0, "héllo 😀 wörld")
    t.insert_embed(3, {"k": [1, 2.5, None, True, "s", {"n": -7}]})
    t.format(1, 4, {"bold": True, "size": 12})
    del t[4:12]  # "llo 😀", between characters
    m = doc.get("meta", type=Map)
    m["n"] = 1
    m["bytes"] = b"\x00\x01"
    m["nested"] = Map({"x": Array([1, 2])})
    m["nested"]["x"].append("y")
    m["text"] = Text("inner")
    m["doc"] = Doc()
    doc.get("list", type=Array).extend([1, "two", 3.0, -4, 2**40])
    ends: dict[int, int] = {}
    kinds = set()
    for u in updates:
        structs, deletes = yupdate.decode(u)
        for s in structs:
            assert s.clock == ends.get(s.client, 0)
            ends[s.client] = s.clock + s.length
            kinds.add(s.kind)
        for client, clock, length in deletes:
            assert clock + length <= ends[client]
    assert kinds >= {yupdate.STRING, yupdate.EMBED, yupdate.FORMAT, yupdate.ANY,
                     yupdate.TYPE, yupdate.SUBDOC}  # fmt: skip
    # binary content, as Yjs writes a Uint8Array into an array (pycrdt writes it as Any):
    # one client, one struct (client 5, clock 0, root "bin"), no deletions
    binary = bytes([1, 1, 5, 0, yupdate.BINARY, 1, 3, *b"bin", 2, 0, 1, 0])
    other: Doc[Any] = Doc()
    other.apply_update(binary)
    assert list(other.get("bin", type=Array)) == [b"\x00\x01"]
    [s] = yupdate.decode(binary)[0]
    assert (s.client, s.clock, s.length, s.parent, s.kind) == (5, 0, 1, "bin", yupdate.BINARY)
    structs, _ = yupdate.decode(doc.get_update())
    state: dict[int, int] = {}
    for s in structs:
        state[s.client] = s.clock + s.length
    assert state == ends == decode_state_vector(doc.get_state())


def test_malformed_updates_are_unsupported_not_errors() -> None:
    doc: Doc[Any] = Doc(client_id=3)
    ups = _capture(doc)
    doc.get("content", type=Text).insert(0, "abc")
    good = ups[0]
    for bad in (good[:-1], good + b"\x00", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"):
        try:
            yupdate.decode(bad)
        except yupdate.Unsupported:
            continue
        raise AssertionError(f"{bad!r} decoded")


async def test_ids_that_stop_mirroring_the_text_are_built_again_by_deltas(
    tmp_path: Path,
) -> None:
    """A root written as a text by one client and as an array by another: items a text
    does not hold; the fold by ids gives up half way, and the cache builds the index by
    deltas, which answers as the document does."""
    a: Doc[Any] = Doc(client_id=1)
    ua = _capture(a)
    a.get("content", type=Text).insert(0, "written")
    b: Doc[Any] = Doc(client_id=2)
    b.apply_update(a.get_update())
    ub = _capture(b)
    b.get("content", type=Array).append(7)  # the same root, as an array
    a.apply_update(ub[0])
    a.get("content", type=Text).insert(0, "still ")
    events = [NewEvent("alice", "edit", ua[0]), NewEvent("bob", "edit", ub[0]),
              NewEvent("alice", "edit", ua[-1])]  # fmt: skip
    async with Backend(Settings(db=str(tmp_path / "x.db"))) as backend:
        await backend.store.append([("mixed", events)])
        h = history_of(backend)
        info = await h.info("mixed")
        got = await h.blame("mixed", 3, info, "content")
        assert h.attribution.rebuilt_by_deltas == 1 and len(h.attribution.builds) == 1
        runs = got["roots"]["content"]["runs"]
        assert [(r["text"], r["actor"]) for r in runs if r["text"].strip("\ufffc")] == [
            ("still ", "alice"), ("written", "alice")]  # fmt: skip
        index = h.attribution.peek("mixed")
        assert index is not None and index.by_ids == 0 and not index.broken


async def test_a_stored_index_of_a_text_with_an_embed_is_read_back(tmp_path: Path) -> None:
    doc: Doc[Any] = Doc(client_id=9)
    ups = _capture(doc)
    t = doc.get("content", type=Text)
    t.insert(0, "see ")
    t.insert_embed(4, {"img": 1})
    t.insert(5, " here")
    events = [NewEvent("ann", "edit", u) for u in ups]
    settings = Settings(db=str(tmp_path / "e.db"))
    async with Backend(settings) as backend:
        await backend.store.append([("pic", events)])
        h = history_of(backend)
        first = await h.blame("pic", 3, await h.info("pic"), "content")
        await h.attribution.drain()
    async with Backend(settings) as backend:
        h = history_of(backend)
        again = await h.blame("pic", 3, await h.info("pic"), "content")
        assert not h.attribution.builds and len(h.attribution.restores) == 1
    assert again == first
    assert "".join(r["text"] for r in first["roots"]["content"]["runs"]) == "see \ufffc here"


def test_content_deleted_before_it_was_sent() -> None:
    """An offline client's first sync carries what it typed and deleted as deleted
    content: tombstones with no text, placed by ids like any other item."""
    c: Doc[Any] = Doc(client_id=3)
    t = c.get("content", type=Text)
    t.insert(0, "x1234z")
    del t[1:5]
    sync = c.get_update()
    assert yupdate.DELETED in {s.kind for s in yupdate.decode(sync)[0]}
    d: Doc[Any] = Doc(client_id=4)
    d.apply_update(sync)
    ud = _capture(d)
    d.get("content", type=Text).insert(1, "y")
    log = _text_log([(sync, "carol"), (ud[0], "dan")])
    index = AttributionIndex("d", ["content"])
    index.fold(log)
    assert index.by_ids == 2 and index.verify()
    assert index.blame("content", 2) == [
        {"text": "x", "actor": "carol", "seq": 1},
        {"text": "y", "actor": "dan", "seq": 2},
        {"text": "z", "actor": "carol", "seq": 1},
    ]
    assert index.diff("content", 1, 2) == [
        {"op": "equal", "text": "x", "actor": None, "seq": None},
        {"op": "insert", "text": "y", "actor": "dan", "seq": 2},
        {"op": "equal", "text": "z", "actor": None, "seq": None},
    ]


def test_an_index_with_a_root_that_has_no_runs_is_stored_and_read_back() -> None:
    """A tracked root nothing was written to yet (no runs at all) encodes and decodes:
    the delta columns of an empty root are empty."""
    log, _ = session(8, steps=60)
    index = AttributionIndex("d", [*ROOTS, "empty"], by_ids=False)
    index.fold(log)
    doc: Doc[Any] = Doc(skip_gc=True)
    for ev in log:
        doc.apply_update(ev.update)
    back = codec.decode(codec.encode(index, "fp"), doc)
    assert list(back.tracks["empty"].runs()) == []
    for name in ROOTS:
        assert back.blame(name, len(log)) == index.blame(name, len(log))
