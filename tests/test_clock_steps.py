"""A server whose wall clock steps (NTP, a VM restored) while it writes: what the log
says and what time lookups answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import RunningServer

from palimpsest import room
from palimpsest.maintenance import plan_compact
from palimpsest.util import iso


class Clock:
    """The server's wall clock, in ms, set by the test (palimpsest.room stamps events)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


async def test_a_backward_step_keeps_ts_rising_and_time_lookups_right(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events stamped after the clock stepped back 10 minutes get their document's last
    ts, so the version at a time between v1 and v2 is v1's, events?since= and ?until=
    split there, and ``compact --before`` that time folds v1 only (before, it folded
    events written after the time: their ts said earlier)."""
    t0 = 1_800_000_000_000
    clock = Clock(t0)
    monkeypatch.setattr(room, "now_ms", clock)
    async with httpx.AsyncClient(base_url=server.url) as c:

        async def put(text: str, at: int) -> Any:
            clock.ms = at
            r = await c.put("/api/docs/notes/text?user=alice", json={"text": text})
            assert r.status_code == 200, r.text
            return r.json()

        await put("one", t0)
        await put("one two", t0 + 2_000)
        await put("one two three", t0 - 600_000 + 3_000)  # the clock stepped back 10 min
        await put("one two three four", t0 - 600_000 + 4_000)
        r = await c.get("/api/docs/notes/events?user=alice")
        stamps = [(e["seq"], e["ts"]) for e in r.json()["events"]]
        assert [s for s, _ in stamps] == [1, 2, 3, 4]
        assert [t for _, t in stamps] == [iso(t0), *[iso(t0 + 2_000)] * 3]
        between = iso(t0 + 1_000)
        r = await c.get(f"/api/docs/notes/versions?at={between}&user=alice")
        assert r.status_code == 200 and r.json()["seq"] == 1
        assert r.json()["roots"]["content"]["value"] == "one"
        r = await c.get(f"/api/docs/notes/events?since={between}&user=alice")
        assert [e["seq"] for e in r.json()["events"]] == [2, 3, 4]
        r = await c.get(f"/api/docs/notes/events?until={between}&user=alice")
        assert [e["seq"] for e in r.json()["events"]] == [1]
    plan = await plan_compact(server.backend.store, "notes", between)
    assert plan.before == 1
