"""Sealed segments: a run of consecutive events of one document, stored column by column
and compressed, with a checksum. Pure encode/decode, no I/O.

A segment holds events ``first_seq .. first_seq + n - 1`` of one document (``seq`` is
implied by the position inside the segment). Its columns, in this order:

- ``len``   the byte length of each update                      (uint32)
- ``ts``    the first timestamp, then the difference to the one before (int64; clocks
            can step back, so the differences are signed)
- ``pos``   the first global commit position, then the differences (int64, > 0)
- ``actor`` interned actor ids                                  (uint32)
- ``kind``  interned kind ids                                   (uint32)
- ``mlen``  the byte length of each event's meta JSON text, 0 for ``{}`` (uint32)
- the meta texts, concatenated (UTF-8)
- the updates, concatenated

Each integer column is a little-endian array whose bytes are transposed (all first bytes,
then all second bytes…): small numbers then leave long runs of zero bytes that compress to
almost nothing, and both directions are slicing at C speed. The stored blob is a header
(format byte, event count, first seq) and the compressed body; its checksum is the SHA-256
of the stored blob, so damage is found before anything is decompressed.

Formats: 1 is the body deflated (zlib level 6), 2 (written since) is the body as a raw
LZMA2 stream from the standard library's ``lzma``, preset 0 (its fast match finder) with
``lc=1, lp=0, pb=0``. Both are read. Measured on the 254 segments of automerge-paper
(21.7 MB of bodies; bench/segment_codecs.py): zlib 6 keeps 1.37 MB in 0.57 ms per
segment, this LZMA2 0.72 MB (-47 %) in 0.58 ms, zstd (a dependency) 0.91-1.00 MB at
levels 3-9; LZMA2's normal mode 0.61 MB but at six times the CPU, which sealing spends
during ingest. Inflating one segment takes 0.26 ms instead of 0.15 ms, next to ~1.5 ms
to turn its 1,024 events into objects.
"""

from __future__ import annotations

import hashlib
import itertools
import lzma
import operator
import struct
import sys
import threading
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: the format byte of the blobs this module writes (1: zlib, still read)
FORMAT = 2
FORMAT_ZLIB = 1
#: format 2's raw LZMA2 stream: fixed for good, since a raw stream does not carry them
#: (the dictionary of preset 0 is 256 KiB; a body is at most ~100 kB)
LZMA_FILTERS = [
    {"id": lzma.FILTER_LZMA2, "preset": 0, "dict_size": 1 << 18, "lc": 1, "lp": 0, "pb": 0}
]
#: events per sealed segment (a full run; the remainder stays in the tail). 1024: a
#: segment of keystrokes compresses to 3-20 kB, so the page it ends on wastes little (at 256
#: a 3 kB segment took a 4 kB page: 0.40x the raw bytes instead of 0.25x on
#: sveltecomponent), and reading one event decodes at most 1024 (about 1.5 ms)
SEGMENT_EVENTS = 1024
#: format 1's deflate level, kept for reading tests that write format 1
LEVEL = 6

_HEADER = struct.Struct("<BIQ")  # format, n, first_seq
_BIG = sys.byteorder == "big"


class SegmentDamaged(ValueError):
    """A stored segment whose checksum or structure does not hold."""


@dataclass(frozen=True, slots=True)
class Columns:
    """The per-event fields of a run of consecutive events, as parallel lists."""

    first_seq: int
    ts: list[int]
    pos: list[int]
    actor: list[int]
    kind: list[int]
    meta: list[str]  # "" for an empty meta
    updates: list[bytes]

    def __len__(self) -> int:
        return len(self.updates)

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.updates) - 1


@dataclass(frozen=True, slots=True)
class Sealed:
    """A segment ready to store: its blob, checksum and the index fields kept beside it."""

    first_seq: int
    last_seq: int
    first_pos: int
    last_pos: int
    ts_min: int
    ts_max: int
    raw_bytes: int  # the update bytes it holds (the store's events_bytes)
    blob: bytes
    checksum: bytes


def checksum(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


def _shuffle(values: Sequence[int], code: str) -> bytes:
    arr = array(code, values)
    if _BIG:
        arr.byteswap()
    raw = arr.tobytes()
    w = arr.itemsize
    return b"".join(raw[i::w] for i in range(w))


def _unshuffle(data: bytes | memoryview, n: int, code: str) -> list[int]:
    w = array(code).itemsize
    if len(data) != n * w:
        raise SegmentDamaged(f"a column holds {len(data)} bytes, expected {n * w}")
    raw = bytearray(n * w)
    for i in range(w):
        raw[i::w] = data[i * n : (i + 1) * n]
    arr = array(code)
    arr.frombytes(raw)
    if _BIG:
        arr.byteswap()
    return arr.tolist()


def _deltas(values: list[int]) -> list[int]:
    return [values[0], *map(operator.sub, values[1:], values[:-1])]


def _sums(deltas: list[int]) -> list[int]:
    return list(itertools.accumulate(deltas))


# the integer columns and their array type codes ("I" is 4 bytes, "q" 8, everywhere
# CPython runs; checked at import so that a blob is the same on every machine)
_U32, _I64 = "I", "q"
assert array(_U32).itemsize == 4 and array(_I64).itemsize == 8


def encode(cols: Columns, fmt: int = FORMAT) -> Sealed:
    """Seal a run of events (at least one) into a stored segment (``fmt`` 1 only to make
    the segments of older versions in tests)."""
    n = len(cols)
    if n == 0:
        raise ValueError("a segment holds at least one event")
    if not (len(cols.ts) == len(cols.pos) == len(cols.actor) == len(cols.kind) == len(cols.meta)
            == n):  # fmt: skip
        raise ValueError("the columns of a segment must have one value per event")
    metas = list(map(str.encode, cols.meta))
    body = b"".join(
        [
            _shuffle(list(map(len, cols.updates)), _U32),
            _shuffle(_deltas(cols.ts), _I64),
            _shuffle(_deltas(cols.pos), _I64),
            _shuffle(cols.actor, _U32),
            _shuffle(cols.kind, _U32),
            _shuffle(list(map(len, metas)), _U32),
            *metas,
            *cols.updates,
        ]
    )
    if fmt == FORMAT:
        packed = lzma.compress(body, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
    elif fmt == FORMAT_ZLIB:
        packed = zlib.compress(body, LEVEL)
    else:
        raise ValueError(f"no segment format {fmt}")
    blob = _HEADER.pack(fmt, n, cols.first_seq) + packed
    return Sealed(
        first_seq=cols.first_seq,
        last_seq=cols.last_seq,
        first_pos=min(cols.pos),
        last_pos=max(cols.pos),
        ts_min=min(cols.ts),
        ts_max=max(cols.ts),
        raw_bytes=sum(map(len, cols.updates)),
        blob=blob,
        checksum=checksum(blob),
    )


def damage(blob: bytes, stored_checksum: bytes) -> str | None:
    """Why a stored segment cannot be used (checksum only, no decompression), or None."""
    if checksum(blob) != bytes(stored_checksum):
        return "checksum does not match"
    if len(blob) < _HEADER.size or blob[0] not in (FORMAT, FORMAT_ZLIB):
        return f"unknown segment format {blob[0] if blob else None}"
    return None


def decode(blob: bytes, stored_checksum: bytes) -> Columns:
    """The columns of a stored segment; SegmentDamaged when its checksum or structure
    does not hold (a damaged segment is never decoded into events)."""
    why = damage(blob, stored_checksum)
    if why is not None:
        raise SegmentDamaged(why)
    fmt, n, first_seq = _HEADER.unpack_from(blob)
    packed = blob[_HEADER.size :]
    try:
        if fmt == FORMAT:
            raw = lzma.decompress(packed, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
        else:
            raw = zlib.decompress(packed)
    except (zlib.error, lzma.LZMAError) as e:
        raise SegmentDamaged(f"does not decompress: {e}") from e
    DECOMPRESSED.add(len(raw))
    body = memoryview(raw)
    at = 0

    def take(size: int) -> memoryview:
        nonlocal at
        if at + size > len(body):
            raise SegmentDamaged("the body is shorter than its columns")
        part = body[at : at + size]
        at += size
        return part

    lens = _unshuffle(take(4 * n), n, _U32)
    ts = _sums(_unshuffle(take(8 * n), n, _I64))
    pos = _sums(_unshuffle(take(8 * n), n, _I64))
    actor = _unshuffle(take(4 * n), n, _U32)
    kind = _unshuffle(take(4 * n), n, _U32)
    mlens = _unshuffle(take(4 * n), n, _U32)
    # the texts and the updates, sliced from the body by their running ends (one slice
    # per value: this loop is most of a read's decoding)
    ends = list(itertools.accumulate(mlens, initial=at))
    if ends[-1] > len(raw):
        raise SegmentDamaged("the body is shorter than its columns")
    try:
        meta = [raw[a:b].decode() for a, b in itertools.pairwise(ends)]
    except UnicodeDecodeError as e:
        raise SegmentDamaged(f"a meta text is not UTF-8: {e}") from e
    ends = list(itertools.accumulate(lens, initial=ends[-1]))
    if ends[-1] > len(raw):
        raise SegmentDamaged("the body is shorter than its columns")
    updates = [raw[a:b] for a, b in itertools.pairwise(ends)]
    if ends[-1] != len(raw):
        raise SegmentDamaged(f"{len(raw) - ends[-1]} bytes after the last column")
    return Columns(first_seq, ts, pos, actor, kind, meta, updates)


class _Counter:
    """Bytes of segment bodies decompressed by this process (every reader's, threads
    included): what a read cost, for benches and tests (``DECOMPRESSED.bytes``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n


DECOMPRESSED = _Counter()

#: how much of a body a partial read inflates at a time
_CHUNK = 64 << 10


class _Stream:
    """A body inflated as it is read, front to back, never whole: skipped bytes are
    inflated a chunk at a time and dropped."""

    def __init__(self, fmt: int, packed: bytes) -> None:
        self._lzma = (
            lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
            if fmt == FORMAT
            else None
        )
        self._zlib = zlib.decompressobj() if fmt != FORMAT else None
        self._input = packed
        self._buf = b""
        self.at = 0  # the body offset of _buf's first byte

    def _more(self, want: int) -> bytes:
        try:
            if self._lzma is not None:
                data, self._input = self._input, b""
                if self._lzma.eof:
                    return b""
                got = self._lzma.decompress(data, max_length=want)
            else:
                assert self._zlib is not None
                got = self._zlib.decompress(self._input, want)
                self._input = self._zlib.unconsumed_tail
        except (zlib.error, lzma.LZMAError, EOFError) as e:
            raise SegmentDamaged(f"does not decompress: {e}") from e
        DECOMPRESSED.add(len(got))
        return got

    def read(self, offset: int, size: int) -> bytes:
        """The body's bytes [offset, offset + size); offset never below the last read's
        end. SegmentDamaged when the body ends before."""
        if offset < self.at:
            raise ValueError("a segment body is read front to back")
        if offset >= self.at + len(self._buf):  # skip what is buffered and beyond
            self.at += len(self._buf)
            self._buf = b""
            while self.at < offset:
                got = self._more(min(_CHUNK, offset - self.at))
                if not got:
                    raise SegmentDamaged("the body is shorter than its columns")
                self.at += len(got)
        else:
            self._buf = self._buf[offset - self.at :]
            self.at = offset
        parts = [self._buf[:size]]
        have = len(parts[0])
        while have < size:
            got = self._more(max(size - have, 1))
            if not got:
                raise SegmentDamaged("the body is shorter than its columns")
            parts.append(got)
            have += len(got)
        out = b"".join(parts)
        self._buf, self.at = out[size:], offset + size
        return out[:size]


@dataclass(frozen=True, slots=True)
class Index:
    """A segment's per-event fields without its meta texts and updates: what a partial
    read picks the events it wants by (``decode_some``)."""

    first_seq: int
    ts: list[int]
    pos: list[int]
    actor: list[int]
    kind: list[int]
    #: the size of the whole body, inflated
    body_bytes: int = 0

    def __len__(self) -> int:
        return len(self.ts)


def decode_some(
    blob: bytes, stored_checksum: bytes, pick: Callable[[Index], Sequence[int]]
) -> tuple[Index, list[int], list[str], list[bytes]]:
    """The events `pick` chooses, by their index in the segment (ascending), once it has
    seen the segment's integer columns: (those columns, the indexes, their meta texts,
    their updates). The body is inflated only up to the last update picked, and only the
    picked texts and updates are kept (a page of 50 events of a segment of huge updates
    costs those 50, not the segment). The checksum is checked first, as by decode.
    `pick` may raise to stop there (having inflated only the integer columns)."""
    why = damage(blob, stored_checksum)
    if why is not None:
        raise SegmentDamaged(why)
    fmt, n, first_seq = _HEADER.unpack_from(blob)
    body = _Stream(fmt, blob[_HEADER.size :])
    head = body.read(0, 32 * n)
    lens = _unshuffle(head[: 4 * n], n, _U32)
    ts = _sums(_unshuffle(head[4 * n : 12 * n], n, _I64))
    pos = _sums(_unshuffle(head[12 * n : 20 * n], n, _I64))
    actor = _unshuffle(head[20 * n : 24 * n], n, _U32)
    kind = _unshuffle(head[24 * n : 28 * n], n, _U32)
    mlens = _unshuffle(head[28 * n : 32 * n], n, _U32)
    meta_at = list(itertools.accumulate(mlens, initial=32 * n))
    data_at = list(itertools.accumulate(lens, initial=meta_at[-1]))
    index = Index(first_seq, ts, pos, actor, kind, data_at[-1])
    picked = sorted(set(pick(index)))
    if picked and not 0 <= picked[0] <= picked[-1] < n:
        raise ValueError(f"a segment of {n} events has no event {picked[0]} or {picked[-1]}")
    try:
        meta = [body.read(meta_at[i], mlens[i]).decode() for i in picked]
    except UnicodeDecodeError as e:
        raise SegmentDamaged(f"a meta text is not UTF-8: {e}") from e
    updates = [body.read(data_at[i], lens[i]) for i in picked]
    return index, picked, meta, updates
