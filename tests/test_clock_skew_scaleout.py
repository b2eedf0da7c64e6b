"""Two `palimpsest serve` processes on PostgreSQL and Redis, one of them with a wall clock
5 minutes ahead (libfaketime on that process only): the fast one's stamps are run on from
on the document they were seen on, not on every document of the correct process."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from scaleout import Cluster, fanout_url, fresh_schema

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
AHEAD_S = 300


async def put(http: httpx.AsyncClient, url: str, doc: str, text: str) -> None:
    r = await http.put(f"{url}/api/docs/{doc}/text?user=ann", json={"text": text})
    assert r.status_code == 200, r.text


async def last_ts(http: httpx.AsyncClient, url: str, doc: str) -> float:
    r = await http.get(f"{url}/api/docs/{doc}/events?order=desc&limit=1")
    assert r.status_code == 200, r.text
    return datetime.fromisoformat(r.json()["events"][0]["ts"]).timestamp()


@pytest.mark.skipif(
    not LIBFAKETIME.exists() or shutil.which("faketime") is None, reason="no libfaketime"
)
async def test_a_process_with_a_fast_clock_does_not_move_the_other_processs_new_documents(
    tmp_path: Path,
) -> None:
    """Before, the correct process took up the fast one's stamp of a shared document
    (the store raised its own event there to it) into its one clock, and stamped every
    document 5 minutes ahead from then on: a new document that only it wrote too."""
    async with fresh_schema() as store_url:
        c = Cluster(store_url, fanout_url(), tmp_path)
        right = c.add()
        c.env = {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME": f"+{AHEAD_S}s",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        fast = c.add()
        try:
            right.start()
            fast.start()
            async with httpx.AsyncClient(timeout=30) as http:
                await put(http, fast.http_url, "shared", "from the fast clock")
                t_fast = await last_ts(http, fast.http_url, "shared")
                assert t_fast > datetime.now().timestamp() + AHEAD_S / 2  # (faketime works)
                await put(http, right.http_url, "shared", "from the right clock")
                # the store raised it to the document's last ts: that is kept
                assert await last_ts(http, right.http_url, "shared") >= t_fast
                await put(http, right.http_url, "fresh", "only the right process wrote it")
                ts = await last_ts(http, right.http_url, "fresh")
                assert ts < datetime.now().timestamp() + AHEAD_S / 2, (ts, t_fast)
        finally:
            c.stop_all()
