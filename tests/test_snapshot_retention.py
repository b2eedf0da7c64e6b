"""Snapshot retention and compressed snapshots on a real trace: what the ladder keeps,
that every version stays exact (the trace is the oracle, not our own fold), and that a
damaged compressed snapshot is skipped, never served."""

from __future__ import annotations

import importlib.util
import logging
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually, run_server
from pycrdt import Doc, Map
from sqlitehelp import sqlite_conn
from yclient import connect

from palimpsest.backend import Backend
from palimpsest.history import history_of
from palimpsest.maintenance import compact_doc, plan_compact, verify_doc
from palimpsest.retention import Retention, plan, prune, to_convert
from palimpsest.settings import Settings
from palimpsest.snapshots import load
from palimpsest.store import snapshot_codec
from palimpsest.store.base import NewEvent, SnapshotInfo
from palimpsest.store.sqlite import SQLiteStore

_BENCH = Path(__file__).resolve().parent.parent / "bench" / "history_bench.py"
if "history_bench" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("history_bench", _BENCH)
    assert _spec is not None and _spec.loader is not None
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["history_bench"] = _mod
    _spec.loader.exec_module(_mod)
bench = sys.modules["history_bench"]


def trace_texts(name: str, limit: int) -> list[str]:
    """The trace's own text after each of its first `limit` transactions (index n: after
    n), from its patches alone: the oracle."""
    txns = bench.load_trace(name)["txns"][:limit]
    out, content = [""], ""
    for txn in txns:
        for pos, ndel, ins in txn["patches"]:
            content = content[:pos] + ins + content[pos + ndel :]
        out.append(content)
    return out


def info(seq: int, size: int = 100, valid: bool = True) -> SnapshotInfo:
    return SnapshotInfo("d", seq, 0, size, valid, "" if valid else "checksum")


# --- the plan (pure) ------------------------------------------------------------------------


def test_the_ladder_bounds_the_gap_and_keeps_the_newest() -> None:
    infos = [info(s) for s in range(1000, 40_001, 1000)]
    drop = plan(infos, 0, Retention(keep_recent=3, max_gap=4000))
    kept = sorted({s.seq for s in infos} - set(drop))
    assert kept[-3:] == [38_000, 39_000, 40_000]
    # from the start of the log to the newest: no two kept more than max_gap apart
    assert all(b - a <= 4000 for a, b in zip([0, *kept], kept, strict=False))
    assert len(kept) <= 40_000 // 4000 + 3 + 1
    # pruning again drops nothing more: the decision is stable
    assert plan([s for s in infos if s.seq in kept], 0, Retention(3, 4000)) == []


def test_the_ladder_never_drops_the_base_or_a_damaged_snapshot() -> None:
    infos = [info(s) for s in range(500, 20_001, 500)] + [info(7_250, valid=False)]
    drop = plan(infos, 3000, Retention(keep_recent=2, max_gap=100_000))
    assert 3000 in [s.seq for s in infos] and 3000 not in drop
    assert 7_250 not in drop  # verify reports it; an operator decides
    # snapshots before the compaction base are not the ladder's (compact decides)
    assert sorted({s.seq for s in infos} - set(drop)) == [
        *range(500, 3001, 500),
        7_250,
        19_500,
        20_000,
    ]


def test_a_byte_bound_widens_the_ladder() -> None:
    infos = [info(s, size=1000) for s in range(1000, 64_001, 1000)]
    free = plan(infos, 0, Retention(keep_recent=1, max_gap=2000))
    bounded = plan(infos, 0, Retention(keep_recent=1, max_gap=2000, max_bytes=8000))
    kept = sorted({s.seq for s in infos} - set(bounded))
    assert len(bounded) > len(free)
    assert sum(1000 for s in kept[:-1]) <= 8000
    assert all(b - a <= 16_000 for a, b in zip([0, *kept], kept, strict=False))


def test_a_byte_bound_counts_the_whole_rungs_the_differences_need() -> None:
    """A 1 MB book's ladder: a rung per 3,000 events, every 6th whole (300 kB as stored),
    each other one the difference (3 kB) from the rung below it. The bound counted the
    kept rungs alone, mostly small differences, and the rungs they are from came back
    with them: under 1 MB a field tester's ladder kept 6.5 of its 7.8 MB. The rungs kept
    and those they need fit it now."""
    seqs = list(range(3000, 258_001, 3000))
    infos = [
        SnapshotInfo("d", q, 0, 3000, True, "", seqs[i - 1]) if i % 6
        else SnapshotInfo("d", q, 0, 300_000, True, "")
        for i, q in enumerate(seqs)
    ] + [info(q, size=500_000) for q in (258_500, 259_000, 259_500)]  # fmt: skip
    assert sum(s.size for s in infos[:-3]) > 4_000_000
    for bound in (2_000_000, 1_000_000, 500_000):
        drop = set(plan(infos, 0, Retention(max_bytes=bound)))
        kept = [s for s in infos if s.seq not in drop]
        assert 0 < sum(s.size for s in kept[:-3]) <= bound, bound
        assert [s.seq for s in kept[-3:]] == [258_500, 259_000, 259_500]
        # every difference kept has the rung it is from
        assert all(not s.delta_of or s.delta_of in {k.seq for k in kept} for s in kept)


def test_retention_rules_are_checked() -> None:
    with pytest.raises(ValueError):
        Retention(keep_recent=0)
    with pytest.raises(ValueError):
        Retention(max_gap=0)


# --- on a real trace, in a real SQLite file ---------------------------------------------------

N = 12_000
EVERY = 500
GAP = 2_000


async def test_pruned_versions_equal_the_trace(tmp_path: Path) -> None:
    events, final = bench.trace_events("automerge-paper", limit=N)
    texts = trace_texts("automerge-paper", N)
    assert len(events) == N and texts[-1] == final
    settings = Settings(db=str(tmp_path / "t.db"), snapshot_every=EVERY)
    async with Backend(settings) as backend:
        store = backend.store
        await bench.write_log(store, "paper", events, EVERY)
        before = await store.snapshots("paper")
        assert len(before) == N // EVERY
        dropped = await prune(store, "paper", Retention(keep_recent=3, max_gap=GAP))
        after = await store.snapshots("paper")
        assert len(after) == len(before) - len(dropped) and len(after) < len(before) // 2
        seqs = [s.seq for s in after]
        assert seqs[-3:] == [N - 2 * EVERY, N - EVERY, N]
        assert all(b - a <= GAP for a, b in zip([0, *seqs], seqs, strict=False))
        # compressed: each stored row is well under the state it holds
        with sqlite_conn(tmp_path / "t.db") as db:
            (meta,) = db.execute("SELECT DISTINCT meta FROM snapshots").fetchone()
        assert meta == snapshot_codec.PACKED
        newest = await store.latest_snapshot("paper")
        assert newest is not None and after[-1].size < 0.8 * len(newest.state)

        h = history_of(backend)
        rng = random.Random(13)
        for n in sorted({0, 1, N, *rng.sample(range(1, N), 40)}):
            loaded = await load(store, "paper", upto=n)
            assert loaded.seq == n and loaded.replayed < GAP
            v = await h.version("paper", n)
            assert v["roots"].get("content", {"value": ""})["value"] == texts[n], n
        assert await verify_doc(store, "paper") == []


async def test_a_damaged_compressed_snapshot_is_skipped_and_reported(tmp_path: Path) -> None:
    n = 3000
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    path = tmp_path / "d.db"
    async with Backend(Settings(db=str(path), snapshot_every=EVERY)) as backend:
        await bench.write_log(backend.store, "paper", events, EVERY)
    with sqlite_conn(path) as db:
        (blob,) = db.execute("SELECT state FROM snapshots WHERE seq = 2500").fetchone()
        bad = bytearray(blob)
        bad[len(bad) // 2] ^= 0x40
        db.execute("UPDATE snapshots SET state = ? WHERE seq = 2500", (bytes(bad),))
    async with Backend(Settings(db=str(path), snapshot_every=EVERY)) as backend:
        store = backend.store
        loaded = await load(store, "paper", upto=2800)
        assert loaded.snapshot is not None and loaded.snapshot.seq == 2000
        assert loaded.replayed == 800
        v = await history_of(backend).version("paper", 2800)
        assert v["roots"]["content"]["value"] == texts[2800]
        infos = {s.seq: s for s in await store.snapshots("paper")}
        assert not infos[2500].valid and "checksum" in infos[2500].damage
        problems = await verify_doc(store, "paper")
        assert problems == ["paper: snapshot @2500 is damaged (state checksum does not match)"]
        # retention leaves it for the operator, and keeps versions loadable around it
        await prune(store, "paper", Retention(keep_recent=1, max_gap=1000))
        assert 2500 in [s.seq for s in await store.snapshots("paper")]
        loaded = await load(store, "paper", upto=2999)
        assert loaded.snapshot is not None and loaded.snapshot.seq == 2000


async def test_a_server_prunes_its_snapshots_off_the_edit_path(tmp_path: Path) -> None:
    settings = Settings(
        db=str(tmp_path / "s.db"),
        snapshot_every=5,
        snapshot_quiet_seconds=0,
        snapshot_keep_recent=2,
        snapshot_max_gap=10,
        unload_after_seconds=0.2,
    )
    parts = [f"{i}," for i in range(60)]
    async with run_server(settings) as srv:
        async with connect(srv.ws_url, "pruned", user="ann") as c:
            for part in parts:
                room = srv.backend.rooms.get_loaded("pruned")
                want = (room.seq if room else 0) + 1
                c.insert(len(c.content), part)
                await eventually(
                    lambda w=want: srv.backend.rooms.get_loaded("pruned").seq >= w  # type: ignore[union-attr,misc]
                )
        await eventually(lambda: "pruned" not in srv.backend.rooms)
        await srv.backend.snapshots.drain()
        store = srv.backend.store
        seqs = [s.seq for s in await store.snapshots("pruned")]
        assert seqs[-1] == 60 and len(seqs) <= 2 + 60 // 10, seqs
        assert all(b - a <= 10 for a, b in zip([0, *seqs], seqs, strict=False)), seqs
        h = history_of(srv.backend)
        for n in (7, 23, 41, 60):
            v = await h.version("pruned", n)
            assert v["roots"]["content"]["value"] == "".join(parts[:n])


# --- ladder rungs stored as differences ---------------------------------------------------------


def test_older_rungs_become_differences_with_a_whole_one_every_key_gap() -> None:
    infos = [info(s) for s in range(1000, 30_001, 1000)]
    pairs = dict(to_convert(infos, 0, Retention(keep_recent=3, max_gap=1000, key_every=4)))
    older = [s.seq for s in infos[:-3]]
    whole = [s for s in older if s not in pairs]
    # every 4th rung whole: at most 3 differences on top of one whole state
    assert whole == [1000, 5000, 9000, 13000, 17000, 21000, 25000]
    assert all(pairs[s] == s - 1000 for s in pairs)  # each from the rung just below
    assert not set(pairs) & {28_000, 29_000, 30_000}  # the newest stay whole
    # once converted, a rung is not converted again
    done = [info(s) if s not in pairs else SnapshotInfo("d", s, 0, 10, True, "", pairs[s])
            for s in (x.seq for x in infos)]  # fmt: skip
    assert to_convert(done, 0, Retention(keep_recent=3, max_gap=1000, key_every=4)) == []
    # and the plan never drops the rung a kept difference is taken from
    drop = plan(done, 0, Retention(keep_recent=3, max_gap=1_000_000))
    kept = {s.seq for s in done} - set(drop)
    assert all(d.delta_of in kept for d in done if d.seq in kept and d.delta_of)


async def test_difference_rungs_load_exactly_and_survive_damage_and_compaction(
    tmp_path: Path,
) -> None:
    n = 8000
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    path = tmp_path / "k.db"
    rules = Retention(keep_recent=2, max_gap=1000, key_every=3)
    async with Backend(Settings(db=str(path), snapshot_every=EVERY)) as backend:
        store = backend.store
        await bench.write_log(store, "paper", events, EVERY)
        whole_bytes = sum(s.size for s in await store.snapshots("paper"))
        await prune(store, "paper", rules)
        infos = await store.snapshots("paper")
        deltas = [s for s in infos if s.delta_of]
        assert len(deltas) >= 4 and sum(s.size for s in infos) < whole_bytes / 2
        h = history_of(backend)
        for s in [500, 1700, 2999, 3000, 4321, 6100, 7999]:
            v = await h.version("paper", s)
            assert v["roots"]["content"]["value"] == texts[s], s
            loaded = await load(store, "paper", upto=s)
            assert loaded.replayed < 1000
        assert await verify_doc(store, "paper") == []

        # a damaged whole rung: the differences above it fall back to an older snapshot
        whole = [s.seq for s in infos if not s.delta_of]
        hit = max(w for w in whole if w < deltas[0].seq)
        above = [s.seq for s in deltas if s.seq > hit]
        assert above
    with sqlite_conn(path) as db:
        (blob,) = db.execute("SELECT state FROM snapshots WHERE seq = ?", (hit,)).fetchone()
        bad = blob[:-1] + bytes([blob[-1] ^ 0xFF])  # flipped: a 0 set to 0 is no damage
        db.execute("UPDATE snapshots SET state = ? WHERE seq = ?", (bad, hit))
    async with Backend(Settings(db=str(path), snapshot_every=EVERY)) as backend:
        store, h = backend.store, history_of(backend)
        loaded = await load(store, "paper", upto=above[0])
        assert loaded.snapshot is None or loaded.snapshot.seq < hit  # or the log alone
        v = await h.version("paper", above[0])
        assert v["roots"]["content"]["value"] == texts[above[0]]
        problems = await verify_doc(store, "paper")
        assert f"paper: snapshot @{hit} is damaged (state checksum does not match)" in problems
        assert any(f"difference from @{hit}" in p for p in problems)
        # a new whole snapshot at the damaged seq repairs it
        good = await load(store, "paper", upto=hit)
        await store.put_snapshot("paper", hit, good.doc.get_update(), {})
        assert await verify_doc(store, "paper") == []

        # compaction drops what differences above it are taken from: they become whole
        from palimpsest.maintenance import compact_doc, plan_compact

        cut = deltas[1].seq + 1
        await compact_doc(store, await plan_compact(store, "paper", cut), Settings())
        for s in [cut, 5555, 7999]:
            v = await h.version("paper", s)
            assert v["roots"]["content"]["value"] == texts[s], s
        assert await verify_doc(store, "paper") == []


def test_a_captured_difference_is_used_only_over_a_chain_that_resolves() -> None:
    """retention._resolves, from the listing alone: the rung below and every rung it is a
    difference from must be there and valid, or the conversion loads the states (which
    refuses a broken chain) instead of storing a captured difference over it."""
    from palimpsest.retention import _resolves

    def delta(seq: int, of: int) -> SnapshotInfo:
        return SnapshotInfo("d", seq, 0, 10, True, "", of)

    listed = {1000: info(1000), 2000: delta(2000, 1000), 3000: delta(3000, 2000)}
    assert _resolves(listed, 3000) and _resolves(listed, 1000)
    listed[1000] = info(1000, valid=False)
    assert not _resolves(listed, 3000) and not _resolves(listed, 2000)
    del listed[1000]
    assert not _resolves(listed, 2000) and not _resolves(listed, 4000)


class _Writer:
    """The room's side of one author's connection (nothing sent back: no observer)."""

    def __init__(self, actor: str) -> None:
        self.id, self.actor = f"conn-{actor}", actor

    def send(self, frame: bytes) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"the room closed {self.actor}: {code} {reason}")


async def test_rungs_take_the_difference_captured_from_the_live_document(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A room's snapshots, written by the policy as edits come: their older rungs become
    differences taken from the live document at capture (no state loaded to compute
    them), and every version over them is the trace's text."""
    n = 6000
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    settings = Settings(
        db=str(tmp_path / "c.db"),
        snapshot_every=250,
        snapshot_quiet_seconds=0,
        snapshot_keep_recent=2,
        snapshot_max_gap=600,  # the ladder keeps about every other one: merged steps
    )
    caplog.set_level(logging.DEBUG, logger="palimpsest.retention")
    async with Backend(settings) as backend:
        room = await backend.rooms.get("paper")
        writers: dict[str, _Writer] = {}
        for i, e in enumerate(events):
            assert room.receive_update(writers.setdefault(e.actor, _Writer(e.actor)), e.update)
            if i % 50 == 49:
                await room.flush()  # as frames arrive: the policy runs between steps
        await room.flush()
        await backend.rooms.unload(room)  # the last snapshot, and the idle conversion
        await backend.snapshots.drain()
        store = backend.store
        infos = await store.snapshots("paper")
        deltas = [s for s in infos if s.delta_of]
        captured = [r.getMessage() for r in caplog.records if "taken at capture" in r.getMessage()]
        # all of one room's life: every conversion used what was captured
        assert len(deltas) >= 5, [d.seq for d in deltas]
        assert len(captured) == len(deltas), ([d.seq for d in deltas], captured)
        assert not backend.snapshots._captured and not backend.snapshots._previous  # forgotten
        h = history_of(backend)
        seqs = sorted({*(d.seq for d in deltas), *(d.seq - 1 for d in deltas),
                       *random.Random(5).sample(range(1, n + 1), 12)})  # fmt: skip
        for s in seqs:
            v = await h.version("paper", s)
            assert v["roots"]["content"]["value"] == texts[s], s
        assert await verify_doc(store, "paper") == []


@pytest.mark.postgres
async def test_the_ladder_on_postgresql_loads_every_version_exactly() -> None:
    from scaleout import fresh_schema

    n = 5000
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    async with fresh_schema() as url, Backend(Settings(store=url, snapshot_every=EVERY)) as backend:
        store = backend.store
        await bench.write_log(store, "paper", events, EVERY)
        await prune(store, "paper", Retention(keep_recent=2, max_gap=1000, key_every=3))
        infos = await store.snapshots("paper")
        assert any(s.delta_of for s in infos) and all(s.valid for s in infos)
        h = history_of(backend)
        for s in (1, 999, 2500, 3333, 4999, 5000):
            v = await h.version("paper", s)
            assert v["roots"]["content"]["value"] == texts[s], s
        assert await verify_doc(store, "paper") == []


async def _whiteboard_log(store: SQLiteStore, doc: str, n: int, every: int) -> Doc[Any]:
    """`n` events of two users moving 20 shapes whose `props` are JSON objects (what yrs
    encodes in a hash map's order), a whole snapshot every `every`; the server's doc."""
    server: Doc[Any] = Doc(skip_gc=True)
    alice, bob = Doc(client_id=7), Doc(client_id=3)
    shapes = alice.get("shapes", type=Map)
    for i in range(20):
        shapes[f"s{i}"] = Map({"x": 0.0, "props": {"w": 10, "h": 10, "color": "red", "z": i}})
    first = alice.get_update()
    bob.apply_update(first)
    server.apply_update(first)
    await store.append([(doc, [NewEvent("alice", "edit", first)])])
    for seq in range(2, n + 1):
        writer = alice if seq % 2 else bob
        sv = writer.get_state()
        writer.get("shapes", type=Map)[f"s{seq % 20}"]["x"] = float(seq)
        update = writer.get_update(sv)
        (bob if writer is alice else alice).apply_update(update)
        server.apply_update(update)
        actor = "alice" if writer is alice else "bob"
        await store.append([(doc, [NewEvent(actor, "edit", update)])])
        if seq % every == 0:
            await store.put_snapshot(doc, seq, server.get_update(), {})
    return server


async def test_a_rung_kept_whole_for_its_encoding_alone_is_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After `palimpsest compact`, a whiteboard's rungs are compared with the rung below
    plus their difference byte for byte, and yrs writes a JSON object's keys in a hash
    map's order (another in each document): the rung stayed whole, and the retention
    logged a WARNING that it 'does not give it back', for routine work that verify
    finds clean. The same content encoded otherwise is said at DEBUG, as harmless; a
    rung whose content does differ is still a warning."""
    caplog.set_level(logging.DEBUG, logger="palimpsest.retention")
    rules = Retention(keep_recent=1, max_gap=100, key_every=3)
    store = SQLiteStore(tmp_path / "w.db")
    async with store:
        server = await _whiteboard_log(store, "board", 600, 200)
        await store.put_snapshot("board", 600, server.get_update(), {})
        await compact_doc(store, await plan_compact(store, "board", 300), Settings())
        await prune(store, "board", rules)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert "gives the same content back" in caplog.text, caplog.text
        assert await verify_doc(store, "board") == []

        # a rung that holds something else than the log: a warning, as before
        caplog.clear()
        await _whiteboard_log(store, "other", 400, 200)
        stranger: Doc[Any] = Doc(client_id=11)
        stranger.get("shapes", type=Map)["s0"] = "not this log's"
        await store.put_snapshot("other", 400, stranger.get_update(), {})
        await store.put_snapshot("other", 401, stranger.get_update(), {})
        await prune(store, "other", rules)
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("@400 kept whole" in m and "does not give back its content" in m
                   for m in warned), caplog.text  # fmt: skip
