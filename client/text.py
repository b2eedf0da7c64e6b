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
from collections.abc import Callable

from pycrdt import Assoc, StickyIndex, Subscription, TransactionEvent
from pycrdt import Text as YText

#: above this many differing characters set() replaces the middle in one piece
_DIFF_LIMIT = 20_000


class Sticky:
    """A position in a text that stays at its place (between the same two characters)
    whatever is inserted or deleted around it, by anyone: a bot's insertion point while
    a human types before it. ``index`` is where it is now, in code points, as every
    position of :class:`Text`; pycrdt's own ``StickyIndex`` (``sticky_index``, under
    it) counts UTF-8 bytes, off by 1 to 3 per non-ASCII character before it."""

    def __init__(self, text: Text, sticky_index: StickyIndex) -> None:
        self.text = text
        #: pycrdt's StickyIndex (``encode()`` it to keep it; its ``get_index()``: bytes)
        self.sticky_index = sticky_index

    @property
    def index(self) -> int:
        """Where it is now, in code points (0 to ``len(text)``)."""
        return self.text._code_points(self.sticky_index.get_index())

    def __repr__(self) -> str:
        return f"Sticky({self.index})"


class Text:
    def __init__(self, ytext: YText, writable: Callable[[], None] | None = None) -> None:
        self.ytext = ytext
        #: raises before an edit when edits are refused (a read-only session's)
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
        character before it and stays before what is inserted at it."""
        self._sync()
        self._check(pos)
        return Sticky(self, self.ytext.sticky_index(self._byte(pos), assoc))

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
        self._editing = True
        try:
            if not length:
                self.ytext.insert(start, s)
            else:
                end = start + length if self._ascii else self._byte(pos + length)
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
