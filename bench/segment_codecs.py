"""Which compressor for sealed segments: the bytes and CPU of each candidate on the real
segments of a trace (issue #13).

A real `palimpsest serve` on a fresh SQLite file takes the trace through its websocket
(bench/backbone.py's writer and observer, as in bench/storage_bench.py), is stopped
cleanly, and the bodies of the segments it sealed (the columns before compression) are
compressed again with each candidate. zstd is measured only when the `zstandard` package
is importable (it is not a dependency of the server).

    .venv/bin/python bench/segment_codecs.py                          # automerge-paper
    .venv/bin/python bench/segment_codecs.py --trace sveltecomponent --repeats 3

Prints one line per codec: stored bytes, the ratio to zlib level 6 (format 1), and the
CPU per segment to compress and to decompress (the best of the repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import lzma
import sqlite3
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import backbone  # noqa: E402
import storage_bench  # noqa: E402

from palimpsest.store import segments as S  # noqa: E402

Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


def _lzma(filters: list[dict[str, int]]) -> Codec:
    return (
        lambda b: lzma.compress(b, format=lzma.FORMAT_RAW, filters=filters),
        lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=filters),
    )


def codecs() -> dict[str, Codec]:
    out: dict[str, Codec] = {
        f"zlib {lv}" + (" (format 1)" if lv == S.LEVEL else ""): (
            lambda b, lv=lv: zlib.compress(b, lv),  # type: ignore[misc]
            zlib.decompress,
        )
        for lv in (1, 6, 9)
    }
    out["lzma2 preset 0 (format 2)"] = _lzma(S.LZMA_FILTERS)
    out["lzma2 preset 0, lc3 pb2 (its defaults)"] = _lzma([{"id": lzma.FILTER_LZMA2, "preset": 0}])
    out["lzma2 preset 6 (normal mode)"] = _lzma([{"id": lzma.FILTER_LZMA2, "preset": 6}])
    try:
        import zstandard
    except ImportError:
        print("zstandard is not installed: zstd not measured", file=sys.stderr)
    else:
        dec = zstandard.ZstdDecompressor()
        for lv in (3, 6, 9, 19):
            out[f"zstd {lv}"] = (zstandard.ZstdCompressor(level=lv).compress, dec.decompress)
    return out


def sealed_bodies(trace: str) -> list[bytes]:
    """The uncompressed bodies of the segments a real server sealed from `trace`."""
    txns, _ = backbone.load_trace(trace, None)
    updates, final = backbone.make_updates(txns)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codecs.db"
        srv = storage_bench.Server(f"sqlite:///{path}", backbone.free_port(), ROOT)
        try:
            srv.start()
            asyncio.run(backbone.ingest(srv.port, updates, final))
            time.sleep(2.0)  # idle: the last runs are sealed
        finally:
            srv.stop()
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            rows = db.execute("SELECT body FROM segments ORDER BY id").fetchall()
    bodies = []
    for (blob,) in rows:
        packed = bytes(blob)[S._HEADER.size :]
        codec = S.LZMA_FILTERS if blob[0] == S.FORMAT else None
        bodies.append(
            lzma.decompress(packed, format=lzma.FORMAT_RAW, filters=codec)
            if codec
            else zlib.decompress(packed)
        )
    return bodies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--trace", default="automerge-paper")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"ingesting {args.trace} through a real server…", file=sys.stderr, flush=True)
    bodies = sealed_bodies(args.trace)
    raw = sum(map(len, bodies))
    print(f"{len(bodies)} segments, {raw:,} bytes of bodies (uncompressed columns)\n")
    results: dict[str, tuple[int, float, float]] = {}
    for name, (comp, dec) in codecs().items():
        best_c = best_d = float("inf")
        size = 0
        for _ in range(args.repeats):
            t = time.process_time()
            packed = [comp(b) for b in bodies]
            best_c = min(best_c, time.process_time() - t)
            t = time.process_time()
            for p in packed:
                dec(p)
            best_d = min(best_d, time.process_time() - t)
            size = sum(map(len, packed))
        results[name] = (size, best_c / len(bodies) * 1e3, best_d / len(bodies) * 1e3)
        print(f"  {name:40} done", file=sys.stderr, flush=True)
    base = next(v[0] for k, v in results.items() if "format 1" in k)
    print("| codec | bytes | × format 1 | compress ms/segment | decompress ms/segment |")
    print("|---|---|---|---|---|")
    for name, (size, c, d) in results.items():
        print(f"| {name} | {size:,} | {size / base:.2f}× | {c:.2f} | {d:.3f} |")


if __name__ == "__main__":
    main()
