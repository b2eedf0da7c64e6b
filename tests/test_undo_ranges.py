"""The ID-range algebra under undo steps, against a plain model: a client's ranges stand
for the set of clocks they cover, and every operation must do to those sets what set
union, intersection and difference do, in the canonical form (sorted, disjoint, not
touching, not empty)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from palimpsest.ranges import (
    Ranges,
    decode_ranges,
    encode_ranges,
    intersect,
    size,
    subtract,
    union,
    union_into,
)
from palimpsest.undo.stacks import Step, _runs

items = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 80), st.integers(0, 9)), max_size=40)

Model = dict[int, set[int]]


def model_of(pieces: list[tuple[int, int, int]]) -> Model:
    out: Model = {}
    for client, start, length in pieces:
        out.setdefault(client, set()).update(range(start, start + length))
    return {c: s for c, s in out.items() if s}


def clocks(r: Ranges) -> Model:
    """The model of ranges, checking their canonical form on the way."""
    out: Model = {}
    for c, rs in r.items():
        assert rs, f"client {c} kept with no range"
        for (_, e1), (s2, _) in zip(rs, rs[1:], strict=False):
            assert e1 < s2, f"client {c}: {rs} not sorted, disjoint and apart"
        for s, e in rs:
            assert s < e, f"client {c}: empty range in {rs}"
        out[c] = {x for s, e in rs for x in range(s, e)}
    return out


def build(pieces: list[tuple[int, int, int]]) -> Ranges:
    got: Ranges = {}
    for client, start, length in pieces:
        union_into(got, {client: [(start, start + length)]})
    return {c: r for c, r in got.items() if r}


@given(items)
def test_union_into_is_set_union(pieces: list[tuple[int, int, int]]) -> None:
    assert clocks(build(pieces)) == model_of(pieces)


@given(items, items)
def test_union_intersect_subtract_size_and_encoding(
    pa: list[tuple[int, int, int]], pb: list[tuple[int, int, int]]
) -> None:
    a, b = build(pa), build(pb)
    ma, mb = model_of(pa), model_of(pb)
    clients = set(ma) | set(mb)

    def op(f: object) -> Model:
        out = {c: f(ma.get(c, set()), mb.get(c, set())) for c in clients}  # type: ignore[operator]
        return {c: s for c, s in out.items() if s}

    assert clocks(union(a, b)) == op(set.union)
    assert clocks(intersect(a, b)) == op(set.intersection)
    assert clocks(subtract(a, b)) == op(set.difference)
    assert size(a) == sum(len(s) for s in ma.values())
    assert decode_ranges(encode_ranges(a)) == a


@given(st.lists(st.integers(1, 500), unique=True))
def test_step_seqs_survive_the_compact_json(seqs: list[int]) -> None:
    seqs.sort()
    step = Step(seqs, {1: [(0, 3)]}, {})
    data = step.to_json()
    assert len(data["runs"]) == len(_runs(seqs)) <= max(1, len(seqs))
    assert Step.from_json(data).seqs == seqs
