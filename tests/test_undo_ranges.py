"""The ID-range algebra under undo steps: incremental union equals the plain definition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.undo import Step, _normalize, _runs, union_into

ranges = st.lists(
    st.tuples(st.integers(1, 3), st.integers(0, 80), st.integers(0, 9)), max_size=40
)


@given(ranges)
def test_union_into_equals_sorting_and_merging(items: list[tuple[int, int, int]]) -> None:
    got: dict[int, list[tuple[int, int]]] = {}
    plain: dict[int, list[tuple[int, int]]] = {}
    for client, start, length in items:
        union_into(got, {client: [(start, start + length)]})
        plain.setdefault(client, []).append((start, start + length))
    expected = {c: _normalize(r) for c, r in plain.items() if _normalize(r)}
    assert {c: r for c, r in got.items() if r} == expected


@given(st.lists(st.integers(1, 500), unique=True))
def test_step_seqs_survive_the_compact_json(seqs: list[int]) -> None:
    seqs.sort()
    step = Step(seqs, {1: [(0, 3)]}, {})
    data = step.to_json()
    assert len(data["runs"]) == len(_runs(seqs)) <= max(1, len(seqs))
    assert Step.from_json(data).seqs == seqs
