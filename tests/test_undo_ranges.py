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


def naive_subtract(a: Ranges, b: Ranges) -> Ranges:
    """The former subtract: every range of `a` against every range of `b`."""
    out: Ranges = {}
    for c, ra in a.items():
        rest: list[tuple[int, int]] = []
        for start, end in ra:
            cur = start
            for cs, ce in b.get(c, []):
                if ce <= cur or cs >= end:
                    continue
                if cs > cur:
                    rest.append((cur, cs))
                cur = max(cur, ce)
            if cur < end:
                rest.append((cur, end))
        if rest:
            out[c] = rest
    return out


def test_subtract_answers_what_the_naive_one_does_on_random_inputs() -> None:
    import random

    rng = random.Random(4)
    for _ in range(3000):
        a, b = {}, {}
        for r in (a, b):
            for client in rng.sample(range(4), rng.randint(0, 3)):
                clock, got = 0, []
                for _ in range(rng.randint(0, 12)):
                    clock += rng.randint(0, 6)
                    n = rng.randint(1, 6)
                    got.append((clock, clock + n))
                    clock += n
                r[client] = got  # sorted, disjoint (touching allowed, as Yjs writes them)
        assert subtract(a, b) == naive_subtract(a, b), (a, b)
        # unmerged, unsorted ranges (a delete set as a client may send it): same IDs
        shuffled = {c: rng.sample(rs, len(rs)) for c, rs in b.items()}
        assert ids(subtract(a, shuffled)) == ids(naive_subtract(a, b))


def ids(r: Ranges) -> set[tuple[int, int]]:
    return {(c, x) for c, rs in r.items() for s, e in rs for x in range(s, e)}


class _Counted(list[tuple[int, int]]):
    """A list that counts how many of its elements are read."""

    reads = 0

    def __getitem__(self, i: object) -> object:  # type: ignore[override]
        _Counted.reads += 1
        return super().__getitem__(i)  # type: ignore[index]

    def __iter__(self) -> object:  # type: ignore[override]
        for x in super().__iter__():
            _Counted.reads += 1
            yield x


def test_subtract_reads_each_range_a_bounded_number_of_times() -> None:
    """Linear: a delete set of n ranges minus another of n ranges reads O(n) ranges (the
    quadratic version read n^2 = 4,000,000 here)."""
    n = 2000
    a = {1: _Counted((4 * i, 4 * i + 3) for i in range(n))}
    b = {1: _Counted((4 * i + 1, 4 * i + 2) for i in range(n))}
    for f, bound in ((subtract, 12 * n), (naive_subtract, None)):
        _Counted.reads = 0
        got = f(a, b)  # type: ignore[arg-type]
        assert got[1][:2] == [(0, 1), (2, 3)] and len(got[1]) == 2 * n
        if bound is not None:
            assert _Counted.reads <= bound, _Counted.reads
        else:
            assert _Counted.reads > n * n  # (the test can tell the quadratic one)


def test_intersect_of_a_few_ranges_with_many_is_the_walks() -> None:
    """A client with a few ranges on one side and many on the other is intersected by
    bisection (a step's insertions and a restore's deletions): the same ranges, in the
    same order, as the walk over both, touching ranges included."""
    import random

    rng = random.Random(5)
    for _ in range(2000):
        a, b = {}, {}
        for r, most in ((a, rng.choice((1, 2, 4))), (b, rng.choice((20, 60)))):
            for client in rng.sample(range(3), rng.randint(1, 3)):
                clock, got = 0, []
                for _ in range(rng.randint(1, most)):
                    clock += rng.randint(0, 5)
                    n = rng.randint(1, 5 if most > 4 else 40)
                    got.append((clock, clock + n))
                    clock += n
                r[client] = got
        ma, mb = clocks(union({}, a)), clocks(union({}, b))
        want = {c: ma[c] & mb[c] for c in ma if c in mb and ma[c] & mb[c]}
        for x, y in ((a, b), (b, a)):
            got = intersect(x, y)
            assert {c: {v for s, e in rs for v in range(s, e)} for c, rs in got.items()} == want
            assert all(s < e for rs in got.values() for s, e in rs)
            assert all(rs[i][1] <= rs[i + 1][0] for rs in got.values() for i in range(len(rs) - 1))
        assert intersect(a, b) == intersect(b, a)
