"""Cold load, rows layout against compact layout, alternating on the same machine minute.

One store of each layout is written with the whole trace (as bench/storage_bench.py
does), then the two servers are restarted in turn, N times each, and a fresh client
times its load until it holds the final text. Alternating spreads the machine's noise
over both.

    .venv/bin/python bench/storage_cold_ab.py [--trace automerge-paper] [--loads 9]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backbone  # noqa: E402
import storage_bench as sb  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--trace", default="automerge-paper")
    ap.add_argument("--loads", type=int, default=9)
    args = ap.parse_args()
    txns, _ = backbone.load_trace(args.trace, None)
    updates, final = backbone.make_updates(txns)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        servers = {}
        for layout, rev in (("rows", sb.BASELINE), ("compact", None)):
            tree = sb.package_tree(rev, t / layout)
            db = t / f"{layout}.db"
            srv = sb.Server(f"sqlite:///{db}", backbone.free_port(), tree)
            srv.start()
            asyncio.run(backbone.ingest(srv.port, updates, final))
            time.sleep(2.0)
            srv.stop()
            servers[layout] = srv
        times: dict[str, list[float]] = {"rows": [], "compact": []}
        for i in range(args.loads):
            for layout in ("rows", "compact") if i % 2 == 0 else ("compact", "rows"):
                srv = servers[layout]
                srv.start()
                times[layout].append(asyncio.run(backbone.cold_load(srv.port, final)) * 1e3)
                srv.stop()
            print(f"load {i + 1}/{args.loads}", file=sys.stderr)
    for layout, ms in times.items():
        print(f"{layout:8} cold load ms: median {statistics.median(ms):.1f}, "
              f"min {min(ms):.1f}, max {max(ms):.1f} (n={len(ms)})")  # fmt: skip


if __name__ == "__main__":
    main()
