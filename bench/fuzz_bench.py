"""Fuzz the websocket frame decoder and the update path of a real server.

    .venv/bin/python bench/fuzz_bench.py --frames 100000 [--seed 1] [--concurrency 4]

Starts `palimpsest serve` (a subprocess, SQLite in a temporary directory), then sends
generated frames: random bytes, mutations of valid frames (bit flips, truncation,
insertion, splicing, length fields), valid envelopes around mutated Yjs updates, and
valid but odd frames (awareness, state vectors, extension messages). Each frame's outcome
is predicted locally by an independent model of the wire format (WireModel, which does
not use server.protocol) and pycrdt for what a Yjs payload is:

- ``ok``      a frame the server must accept without closing (and without changing the
              document: doc A only ever receives these and refused ones),
- ``update``  a Yjs update that decodes: sent to doc B, where it may legitimately apply,
- ``4400`` / ``4413``  the server must close the connection with that code.

With ``--atheris [libFuzzer flags]`` it instead runs the decoders under the coverage-guided
fuzzer atheris (200,000 inputs unless ``-runs=`` says otherwise), seeded with the valid
corpus: the decoders may raise only ProtocolError, and the decoder and WireModel must agree
on every input.

Reports frames/s and the outcomes; fails (exit 1) on any mismatch: an unexpected close
code, a close that never came (a hang), a changed doc A, a server that died, or a logged
event of doc B that does not apply when the log is replayed.

The same harness (FrameGen, predict, Fuzzer) drives tests/test_fuzz.py on a smaller run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from pycrdt import Array, Doc, Map, Text, get_state

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from palimpsest import protocol as P  # noqa: E402
from palimpsest.errors import PalimpsestError, ProtocolError  # noqa: E402
from palimpsest.presence import check_state  # noqa: E402
from palimpsest.settings import Settings  # noqa: E402

OK, UPDATE = "ok", "update"
Outcome = str | int  # "ok" | "update" | close code

#: limits the fuzzed server runs with (small, so that the limits are hit cheaply)
LIMITS = {"max_frame_bytes": 4096, "max_doc_bytes": 64 * 1024, "max_awareness_bytes": 1024}
#: a frame that carries an update (sync step 2, update) may be as large as the document may
#: be, plus its header (limits.frame_limit); every other frame max_frame_bytes
UPDATE_FRAME_LIMIT = max(LIMITS["max_frame_bytes"], LIMITS["max_doc_bytes"] + 16)
#: entries one awareness update may name: the room's states (max_awareness_clients_per_room,
#: 1000 by default) plus a connection's share (1,000,000 in the fuzz runs)
MOST_AWARENESS_ENTRIES = 1000 + 1_000_000


# --- generation ------------------------------------------------------------------------------


def _updates(rng: random.Random) -> list[bytes]:
    """Real Yjs updates of several kinds (text, map, array, deletes), from fresh clients."""
    out: list[bytes] = []
    for i in range(24):
        d: Doc[Any] = Doc(client_id=rng.randrange(1, 2**31))
        t = d.get("content", type=Text)
        if i % 4 == 0:
            t.insert(0, "x" * rng.randrange(1, 40))
        elif i % 4 == 1:
            m = d.get("meta", type=Map)
            m["k"] = rng.choice([1, "v", 2.5, True, None, [1, 2], {"a": 1}])
        elif i % 4 == 2:
            a = d.get("list", type=Array)
            a.extend([1, "two", 3.0])
        else:
            t.insert(0, "hello world")
            del t[2:7]
        out.append(d.get_update())
    return out


def _varuint(n: int) -> bytes:
    return P.write_var_uint(n)


class FrameGen:
    """A deterministic stream of frames (fast: 100k frames in a couple of seconds)."""

    def __init__(
        self, seed: int = 0, weights: tuple[float, float, float] = (0.06, 0.2, 0.35)
    ) -> None:
        self.rng = random.Random(seed)
        self.weights = weights
        self.updates = _updates(self.rng)
        sv: Doc[Any] = Doc(client_id=7)
        sv.get("content", type=Text).insert(0, "abc")
        self.corpus = [
            P.encode_sync_step1(b"\x00"),
            P.encode_sync_step1(sv.get_state()),
            P.encode_query_awareness(),
            P.encode_awareness(P.encode_awareness_entries([(12345, 3, '{"user":{"name":"f"}}')])),
            P.encode_extension({"type": "fuzz-op", "id": 1, "x": [1, 2, {"y": None}]}),
            P.encode_permission_denied("nope"),
            *(P.encode_sync_update(u) for u in self.updates),
            *(P.encode_sync_step2(u) for u in self.updates[:6]),
        ]

    def __iter__(self) -> FrameGen:
        return self

    def __next__(self) -> bytes:
        # weights: about a quarter of the frames must close their connection (each costs a
        # connection), the rest are accepted and share connections in batches
        r = self.rng.random()
        if r < self.weights[0]:
            return self.random_bytes()
        if r < self.weights[1]:
            return self.mutate(self.rng.choice(self.corpus))
        if r < self.weights[2]:
            return self.mutated_update()
        return self.odd_but_valid()

    def random_bytes(self) -> bytes:
        rng = self.rng
        head = bytes([rng.choice([0, 1, 2, 3, 100, rng.randrange(256)])])
        return head + rng.randbytes(rng.randrange(0, 48))

    def mutate(self, frame: bytes) -> bytes:
        rng = self.rng
        b = bytearray(frame)
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(7)
            pos = rng.randrange(len(b) + 1)
            if op == 0 and b:  # flip a bit
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
            elif op == 1 and b:  # replace a byte with an interesting one
                b[rng.randrange(len(b))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
            elif op == 2:  # insert
                b[pos:pos] = rng.randbytes(rng.randrange(1, 4))
            elif op == 3 and b:  # delete
                del b[pos : pos + rng.randrange(1, 4)]
            elif op == 4:  # truncate
                del b[pos:]
            elif op == 5:  # splice another frame's tail
                other = rng.choice(self.corpus)
                b[pos:] = other[rng.randrange(len(other) + 1) :]
            else:  # a huge varUint
                b[pos:pos] = b"\xff" * rng.randrange(1, 12)
        return bytes(b)

    def mutated_update(self) -> bytes:
        """A valid envelope around a damaged Yjs update: exercises the update decoder."""
        rng = self.rng
        upd = bytearray(rng.choice(self.updates))
        for _ in range(rng.randrange(1, 3)):
            if not upd:
                break
            i = rng.randrange(len(upd))
            kind = rng.randrange(4)
            if kind == 0:
                upd[i] ^= 1 << rng.randrange(8)
            elif kind == 1:
                upd[i] = rng.randrange(256)
            elif kind == 2:
                del upd[i:]
            else:
                upd[i:i] = rng.randbytes(rng.randrange(1, 3))
        enc = P.encode_sync_step2 if rng.random() < 0.2 else P.encode_sync_update
        return enc(bytes(upd))

    def odd_but_valid(self) -> bytes:
        rng = self.rng
        k = rng.randrange(7)
        if k == 0:
            n = rng.randrange(0, 4)
            entries = [
                (
                    rng.randrange(2**40),
                    rng.randrange(2**32),
                    rng.choice(
                        [
                            '{"a":1}',
                            "null",
                            "{}",
                            json.dumps("x" * rng.randrange(0, 1500)),
                            '"\u00e9\u4e2d"',
                            "[1,2.5,true]",
                        ]
                    ),
                )
                for _ in range(n)
            ]
            return P.encode_awareness(P.encode_awareness_entries(entries))
        if k == 1:
            pairs = [(rng.randrange(2**32), rng.randrange(2**20)) for _ in range(rng.randrange(4))]
            sv = _varuint(len(pairs)) + b"".join(_varuint(c) + _varuint(k) for c, k in pairs)
            return P.encode_sync_step1(sv)
        if k == 2:
            return P.encode_query_awareness()
        if k == 3:
            body: dict[str, Any] = {"type": f"fuzz-{rng.randrange(100)}", "id": rng.randrange(9)}
            if rng.random() < 0.5:
                body["payload"] = [rng.random(), "s" * rng.randrange(20), None, {"n": True}]
            return P.encode_extension(body)
        if k == 4:
            return P.encode_sync_update(b"\x00\x00")
        if k == 5:  # over the frame limit
            if rng.random() < 0.05:
                return P.encode_sync_update(b"\x00" * UPDATE_FRAME_LIMIT)
            if rng.random() < 0.05:
                return P.encode_awareness(b"\x00" * LIMITS["max_frame_bytes"])
            return P.encode_query_awareness()
        # a non-minimal varUint message type (0x80 0x00 == 0): still a valid sync step 1
        return b"\x80\x00" + bytes([P.SYNC_STEP1]) + P.write_var_bytes(b"\x00")


# --- prediction ------------------------------------------------------------------------------


def _pycrdt_ok(fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
        return True
    except BaseException as e:  # pyo3 PanicException derives from BaseException
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        return False


_SV_DOC: Doc[Any] = Doc()
#: the presence-state limits the fuzzed server runs with (the defaults)
_SETTINGS = Settings()


class _Malformed(Exception):
    pass


class WireModel:
    """An independent model of the y-websocket wire format, the oracle of the fuzz runs:
    written from the protocol (lib0 encoding: varUint in 7-bit groups, least significant
    first; byte arrays and strings prefixed by their varUint length) and the server's
    documented strictness (at most 10 bytes per varUint, strict UTF-8, nothing after the
    message), without any of server.protocol, so that a decoder bug cannot be its own
    oracle. Message types: 0 sync (0 step 1, 1 step 2, 2 update), 1 awareness, 2 auth,
    3 query awareness, 100 extension (a JSON object)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint(self) -> int:
        value = 0
        for i in range(10):
            if self.pos >= len(self.data):
                raise _Malformed
            byte = self.data[self.pos]
            self.pos += 1
            value += (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return value
        raise _Malformed

    def array(self) -> bytes:
        n = self.uint()
        if self.pos + n > len(self.data):
            raise _Malformed
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def string(self) -> str:
        try:
            return self.array().decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise _Malformed from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise _Malformed

    @classmethod
    def message(cls, frame: bytes) -> tuple[str, Any]:
        """(kind, payload) or _Malformed."""
        m = cls(frame)
        t = m.uint()
        out: tuple[str, Any]
        if t == 0:
            sub = m.uint()
            if sub not in (0, 1, 2):
                raise _Malformed
            out = (("step1", "step2", "update")[sub], m.array())
        elif t == 1:
            out = ("awareness", m.array())
        elif t == 2:
            m.uint()
            out = ("auth", m.string())
        elif t == 3:
            out = ("query", None)
        elif t == 100:
            try:
                body = json.loads(m.string())
            except ValueError:
                raise _Malformed from None
            if not isinstance(body, dict):
                raise _Malformed
            out = ("extension", body)
        else:
            raise _Malformed
        m.end()
        return out

    @classmethod
    def awareness(cls, payload: bytes) -> list[tuple[int, int, str]]:
        """Entries (client, clock, state); y-protocols JSON.parse()s every state."""
        m = cls(payload)
        entries = [(m.uint(), m.uint(), m.string()) for _ in range(m.uint())]
        m.end()
        for _, _, state in entries:
            try:
                json.loads(state, parse_constant=_js_has_no)
            except (ValueError, RecursionError):
                raise _Malformed from None
        return entries


def _uint_len(n: int) -> int:
    """Bytes of n as a minimal varUint (7 bits a byte)."""
    return max(1, (n.bit_length() + 6) // 7)


def _js_has_no(name: str) -> Any:
    raise ValueError(f"JSON.parse rejects {name}")


def predict(frame: bytes) -> Outcome:
    """What the server must do with this frame, on a connection with every right: from
    the independent WireModel, and pycrdt (the CRDT library) for what a Yjs payload is."""
    update = frame[:2] in (b"\x00\x01", b"\x00\x02")
    if len(frame) > (UPDATE_FRAME_LIMIT if update else LIMITS["max_frame_bytes"]):
        return 4413
    try:
        if WireModel(frame).uint() not in (0, 1, 3, 100):
            return OK  # a type the server does not read, or a client's auth: ignored
        kind, payload = WireModel.message(frame)
    except _Malformed:
        return 4400
    if kind == "step1":
        return OK if _pycrdt_ok(_SV_DOC.get_update, payload) else 4400
    if kind in ("step2", "update"):
        if payload == b"\x00\x00":
            return OK
        return UPDATE if _pycrdt_ok(get_state, payload) else 4400
    if kind == "awareness":
        try:
            count = WireModel(payload).uint()
        except _Malformed:
            return 4400
        if count > MOST_AWARENESS_ENTRIES:  # refused before any entry is read
            return 4413
        try:
            entries = WireModel.awareness(payload)
        except _Malformed:
            return 4400
        # What an update changes is held to max_awareness_bytes (re-sent states are not):
        # here every entry is a change (random client ids no other connection holds).
        # Its size is that of the entries encoded minimally.
        changed = _uint_len(len(entries)) + sum(
            _uint_len(c) + _uint_len(k) + _uint_len(len(b)) + len(b)
            for c, k, b in ((c, k, s.encode()) for c, k, s in entries)
        )
        if changed > LIMITS["max_awareness_bytes"]:
            return 4413
        for _, _, state in entries:  # presence states: JSON objects or null, small
            if state == "null":
                continue
            try:
                check_state(state, _SETTINGS)
            except PalimpsestError as e:
                return e.close_code
        return OK
    if kind == "extension":
        op = payload.get("type")
        if isinstance(op, str) and not op.startswith("fuzz-") and op != "hello":
            return UPDATE  # a real operation (undo, restore, …): only on doc B
        return OK
    return OK


# --- the driver ------------------------------------------------------------------------------


@dataclass
class Report:
    frames: int = 0
    connections: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "connections": self.connections,
            "seconds": round(self.seconds, 2),
            "frames_per_second": round(self.rate),
            "predicted": dict(self.outcomes),
            "server_close_codes": {str(k): v for k, v in sorted(self.closes.items())},
            "failures": len(self.failures),
        }


class Fuzzer:
    """Sends predicted frames in batches: a connection carries accepted frames until one
    that must close it; every close is checked against the prediction."""

    def __init__(
        self,
        ws_base: str,
        doc_a: str,
        doc_b: str,
        query: str = "user=fuzzer",
        batch: int = 100,
        close_timeout: float = 10.0,
    ) -> None:
        self.ws_base = ws_base
        self.doc_a = doc_a
        self.doc_b = doc_b
        self.query = query
        self.batch = batch
        self.close_timeout = close_timeout
        self.report = Report()

    def batches(self, frames: Any, n: int) -> Any:
        """(doc, [(frame, outcome)]) batches of n frames in all: doc B gets the updates that
        decode, doc A everything else; a frame that must close its connection ends a batch."""
        pending: dict[str, list[tuple[bytes, Outcome]]] = {self.doc_a: [], self.doc_b: []}
        for _ in range(n):
            frame = next(frames)
            outcome = predict(frame)
            self.report.outcomes[str(outcome)] += 1
            doc = self.doc_b if outcome == UPDATE else self.doc_a
            pending[doc].append((frame, outcome))
            if isinstance(outcome, int) or len(pending[doc]) >= self.batch:
                yield doc, pending[doc]
                pending[doc] = []
        for doc, items in pending.items():
            if items:
                yield doc, items

    async def run(self, frames: Any, n: int, concurrency: int = 4) -> Report:
        queue: asyncio.Queue[tuple[str, list[tuple[bytes, Outcome]]] | None] = asyncio.Queue(
            concurrency * 2
        )
        t0 = time.perf_counter()

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                await self.one_connection(*item)

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        for item in self.batches(frames, n):
            await queue.put(item)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        self.report.seconds = time.perf_counter() - t0
        self.report.frames += n
        return self.report

    async def one_connection(self, doc: str, items: list[tuple[bytes, Outcome]]) -> None:
        rep = self.report
        rep.connections += 1
        # a request of its own each time: the same one refused for good 3 times within
        # 30 s is refused at the handshake (repeat_refusals), which is not what is fuzzed
        url = f"{self.ws_base}/{doc}?{self.query}&connection={rep.connections}"
        try:
            ws = await websockets.connect(url, compression=None, max_size=None, open_timeout=10)
        except Exception as e:
            rep.failures.append(f"cannot connect to {doc}: {e!r}")
            return
        drained = asyncio.create_task(_drain(ws))
        expect: Outcome = OK
        sent = 0
        try:
            for frame, outcome in items:
                await ws.send(frame)
                sent += 1
                expect = outcome
                if isinstance(expect, int):
                    break
        except websockets.ConnectionClosed:
            pass
        if not isinstance(expect, int):
            await ws.close()
        try:
            await asyncio.wait_for(drained, self.close_timeout)
        except TimeoutError:
            rep.failures.append(
                f"{doc}: no close within {self.close_timeout}s after {items[sent - 1][0]!r}"
            )
            await ws.close()
            return
        rcvd = ws.protocol.close_rcvd
        code = rcvd.code if rcvd is not None else 1006
        rep.closes[code] += 1
        want = expect if isinstance(expect, int) else 1000
        if doc == self.doc_b and code in (1000, 4400) and want in (1000, 4400):
            return  # an update that decodes may still fail to apply: refused, fine
        if code != want:
            last = items[min(sent, len(items)) - 1][0]
            rep.failures.append(
                f"{doc}: closed {code} {rcvd.reason if rcvd else ''!r}, predicted {want}; "
                f"last frame sent {last[:80]!r} ({len(last)} bytes)"
            )


async def _drain(ws: Any) -> None:
    try:
        async for _ in ws:
            pass
    except websockets.ConnectionClosed:
        pass


# --- the benchmark ---------------------------------------------------------------------------


async def bench(n: int, seed: int, concurrency: int) -> dict[str, Any]:
    from pycrdt import Text as _Text
    from serverproc import ServerProcess
    from yclient import connect

    from palimpsest.snapshots import load
    from palimpsest.store.sqlite import SQLiteStore

    # the decoder alone, in this process: decode + the local prediction of every frame
    sample = [next(FrameGen(seed + 1)) for _ in range(min(n, 20_000))]
    t0 = time.perf_counter()
    for f in sample:
        predict(f)
    predict_rate = len(sample) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for f in sample:
        try:
            P.decode(f)
        except ProtocolError:
            pass
    decode_rate = len(sample) / (time.perf_counter() - t0)

    env = {f"PALIMPSEST_{k.upper()}": str(v) for k, v in LIMITS.items()}
    env["PALIMPSEST_MAX_EVENTS_PER_SECOND"] = "0"  # measure the decoder, not the rate limit
    env["PALIMPSEST_MAX_CONNECTIONS_PER_IP"] = "1000"
    # presence limits that depend on earlier frames are not predicted per frame
    env["PALIMPSEST_MAX_AWARENESS_CLIENTS_PER_CONNECTION"] = "1000000"
    env["PALIMPSEST_MAX_BYTES_PER_SECOND"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        async with ServerProcess(tmp, env=env) as srv:
            async with connect(srv.ws_url, "fuzz-a", "owner") as owner:
                owner.insert(0, "unchanged")
                await asyncio.sleep(0.3)
                gen = FrameGen(seed)
                fuzzer = Fuzzer(srv.ws_url, "fuzz-a", "fuzz-b")
                rss0 = _rss(srv.pid)
                report = await fuzzer.run(gen, n, concurrency)
                rss1 = _rss(srv.pid)
                alive = srv.running
                async with connect(srv.ws_url, "fuzz-a", "late") as late:
                    unchanged = late.content == "unchanged"
                owner_ok = owner._reader is not None and not owner._reader.done()
        async with SQLiteStore(str(Path(tmp) / "palimpsest.db")) as store:
            a_events = await store.read("fuzz-a")
            loaded = await load(store, "fuzz-b")
            b_events = await store.head("fuzz-b")
    out = report.summary()
    out.update(
        seed=seed,
        concurrency=concurrency,
        server_alive=alive,
        doc_a_unchanged=unchanged and {e.actor for e in a_events} == {"owner"},
        doc_a_client_still_connected=owner_ok,
        doc_b_events=b_events,
        doc_b_events_that_do_not_apply=loaded.failed,
        doc_b_text_length=len(str(loaded.doc.get("content", type=_Text))),
        decoder_frames_per_second=round(decode_rate),
        decode_and_update_check_frames_per_second=round(predict_rate),
        connections_per_second=round(report.connections / report.seconds),
        server_rss_mb=[round(rss0 / 2**20, 1), round(rss1 / 2**20, 1)],
        failure_examples=report.failures[:10],
    )
    return out


def _rss(pid: int | None) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def atheris_target(data: bytes) -> None:
    """Coverage-guided (atheris): the decoders may only raise ProtocolError; what pycrdt
    raises on a damaged update is the server's UpdateRejected path, tolerated here."""
    try:
        model: tuple[str, Any] | None = WireModel.message(data)
    except _Malformed:
        model = None
    try:
        msg = P.decode(data)
    except ProtocolError:
        if model is not None:
            raise AssertionError(f"the decoder refuses what the model reads: {data!r}") from None
        return
    if model is None:
        raise AssertionError(f"the decoder reads what the model refuses: {data!r}")
    try:
        if isinstance(msg, P.SyncStep1):
            P.decode_state_vector(msg.state_vector)
        elif isinstance(msg, P.AwarenessUpdate):
            P.decode_awareness(msg.payload)
    except ProtocolError:
        return
    if isinstance(msg, P.SyncStep2 | P.SyncUpdate):
        _pycrdt_ok(get_state, msg.update)
    P.decode(P.encode(msg))


def run_atheris(argv: list[str]) -> None:
    """``fuzz_bench.py --atheris [-runs=200000] [libFuzzer flags]``: never returns (libFuzzer
    exits 0 after the runs, non-zero with the crashing input on a failure)."""
    import atheris  # optional: pip install atheris (the [bench] extra)

    if not any(a.startswith(("-runs=", "-max_total_time=")) for a in argv):
        argv = ["-runs=200000", *argv]  # bounded unless told otherwise

    atheris.instrument_all()
    corpus_dir = Path(tempfile.mkdtemp(prefix="palimpsest-fuzz-corpus-"))
    for i, frame in enumerate(FrameGen(0).corpus):
        (corpus_dir / f"seed-{i}").write_bytes(frame)
    atheris.Setup([sys.argv[0], *argv, str(corpus_dir)], atheris_target)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--atheris":
        run_atheris(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", help="write the JSON report here too")
    args = ap.parse_args(argv)
    result = asyncio.run(bench(args.frames, args.seed, args.concurrency))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    ok = (
        result["failures"] == 0
        and result["server_alive"]
        and result["doc_a_unchanged"]
        and result["doc_a_client_still_connected"]
        and result["doc_b_events_that_do_not_apply"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
