"""A stored attribution index far behind the head is built again from the start (by
ids) rather than extended (by text deltas, whose every event costs in proportion to the
document's length: the field's first blame after a restart extended 36,870 -> 105,047
events in 578 s). One a few events behind is extended from its seq."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from test_snapshot_retention import bench, trace_texts

from palimpsest.backend import Backend
from palimpsest.history import attribution_codec as codec
from palimpsest.history.attribution_cache import AttributionCache
from palimpsest.settings import Settings

assert "history_bench" in sys.modules

N = 3_000
FIRST = 1_500
EVERY = 500


@pytest.mark.parametrize("most", [N - FIRST, N - FIRST - 1])
async def test_an_index_read_back_far_behind_is_built_again_by_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, most: int
) -> None:
    events, _ = bench.trace_events("automerge-paper", limit=N)
    texts = trace_texts("automerge-paper", N)
    async with Backend(Settings(db=str(tmp_path / "f.db"), snapshot_every=EVERY)) as backend:
        await bench.write_log(backend.store, "paper", events[:FIRST], EVERY)
        first = AttributionCache(backend.store)
        await first.get("paper", FIRST, ["content"])
        await first.drain()
        await backend.store.append([("paper", events[FIRST:])])

        cold = AttributionCache(backend.store)
        cold.extend_read_back_max = most
        with caplog.at_level(logging.INFO, logger="palimpsest.history"):
            index = await cold.get("paper", N, ["content"])
        await cold.drain()
        assert index.text_at("content", N) == texts[N]
        assert index.text_at("content", 1234) == texts[1234]
        assert [seq for _, _, seq in cold.restores] == [FIRST]
        far = most < N - FIRST
        behind = f"attribution index of paper at seq {FIRST} is {N - FIRST} events behind"
        assert any(behind in r.getMessage() for r in caplog.records) is far
        assert cold.rebuilt_far_behind == int(far)
        # built again from the start, by ids; or extended from the stored seq
        assert [seq for _, _, seq in cold.builds] == ([N] if far else [])
        assert index.by_ids == (N if far else 0)
        stored = await backend.store.derived("paper", codec.KIND)
        assert stored is not None and stored[0] == N
