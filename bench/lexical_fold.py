#!/usr/bin/env python3
"""What the attribution index costs per keystroke in a long Lexical document.

    .venv/bin/python bench/lexical_fold.py [--paragraphs 200,2000,5000] [--keys 1000] [--runs 3]

@lexical/yjs keeps a document in a Y.XmlText root with each paragraph a Y.XmlText
embedded in it. Real Yjs under Node.js (tests/node's) writes `--paragraphs` paragraphs,
one transaction each, then types `--keys` characters into the last one, one transaction
each; the index (server/history/attribution.py, as a background refresh or a first blame
folds it) folds the paragraphs, then the keystrokes. Printed per run: CPU µs per
keystroke folded, by Yjs ids and by text deltas. A keystroke's deep event names its
paragraph by a UTF-16 offset in the root; the fold found that paragraph by walking every
run of the root before it, O(paragraphs) a keystroke, until it went through the track's
block counts when the root holds only ASCII and embeds (`_embed_at`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from palimpsest.history.attribution import AttributionIndex  # noqa: E402
from palimpsest.store.base import Event  # noqa: E402

NODE_DIR = ROOT / "tests" / "node"
WRITE = """
import * as Y from 'yjs'
const [P, K] = process.argv.slice(1).map(Number)
const doc = new Y.Doc({ gc: false })
const log = []
doc.on('update', (u) => log.push(Buffer.from(u).toString('hex')))
const root = doc.get('root', Y.XmlText)
let last
for (let i = 0; i < P; i++) {
  doc.transact(() => {
    const para = new Y.XmlText()
    root.insertEmbed(i, para)
    para.setAttribute('__type', 'paragraph')
    const m = new Y.Map(); m.set('__type', 'text'); m.set('__format', 0)
    para.insertEmbed(0, m)
    para.insert(1, 'Paragraph number ' + i + ' ')
    last = para
  })
}
for (let k = 0; k < K; k++) last.insert(20 + k, 'x')
process.stdout.write(JSON.stringify(log), () => process.exit(0))
"""


def session(paragraphs: int, keys: int) -> list[Event]:
    out = subprocess.run(
        ["node", "--input-type=module", "-e", WRITE, "--", str(paragraphs), str(keys)],
        cwd=NODE_DIR, check=True, capture_output=True, timeout=300,
    ).stdout  # fmt: skip
    return [
        Event("lex", i + 1, 0, "ann", "edit", bytes.fromhex(h), {})
        for i, h in enumerate(json.loads(out))
    ]


def fold_keys(log: list[Event], paragraphs: int, by_ids: bool) -> float:
    """CPU µs per keystroke folded, after the paragraphs."""
    index = AttributionIndex("lex", ["root"], by_ids=by_ids)
    index.fold(log[:paragraphs])
    t0 = time.process_time()
    index.fold(log[paragraphs:])
    return (time.process_time() - t0) / (len(log) - paragraphs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paragraphs", default="200,2000,5000")
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for p in (int(x) for x in args.paragraphs.split(",")):
        log = session(p, args.keys)
        for by_ids in (True, False):
            took = [fold_keys(log, p, by_ids) for _ in range(args.runs)]
            how = "ids" if by_ids else "deltas"
            print(
                f"{p:>6} paragraphs, by {how:<6}: {statistics.median(took):7.1f} µs a keystroke "
                f"({min(took):.1f}-{max(took):.1f} over {args.runs} runs)",
                flush=True,
            )


if __name__ == "__main__":
    main()
