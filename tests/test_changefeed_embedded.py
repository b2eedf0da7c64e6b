"""The changefeed in the embedded API: an app passes its own Changefeed (webhooks with
their own secret), which replaces the built-in one, served in-process by uvicorn."""

from __future__ import annotations

from pathlib import Path

from conftest import eventually, run_server
from feedhelp import RawStream, type_into
from webhook_receiver import Receiver

from palimpsest import Changefeed, Palimpsest, Settings, Webhook
from palimpsest.changefeed import verify
from palimpsest.store.memory import MemoryStore


async def test_an_apps_own_changefeed_delivers_and_streams(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "x.db"), unload_after_seconds=0.5)
    with Receiver() as rx:
        mine = Changefeed([Webhook(rx.url, secret="app-key")], retry_first=0.05, heartbeat=0.5)
        collab = Palimpsest(store=MemoryStore(), extensions=[mine], settings=settings)
        feeds = [e for e in collab.backend.extensions if isinstance(e, Changefeed)]
        assert feeds == [mine]  # the built-in one steps aside
        async with run_server(settings, collab.backend) as srv:
            await type_into(srv.ws_url, "emb", ["one ", "two"])
            await eventually(lambda: len(rx.accepted_events()) >= 2, what="delivered")
            async with RawStream(f"{srv.url}/api/docs/emb/events/stream") as s:
                evs = await s.events(2)
    assert [e["seq"] for e in evs] == [1, 2]
    assert [(e["doc"], e["seq"]) for e in rx.accepted_events()] == [("emb", 1), ("emb", 2)]
    for d in rx.deliveries:
        assert verify("app-key", d.body, d.headers["x-palimpsest-signature"])
