"""Sets of Yjs item IDs as sorted, disjoint ranges per client (an IdSet),
and the arithmetic on them that undo, the update decoder and the client share."""

from __future__ import annotations

import base64
import bisect

from . import protocol as P

#: A Yjs IdSet as {client: [(start, end), ...]}, sorted and disjoint
Ranges = dict[int, list[tuple[int, int]]]


def _normalize(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _sorted_disjoint(ranges: list[tuple[int, int]]) -> bool:
    return all(ranges[i][1] <= ranges[i + 1][0] for i in range(len(ranges) - 1))


def union(a: Ranges, b: Ranges) -> Ranges:
    out = {c: list(r) for c, r in a.items()}
    union_into(out, b)
    return out


def union_into(target: Ranges, b: Ranges) -> None:
    """Add b's ranges to target, in place.

    On the path of every edit, and a step can hold thousands of them: see insert."""
    for c, rs in b.items():
        cur = target.get(c)
        if cur is None:
            cur = target[c] = []
        for start, end in rs:
            if end > start:
                insert(cur, start, end)
        if not cur:
            del target[c]


def insert(cur: list[tuple[int, int]], start: int, end: int) -> None:
    """Add [start, end) to sorted disjoint ranges, merging what it touches. A range at or
    past the end (every insertion: Yjs clocks only grow) is appended or merged in O(1);
    any other (a deletion in the middle) is placed by bisection."""
    if not cur or start > cur[-1][1]:
        cur.append((start, end))
        return
    if start >= cur[-1][0]:
        if end > cur[-1][1]:
            cur[-1] = (cur[-1][0], end)
        return
    i = bisect.bisect_left(cur, (start, end))
    lo = i - 1 if i > 0 and cur[i - 1][1] >= start else i
    hi = i
    while hi < len(cur) and cur[hi][0] <= end:
        hi += 1
    if lo < hi:
        start, end = min(start, cur[lo][0]), max(end, cur[hi - 1][1])
    cur[lo:hi] = [(start, end)]


#: a client's ranges on one side of ``intersect`` this many times fewer than on the
#: other: the other's are found by bisection instead of walked
_BISECT_RATIO = 8


def intersect(a: Ranges, b: Ranges) -> Ranges:
    """The IDs in both `a` and `b` (sorted and disjoint per client): each overlap of a
    range of `a` with one of `b`, in order. A client with a few ranges on one side and
    many on the other (a step's insertions and a restore's deletions: 16,000 ranges)
    looks the few up by bisection, with the same result, instead of a walk over all."""
    out: Ranges = {}
    for c, ra in a.items():
        rb = b.get(c)
        if not rb:
            continue
        if len(ra) * _BISECT_RATIO < len(rb) or len(rb) * _BISECT_RATIO < len(ra):
            few, many = (ra, rb) if len(ra) < len(rb) else (rb, ra)
            found = _overlaps(few, many)
            if found:
                out[c] = found
            continue
        got: list[tuple[int, int]] = []
        i = j = 0
        while i < len(ra) and j < len(rb):
            lo, hi = max(ra[i][0], rb[j][0]), min(ra[i][1], rb[j][1])
            if lo < hi:
                got.append((lo, hi))
            if ra[i][1] < rb[j][1]:
                i += 1
            else:
                j += 1
        if got:
            out[c] = got
    return out


def _overlaps(few: list[tuple[int, int]], many: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """intersect's walk for one client, each range of `few` looked up in `many`: the
    same overlaps in the same order (both sorted and disjoint: each pair's overlap is
    met once, and they come sorted)."""
    got: list[tuple[int, int]] = []
    n = len(many)
    for start, end in few:
        k = bisect.bisect_left(many, (start, start))
        if k and many[k - 1][1] > start:
            k -= 1  # (the one range before that may reach into this one)
        while k < n and many[k][0] < end:
            lo, hi = max(start, many[k][0]), min(end, many[k][1])
            if lo < hi:
                got.append((lo, hi))
            k += 1
    return got


def subtract(a: Ranges, b: Ranges) -> Ranges:
    """The IDs of `a` that are not in `b` (both sorted and disjoint per client).

    One merge walk per client: O(len(a's ranges) + len(b's ranges)); each range of `a`
    used to scan every range of `b`, quadratic. Ranges read off the wire unmerged (a
    delete set as sent) are sorted and merged first."""
    out: Ranges = {}
    for c, ra in a.items():
        if not _sorted_disjoint(ra):
            ra = _normalize(ra)
        cuts = b.get(c)
        if not cuts:
            kept = [(s, e) for s, e in ra if s < e]
            if kept:
                out[c] = kept
            continue
        if not _sorted_disjoint(cuts):
            cuts = _normalize(cuts)
        rest: list[tuple[int, int]] = []
        j, n = 0, len(cuts)
        for start, end in ra:
            while j < n and cuts[j][1] <= start:
                j += 1  # cuts wholly before this range: before every later one too
            cur = start
            k = j
            while k < n and cuts[k][0] < end:
                cs, ce = cuts[k]
                if cs > cur:
                    rest.append((cur, cs))
                if ce > cur:
                    cur = ce
                if ce > end:
                    break  # it reaches into the next range of `a`: keep it (k, not k+1)
                k += 1
            if cur < end:
                rest.append((cur, end))
        if rest:
            out[c] = rest
    return out


def size(a: Ranges) -> int:
    return sum(e - s for r in a.values() for s, e in r)


def encode_ranges(a: Ranges) -> bytes:
    """The Yjs v1 encoding of an IdSet (the delete-set format)."""
    out = bytearray(P.write_var_uint(len(a)))
    for client in sorted(a):
        out += P.write_var_uint(client) + P.write_var_uint(len(a[client]))
        for start, end in a[client]:
            out += P.write_var_uint(start) + P.write_var_uint(end - start)
    return bytes(out)


def decode_ranges(data: bytes) -> Ranges:
    return {c: _normalize(rs) for c, rs in read_id_set(P.Reader(data)).items() if rs}


def read_id_set(r: P.Reader, what: str = "IdSet") -> Ranges:
    """An IdSet in the Yjs v1 encoding (a delete set's too) from `r`, as written: each
    client's ranges in their order, unmerged."""
    out: Ranges = {}
    for _ in range(r.read_var_uint(f"{what} clients")):
        client = r.read_var_uint(f"{what} client")
        got = out.setdefault(client, [])
        for _ in range(r.read_var_uint(f"{what} ranges")):
            start = r.read_var_uint(f"{what} clock")
            got.append((start, start + r.read_var_uint(f"{what} length")))
    return out


def may_overlap(a: Ranges, b: Ranges) -> bool:
    """False when a and b surely share no ID (cheap: per client, the overall bounds)."""
    for c, ra in a.items():
        rb = b.get(c)
        if rb and ra[0][0] < rb[-1][1] and rb[0][0] < ra[-1][1]:
            return True
    return False


def to_b64(a: Ranges) -> str:
    return base64.b64encode(encode_ranges(a)).decode()


def from_b64(s: str) -> Ranges:
    return decode_ranges(base64.b64decode(s))


def inserted(before: bytes, after: bytes) -> Ranges:
    """The IDs a transaction created, from its before/after state vectors."""
    b, a = P.decode_state_vector(before), P.decode_state_vector(after)
    return {c: [(b.get(c, 0), clock)] for c, clock in a.items() if clock > b.get(c, 0)}
