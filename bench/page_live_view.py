#!/usr/bin/env python3
"""How long the page's thread takes to show a keystroke in a large document it only shows.

    .venv/bin/python bench/page_live_view.py [--paragraphs 2000] [--keys 30] [--runs 3]

A Tiptap-shaped document (an XML root of paragraphs, written by pycrdt) is opened in
Palimpsest's page in Chromium, where it is drawn live and read-only; another client then
types `--keys` characters into one paragraph, one update every 50 ms. Measured in the
page: from each update's arrival to the end of the animation frame that draws it (the
draw runs in that frame, before the measuring callback), p50 and max in ms, per run.
Needs Chromium at /usr/bin/chromium (or $PALIMPSEST_CHROMIUM) and Playwright; the server
is this checkout's, on a free loopback port with a temporary database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright
from pycrdt import XmlElement, XmlFragment, XmlText

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from palimpsest import client  # noqa: E402

CHROMIUM = os.environ.get("PALIMPSEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MEASURE = """() => {
  window.took = []
  window.palimpsest.ydoc.on('update', () => {
    const t0 = performance.now()
    requestAnimationFrame(() => window.took.push(performance.now() - t0))
  })
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(base: str, doc: str, paragraphs: int, keys: int) -> list[float]:
    async with client.connect(base, doc, user="ann") as s:
        frag = s.doc.get("default", type=XmlFragment)
        with s.doc.transaction():
            for i in range(paragraphs):
                para = frag.children.append(XmlElement("paragraph"))
                para.children.append(XmlText(f"Paragraph {i}: words that fill a line, or so."))
        await s.flush()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await browser.new_page()
        await page.goto(f"{base}/?doc={doc}&user=viewer")
        await page.wait_for_selector("#live p")
        await page.evaluate(MEASURE)
        async with client.connect(base, doc, user="bob") as s:
            frag = s.doc.get("default", type=XmlFragment)
            await s.wait_for(lambda: len(list(frag.children)) == paragraphs, timeout=30)
            kids = list(frag.children)
            text = list(kids[paragraphs // 2].children)[0]
            assert isinstance(text, XmlText)
            for _ in range(keys):
                text.insert(0, "x")
                await asyncio.sleep(0.05)
            await s.flush()
        deadline = time.monotonic() + 10
        took: list[Any] = []
        while time.monotonic() < deadline:
            took = await page.evaluate("() => window.took")
            if len(took) >= keys:
                break
            await asyncio.sleep(0.1)
        await browser.close()
    return [float(t) for t in took]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--paragraphs", type=int, default=2000)
    ap.add_argument("--keys", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "palimpsest"), "serve", "--port", str(port),
             "--db", str(Path(tmp) / "bench.db")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(100):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
            base = f"http://127.0.0.1:{port}"
            for r in range(args.runs):
                took = asyncio.run(run(base, f"live-{r}", args.paragraphs, args.keys))
                print(
                    f"run {r + 1}: {len(took)} keystrokes, p50 {statistics.median(took):.1f} ms, "
                    f"max {max(took):.1f} ms",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(timeout=15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
