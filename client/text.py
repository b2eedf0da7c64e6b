"""Code-point positions over a pycrdt Text, whose own indices are UTF-8 byte offsets.

    text = session.text()           # the "content" Y.Text of the document
    text.insert(0, "héllo")         # positions count characters (code points)
    text.delete(1, 1)
    text.replace(0, 1, "J")
    text.set("new whole content")   # a minimal diff, not a delete-all + insert
    str(text), len(text)

The length (and, for non-ASCII text, a copy) of the content is kept between edits made
here, so that a long series of local edits (a replayed trace) does not rebuild the
string from the CRDT each time; any change that did not come through this helper (a
remote update, a direct pycrdt call) drops it. On ASCII text a position costs nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from pycrdt import Subscription, TransactionEvent
from pycrdt import Text as YText

#: above this many differing characters set() replaces the middle in one piece
_DIFF_LIMIT = 20_000


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
