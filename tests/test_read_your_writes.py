"""A read that starts after a write was answered sees it, whatever else is being read
meanwhile: seen on SQLite, ``GET …/versions/head`` answered 404 "no document named …" for
a document whose ``PUT …/text`` had answered 200, while other requests' reads were in
flight (2 of 300 documents in one run, 48 of 2,000 in another)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from conftest import run_server

from palimpsest.settings import Settings


async def test_history_reads_after_a_put_see_the_document_while_other_reads_run(
    tmp_path: Path,
) -> None:
    settings = Settings(db=str(tmp_path / "s.db"), max_http_writes_per_second=0)
    async with (
        run_server(settings) as srv,
        httpx.AsyncClient(base_url=srv.url, params={"user": "ada"}, timeout=60) as http,
    ):
        turns = asyncio.Semaphore(8)
        wrong: list[tuple[str, str, int, str]] = []

        async def one(i: int) -> None:
            doc = f"d{i:04d}"
            async with turns:
                r = await http.put(f"/api/docs/{doc}/text", json={"text": f"doc {i} text"})
                assert r.status_code == 200, r.text
                for what in ("versions/head", "blame", "sessions"):
                    r = await http.get(f"/api/docs/{doc}/{what}")
                    if r.status_code != 200:
                        wrong.append((doc, what, r.status_code, r.text))

        await asyncio.gather(*(one(i) for i in range(300)))
        assert wrong == []
