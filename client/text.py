"""Code-point positions over a pycrdt Text, whose own indices are UTF-8 byte offsets.

    text = session.text()           # the "content" Y.Text of the document
    text.insert(0, "héllo")         # positions count characters (code points)
    text.delete(1, 1)
    text.replace(0, 1, "J")
    text.set("new whole content")   # a minimal diff, not a delete-all + insert
    str(text), len(text)
    spot = text.sticky(10)          # a position that stays put while others type
    text.insert(spot.index, "tok")  # (spot.index: code points, now)

The length (and, for non-ASCII text, a copy) of the content is kept between edits made
here, so that a long series of local edits (a replayed trace) does not rebuild the
string from the CRDT each time; any change that did not come through this helper (a
remote update, a direct pycrdt call) drops it. On ASCII text a position costs nothing.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable
from typing import Any, NoReturn, cast

from pycrdt import Assoc, Subscription, TextEvent, TransactionEvent
from pycrdt import Text as YText

#: above this many differing characters set() replaces the middle in one piece
_DIFF_LIMIT = 20_000


class Sticky:
    """A position in a text that stays at its place (between the same two characters)
    whatever is inserted or deleted around it, by anyone: a bot's insertion point while
    a human types before it. ``index`` is where it is now, in code points, as every
    position of :class:`Text`.

    ``assoc``: with ``Assoc.AFTER`` it sticks to the character after it, so what is
    inserted at it goes before it; with ``Assoc.BEFORE`` to the one before it, so what is
    inserted at it goes after it. A deletion around it moves it to where the deleted
    text was; it stays on its side of what is inserted there later.

    Not pycrdt's ``StickyIndex``: 0.14.13's takes a text item's clocks (UTF-16 code
    units) for UTF-8 bytes, so inside a run of non-ASCII text it sticks to the wrong
    character, and reading it (or making one at the end) panics
    (``pyo3_runtime.PanicException``). The text's own changes move it instead, as each
    transaction commits (their deltas: exact, whoever made them, concurrent edits
    included), and this text's edits at once (a bot's tokens in one transaction of its
    own stay in order). It follows its text while that is attached (its session open:
    :meth:`Text.detach`)."""

    __slots__ = ("__weakref__", "_at", "_committed", "_fresh", "assoc", "text")

    def __init__(self, text: Text, at: int, assoc: Assoc, *, fresh: bool = False) -> None:
        self.text = text
        self.assoc = assoc
        #: where it is now, in UTF-8 bytes (pycrdt's units)
        self._at = at
        #: where it was as the last transaction committed (the next delta's base)
        self._committed = at
        #: made inside a transaction not committed yet: its delta holds edits made before
        self._fresh = fresh

    @property
    def index(self) -> int:
        """Where it is now, in code points (0 to ``len(text)``)."""
        return self.text._code_points(self._at)

    @property
    def sticky_index(self) -> NoReturn:
        """Gone (it was pycrdt's StickyIndex under it, see above): said, not a bare
        AttributeError."""
        raise AttributeError(
            "Sticky.sticky_index is gone: pycrdt 0.14.13's StickyIndex anchors to the wrong "
            "character inside non-ASCII text and panics as it is read; use Sticky.index "
            "(code points)"
        )

    def _edit(self, start: int, length: int, inserted: int) -> None:
        """This text replaces `length` bytes at `start` by `inserted` bytes (now)."""
        self._at = _moved(self._at, self.assoc, start, length, inserted)

    def _commit(self, delta: list[dict[str, Any]]) -> None:
        """A transaction changed the text by `delta` (pycrdt's: UTF-8 bytes)."""
        if self._fresh:
            self._fresh = False
            self._committed = self._at  # (its edits after it were counted as made)
            return
        self._at = self._committed = _moved_by(self._committed, self.assoc, delta)

    def __repr__(self) -> str:
        return f"Sticky({self.index})"


def _moved(at: int, assoc: Assoc, start: int, length: int, inserted: int) -> int:
    """Where a spot at `at` goes when `length` units at `start` are replaced by `inserted`."""
    if start < at:
        at -= min(length, at - start)
    if inserted and (start < at or (start == at and assoc == Assoc.AFTER)):
        at += inserted
    return at


def _moved_by(at: int, assoc: Assoc, delta: list[dict[str, Any]]) -> int:
    """Where a spot at `at` goes with a transaction's `delta`. The deletions and
    insertions between two retained spans replace one span by another, whatever their
    order in the delta (Yjs lists text typed over a deleted character before or after
    it, as the document's items lie): a spot at that span, or inside it, goes to the
    start of what replaces it with Assoc.BEFORE, to its end with Assoc.AFTER, as
    `_moved` has it for an edit made here."""
    old = new = 0  # where the delta is, in the text before it and after it
    i, n = 0, len(delta)
    while i < n:
        op = delta[i]
        if "retain" in op:
            r = op["retain"]
            if old <= at < old + r:
                return new + at - old
            old += r
            new += r
            i += 1
            continue
        deleted = inserted = 0
        while i < n and "retain" not in delta[i]:
            op = delta[i]
            if "delete" in op:
                deleted += op["delete"]
            else:
                ins = op.get("insert")
                inserted += len(ins.encode()) if isinstance(ins, str) else 1
            i += 1
        if old <= at <= old + deleted:
            return new + inserted if assoc == Assoc.AFTER else new
        old += deleted
        new += inserted
    return new + at - old


class _Spots:
    """The spots of one text, moved by its changes. Holds them weakly, and nothing of
    the text or its session: pycrdt keeps an observer on the document's Rust side, where
    the garbage collector does not see it (:meth:`Text.detach`)."""

    def __init__(self) -> None:
        self.spots: weakref.WeakSet[Sticky] = weakref.WeakSet()

    def changed(self, event: TextEvent) -> None:
        spots = list(self.spots)
        if spots:
            delta: list[dict[str, Any]] = cast(Any, event).delta  # (pycrdt declares none)
            for spot in spots:
                spot._commit(delta)


class Text:
    def __init__(self, ytext: YText, writable: Callable[[], None] | None = None) -> None:
        self.ytext = ytext
        #: raises before an edit when edits are refused (a read-only session's, one
        #: that stopped for good)
        self._writable = writable
        # what we know of the content between edits made here: its length in code points,
        # whether it is ASCII (then code points = bytes and no copy is needed), and else a
        # copy of it to convert positions
        self._valid = False
        self._len = 0
        self._ascii = True
        self._mirror: str | None = None
        self._editing = False
        # a document observer: far cheaper than a Text observer, which builds a delta
        # (None once detached: then nothing is known between two reads)
        self._sub: Subscription | None = ytext.doc.observe(self._changed)
        # the spots made here (sticky), and the text observer that moves them (made with
        # the first one: it costs each change's delta)
        self._spots: _Spots | None = None
        self._spots_sub: Subscription | None = None

    def _changed(self, _event: TransactionEvent) -> None:
        if not self._editing:
            self._valid = False

    def detach(self) -> None:
        """Stop observing the document (its session closed). pycrdt holds an observer on
        the document's Rust side, where the garbage collector cannot see it: the cycle
        of document, observer, this text and its session was never freed. Reads and
        edits still work after, each reading the text again."""
        if self._sub is not None:
            self.ytext.doc.unobserve(self._sub)
            self._sub = None
            self._valid = False
        if self._spots_sub is not None:
            self.ytext.unobserve(self._spots_sub)
            self._spots_sub = None

    def _sync(self) -> None:
        if not self._valid or self._sub is None:
            content = str(self.ytext)
            self._len = len(content)
            self._ascii = content.isascii()
            self._mirror = None if self._ascii else content
            self._valid = True

    def _byte(self, pos: int) -> int:
        if self._ascii:
            return pos
        assert self._mirror is not None
        return len(self._mirror[:pos].encode("utf-8"))

    def _code_points(self, byte: int) -> int:
        """The code-point position of UTF-8 byte offset `byte` (pycrdt's)."""
        self._sync()
        if self._ascii:
            return byte
        assert self._mirror is not None
        return len(self._mirror.encode("utf-8")[:byte].decode("utf-8", errors="ignore"))

    def _check(self, pos: int, length: int = 0) -> None:
        if pos < 0 or length < 0 or pos + length > self._len:
            raise IndexError(
                f"range [{pos}, {pos + length}) is outside the text of {self._len} characters"
            )

    def _edited(self, pos: int, length: int, s: str) -> None:
        self._len += len(s) - length
        if self._ascii:
            if not s.isascii():
                self._valid = False  # read it again once, then keep a copy
        else:
            assert self._mirror is not None
            self._mirror = self._mirror[:pos] + s + self._mirror[pos + length :]

    # --- reading -----------------------------------------------------------------------------

    def __str__(self) -> str:
        if self._valid and self._mirror is not None and self._sub is not None:
            return self._mirror
        return str(self.ytext)

    def __len__(self) -> int:
        self._sync()
        return self._len

    def __contains__(self, s: str) -> bool:
        return s in str(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str(self) == other
        if isinstance(other, Text):
            return str(self) == str(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Text({str(self)!r})"

    def sticky(self, pos: int, assoc: Assoc = Assoc.AFTER) -> Sticky:
        """A position that stays put: at `pos` (code points) now, it follows its place
        as the text changes, by anyone (``.index`` says where it is then). With
        ``Assoc.AFTER`` (the default, as Yjs's) it sticks to the character after it,
        so text inserted at it goes before it, and a bot inserting token after token
        at ``spot.index`` writes them in order; with ``Assoc.BEFORE`` it sticks to the
        character before it and stays before what is inserted at it. Any text, any
        position from 0 to ``len(text)`` (:class:`Sticky`)."""
        self._sync()
        self._check(pos)
        if self._spots is None:
            self._spots = _Spots()
        if self._spots_sub is None and self._sub is not None:
            self._spots_sub = self.ytext.observe(self._spots.changed)
        # (pycrdt's open transaction: its delta, as it commits, holds what came before)
        fresh = getattr(self.ytext.doc, "_txn", None) is not None
        spot = Sticky(self, self._byte(pos), assoc, fresh=fresh)
        self._spots.spots.add(spot)
        return spot

    # --- editing (each call is one transaction) -----------------------------------------------

    def insert(self, pos: int, s: str) -> None:
        """Insert `s` before the character at `pos` (0 = start, len(text) = end)."""
        self.replace(pos, 0, s)

    def delete(self, pos: int, length: int = 1) -> None:
        """Delete `length` characters starting at `pos`."""
        self.replace(pos, length, "")

    def replace(self, pos: int, length: int, s: str) -> None:
        """Replace `length` characters at `pos` by `s`, in one transaction."""
        if self._writable is not None:
            self._writable()
        self._sync()
        self._check(pos, length)
        if not length and not s:
            return
        start = self._byte(pos)
        end = start + length if self._ascii else self._byte(pos + length)
        if self._spots is not None and self._spots_sub is not None:
            # at once, before the transaction commits (whose delta then says the same)
            inserted = len(s.encode()) if s else 0
            for spot in list(self._spots.spots):
                spot._edit(start, end - start, inserted)
        self._editing = True
        try:
            if not length:
                self.ytext.insert(start, s)
            else:
                with self.ytext.doc.transaction():
                    del self.ytext[start:end]
                    if s:
                        self.ytext.insert(start, s)
        finally:
            self._editing = False
        self._edited(pos, length, s)

    def append(self, s: str) -> None:
        self.insert(len(self), s)

    def set(self, new: str) -> int:
        """Make the text equal `new` with a small diff (one transaction); returns the number
        of changed spans. Unchanged characters keep their identity (and their authors)."""
        if self._writable is not None:
            self._writable()
        old = str(self)
        if old == new:
            return 0
        prefix = 0
        limit = min(len(old), len(new))
        while prefix < limit and old[prefix] == new[prefix]:
            prefix += 1
        suffix = 0
        while suffix < limit - prefix and old[len(old) - 1 - suffix] == new[len(new) - 1 - suffix]:
            suffix += 1
        a = old[prefix : len(old) - suffix]
        b = new[prefix : len(new) - suffix]
        if len(a) + len(b) <= _DIFF_LIMIT and a and b:
            ops = [
                (prefix + i1, i2 - i1, b[j1:j2])
                for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
                    None, a, b, autojunk=False
                ).get_opcodes()
                if tag != "equal"
            ]
        else:
            ops = [(prefix, len(a), b)]
        with self.ytext.doc.transaction():
            for pos, length, s in reversed(ops):  # from the end: earlier positions stay valid
                self.replace(pos, length, s)
        return len(ops)
