"""Restore: the smallest change that makes a live document's content equal to a version.

Runs inside the caller's transaction on the live document (see History.restore, which
wraps it in Room.server_change with a ServerOrigin, so the change is logged as one
event of kind ``restore``, broadcast, and tracked for undo as the restoring user's own
edit). Being an ordinary forward change, it merges with whatever others type at the
same moment: every replica converges.

What is restored is everything an editor keeps in the document, not only its plain
text: the formatting of rich text (Quill's bold or links, ProseMirror's marks, which
y-prosemirror stores as formatting of the XML's text nodes), embeds (Quill's images),
and the attributes of XML elements (a heading's level). A version that differs from
the live document only in its formatting is restored too.

Text is changed by a character diff of its content (render.string_opcodes: over code
points, after trimming the common prefix and suffix, its work bounded by
bounded_diff.py), then a pass that formats the ranges whose attributes differ, so that
untouched text keeps its identity (cursors, attribution). pycrdt positions are UTF-8
byte offsets, and an embed counts one. Maps set and delete keys; arrays replace the
differing slices; XML children are diffed per node, and a node that only changed
inside is changed in place (its text by the same character diff), so the paragraphs a
version shares with the live document keep their identity too. So are the shared types
nested in maps (a shape, its label) and the items of an array that are the same Yjs
item at the version and now, when they are of the same kind (_change_in_place): one
replaced whole took with it what others wrote into it as the restore landed, and the
restorer's undo, which deletes the copy and brings the old one back, everything others
wrote into it after.
"""

from __future__ import annotations

import functools
import json
import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from itertools import accumulate
from typing import Any

from pycrdt import Array, Assoc, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from .. import protocol as P
from ..errors import Conflict, TooDeep
from ..protocol import decode_state_vector
from ..ranges import Ranges, decode_ranges, encode_ranges, intersect, to_b64, union, union_into
from ..updates import decode_update_meta
from .bounded_diff import Opcode, WordTest, coarsened, is_word, opcodes
from .render import (
    ARRAY,
    MAP,
    MAX_DEPTH,
    ROOT_CLASSES,
    TEXT,
    XML,
    array_items,
    joined_runs,
    jsonable,
    string_opcodes,
    text_delta,
    too_deep,
)
from .undefined import MARK, set_undefined, unmarked

#: a run of rich text as pycrdt's ``diff()`` gives it: a string or an embed (a dict or
#: another value), and its attributes (None when it has none)
Run = tuple[Any, dict[str, Any] | None]
RichText = Text | XmlText

#: above this estimate of the work (calls into pycrdt times the runs each may walk past
#: to find its position: 10-40 ns a run here), a text is rewritten whole instead, from
#: its end at offset 0, where finding the position costs nothing. A text of 6,400
#: formatted runs that all differed took 2.2 s changed in place, 0.06 s rewritten
REWRITE_COST = 2_000_000
#: what set_text may spend making a plain text's changes one by one, in changes times
#: characters: pycrdt splits the text's blocks for each change at a cost that grows with
#: their length (a typo fixed in each of 2,000 lines, 4,000 changes of a 100 kB text
#: written at once, took 0.45 s; 2,000 changes of a 500 kB one 3.5 s). Past it the
#: changes separated by the shortest kept spans are joined (bounded_diff.coarsened)
CHANGE_COST = 400_000_000


class _Embed:
    """An embed among a text's pieces (so that an embedded string is not taken for text)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


#: the shared types, which an embed may be too
SHARED = (Text, XmlText, XmlElement, XmlFragment, Map, Array)

#: a piece of rich text: a string or an embed, and its attributes ({} for none)
Piece = tuple["str | _Embed", dict[str, Any]]


def byte_offsets(s: str) -> list[int]:
    """offsets[i] = UTF-8 byte offset of code point i (len(s)+1 entries)."""
    if s.isascii():
        return list(range(len(s) + 1))
    return [0, *accumulate(len(c.encode()) for c in s)]


def _pieces(delta: Sequence[Run]) -> list[Piece]:
    """The delta's runs (render.joined_runs), attributes as pycrdt gives them."""
    return [(_Embed(v) if is_embed else v, a or {}) for v, a, is_embed in joined_runs(delta, dict)]


def _size(content: str | _Embed) -> int:
    return len(content) if isinstance(content, str) else 1


def _width(content: str | _Embed) -> int:
    """Its length in pycrdt's units: UTF-8 bytes, one for an embed."""
    return len(content.encode()) if isinstance(content, str) else 1


class _Layout:
    """A text's pieces, addressed by code point (an embed counts one): its content as
    a string for the character diff (each distinct embed standing for a code point of
    the private use planes), pieces by range, and pycrdt's offset of a position."""

    def __init__(self, pieces: list[Piece], codes: dict[str, str]) -> None:
        self.pieces = pieces
        self.starts = [0, *accumulate(_size(c) for c, _ in pieces)]
        self.keys = "".join(c if isinstance(c, str) else codes[_embed_key(c)] for c, _ in pieces)
        self._offs: list[int] | None = None
        if not self.keys.isascii():
            embeds = set(codes.values())
            self._offs = [0, *accumulate(1 if c in embeds else len(c.encode()) for c in self.keys)]

    def offset(self, i: int) -> int:
        return i if self._offs is None else self._offs[i]

    def between(self, i: int, j: int) -> Iterator[tuple[int, Piece]]:
        """The pieces of positions i..j (cut to that range), each with its start."""
        k = bisect_right(self.starts, i) - 1
        while i < j:
            content, attrs = self.pieces[k]
            end = min(self.starts[k + 1], j)
            if isinstance(content, str):
                content = content[i - self.starts[k] : end - self.starts[k]]
            yield i, (content, attrs)
            i, k = end, k + 1


def _embed_key(e: _Embed) -> str:
    return json.dumps(faithful(e.value), sort_keys=True, default=repr)


def _codes(*sides: list[Piece], also: str = "") -> dict[str, str]:
    """A code point of the private use planes for each distinct embed, none that the
    texts (or `also`) use."""
    embeds = {_embed_key(c) for side in sides for c, _ in side if isinstance(c, _Embed)}
    if not embeds:
        return {}
    used = set("".join(c for side in sides for c, _ in side if isinstance(c, str)))
    used.update(also)
    spare = (chr(cp) for cp in range(0xF0000, 0x10FFFE) if chr(cp) not in used)
    return {k: next(spare) for k in sorted(embeds)}


def _patch(have: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """The formatting that turns attributes `have` into `want` (None removes one)."""
    if have == want:
        return {}
    patch = {k: v for k, v in want.items() if k not in have or have[k] != v}
    patch.update({k: None for k in have if k not in want})
    return patch


def _formats(
    live: _Layout, i1: int, i2: int, target: _Layout, j1: int
) -> list[tuple[int, int, dict[str, Any]]]:
    """(start, end, patch) in pycrdt's offsets for live positions i1..i2, whose content
    equals the target's from j1, where their attributes differ."""
    lp, tp = list(live.between(i1, i2)), list(target.between(j1, j1 + i2 - i1))
    out: list[tuple[int, int, dict[str, Any]]] = []
    a = b = 0
    pos = i1
    while pos < i2:
        la, ta = lp[a][1][1], tp[b][1][1]
        end = min(lp[a][0] + _size(lp[a][1][0]), tp[b][0] - j1 + i1 + _size(tp[b][1][0]))
        patch = _patch(la, ta)
        if patch:
            start, stop = live.offset(pos), live.offset(end)
            if out and out[-1][1] == start and out[-1][2] == patch:
                out[-1] = (out[-1][0], stop, patch)
            else:
                out.append((start, stop, patch))
        pos = end
        if pos >= lp[a][0] + _size(lp[a][1][0]):
            a += 1
        if pos >= tp[b][0] - j1 + i1 + _size(tp[b][1][0]):
            b += 1
    return out


def _insert(text: RichText, pos: int, pieces: Iterable[Piece]) -> None:
    for content, attrs in pieces:
        # attributes given, even {}: an insert without them takes its left neighbour's
        attrs = _writable(attrs)
        if isinstance(content, str):
            text.insert(pos, content, attrs)
        elif isinstance(content.value, SHARED):
            # a shared type inside text (Lexical keeps its text nodes as Y.Maps and its
            # paragraphs as Y.XmlTexts there): an empty one, then filled in place
            text.insert_embed(pos, _empty(content.value), attrs)
            _fill(_embed_at(text, pos), content.value)
        else:
            text.insert_embed(pos, _writable(content.value), attrs)
        pos += _width(content)


def _embed_at(text: RichText, pos: int) -> Any:
    at = 0
    for insert, _ in text.diff():
        if at == pos and not isinstance(insert, str):
            return insert
        at += len(insert.encode()) if isinstance(insert, str) else 1
        if at > pos:
            break
    raise LookupError(f"no embed at offset {pos}")


#: what a restore calls around each insertion of the version's text (Copying.noting):
#: the version's offsets (pycrdt's) it copies, and the insertion to make
Note = Callable[[int, int, Callable[[], None]], None]


def _made(note: Note | None, start: int, end: int, insert: Callable[[], None]) -> None:
    if note is None:
        insert()
    else:
        note(start, end, insert)


def set_rich_text(
    text: RichText,
    target: Sequence[Run],
    writers: Writers | None = None,
    named: list[dict[Any, int]] | None = None,
    note: Note | None = None,
    items: Items | None = None,
) -> None:
    """Make `text` (a Text or an XmlText) equal `target` (a ``diff()``): characters,
    embeds and formatting, changing only what differs. `writers`, `named` and `items`:
    see set_text (plain text only); `note`: told of each insertion of the target's text
    (a restore's copies: Copying)."""
    current = text.diff()
    if _plain(current) and _plain(target):
        set_text(text, "".join(i for i, _ in target), writers, named, note, items)
        return
    have, want = _pieces(current), _pieces(target)
    codes = _codes(have, want)
    live, goal = _Layout(have, codes), _Layout(want, codes)
    # the plan, in document order: per opcode, the calls that make it so
    plan: list[list[tuple[Any, ...]]] = []
    calls = 0
    for tag, i1, i2, j1, j2 in string_opcodes(live.keys, goal.keys):
        if tag == "equal":
            steps: list[tuple[Any, ...]] = [
                ("format", *f) for f in _formats(live, i1, i2, goal, j1)
            ]
        else:
            steps = []
            if i2 > i1:
                steps.append(("delete", live.offset(i1), live.offset(i2)))
            if j2 > j1:
                pieces = [p for _, p in goal.between(j1, j2)]
                steps.append(("insert", live.offset(i1), pieces, goal.offset(j1), goal.offset(j2)))
                calls += len(pieces) - 1
        calls += len(steps)
        plan.append(steps)
    if calls * (len(have) + calls) > REWRITE_COST:
        del text[0 : live.offset(len(live.keys))]

        def whole() -> None:
            for piece in reversed(want):
                _insert(text, 0, [piece])

        _made(note, 0, goal.offset(len(goal.keys)), whole)
        return
    for steps in reversed(plan):  # from the end: the offsets before stay valid
        for step in steps:
            if step[0] == "format":
                text.format(step[1], step[2], _writable(step[3]))
            elif step[0] == "delete":
                del text[step[1] : step[2]]
            else:
                _made(note, step[3], step[4], functools.partial(_insert, text, step[1], step[2]))


def _plain(delta: Sequence[Run]) -> bool:
    """Characters alone, none formatted: the text is its string."""
    return all(isinstance(i, str) and not a for i, a in delta)


#: who wrote each code point of a text root, live and at the version restored: its text
#: at the head the blame was taken at, the writers of that text, and those of the target
Writers = tuple[str, Sequence[Any], Sequence[Any]]

#: code points that stand for a character written by someone (the private use areas)
_PRIVATE = (range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))
#: what stands for a line break written by someone: line breaks to str.splitlines, so the
#: diff of long spans still goes by lines (a writer past these gets a private one)
_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _by_writer(a: str, wa: Sequence[Any], b: str, wb: Sequence[Any]) -> tuple[str, str] | None:
    """_keyed on (actor, seq), the characters' identity as blame sees it; on actor alone
    when there are more such pairs than private code points (a long text typed a key at
    a time); None when even those are too many."""
    keyed = _keyed(a, wa, b, wb)
    if keyed is None:
        keyed = _keyed(a, [w[0] for w in wa], b, [w[0] for w in wb])
    return keyed


def _keyed(a: str, wa: Sequence[Any], b: str, wb: Sequence[Any]) -> tuple[str, str] | None:
    """`a` and `b` with each (character, writer) pair as a code point of its own, so
    that the character diff keeps only characters that are the same and by the same
    writer: a restore kept stray letters of what a wrecker typed where they matched the
    version, and blame named the wrecker (or the restorer) for others' text. None when
    there are more pairs than private code points, or the texts use those themselves.
    Each writer's line breaks are a line break of their own (_BREAKS): the diff of long
    spans still goes by lines, and a kept break of the wrecker's cut a restored stretch
    in two, away from the deleted text it copies."""
    if any("\ue000" <= ch <= "\uf8ff" or ch >= "\U000f0000" for ch in a + b):
        return None
    codes: dict[tuple[str, Any], str] = {}
    spare = (chr(cp) for r in _PRIVATE for cp in r)
    breaks = iter(_BREAKS)
    out: list[str] = []
    for text, who in ((a, wa), (b, wb)):
        mapped = []
        for ch, w in zip(text, who, strict=True):
            code = codes.get((ch, w))
            if code is None:
                code = next(breaks, "") if ch == "\n" else ""
                code = codes[(ch, w)] = code or next(spare, "")
                if not code:
                    return None
            mapped.append(code)
        out.append("".join(mapped))
    return out[0], out[1]


#: a restore's text root, live and at the version: the live document, the version's, and
#: the root's name (item_opcodes)
Items = tuple[Doc[Any], Doc[Any], str]


def item_opcodes(
    live: Doc[Any], target: Doc[Any], name: str, have: str, want: str
) -> list[Opcode] | None:
    """The opcodes (over code points) that make text root `name` of `live`, whose text
    is `have`, equal that of `target` (`want`) keeping exactly the characters that are
    the same Yjs item in both: those alive at the version and now. Read from the two
    documents themselves: in a copy of each, what the other holds deleted (and, of the
    live one, what was written after the version) is deleted, and the text's delta says
    which characters that took out; what is left of both is the same items, in the same
    order (Yjs never moves an item). None when that does not hold (the version holds
    items the live document lacks, a root missing on one side)."""
    if name not in live.keys() or name not in target.keys():
        return None
    now, then = decode_state_vector(live.get_state()), decode_state_vector(target.get_state())
    if any(clock > now.get(client, 0) for client, clock in then.items()):
        return None
    later: Ranges = {c: [(then.get(c, 0), k)] for c, k in now.items() if k > then.get(c, 0)}
    # (an update from a document's own state vector carries its delete set alone)
    dead_then = decode_update_meta(target.get_update(target.get_state())).deletes
    dead_now = decode_update_meta(live.get_update(live.get_state())).deletes
    a = _taken_out(live, name, have, union(later, dead_then))
    b = _taken_out(target, name, want, dead_now)
    if a is None or b is None or _left(have, a) != _left(want, b):
        return None
    ops: list[Opcode] = []
    i = j = ka = kb = 0
    while i < len(have) or j < len(want):
        da = a[ka][1] - i if ka < len(a) and a[ka][0] == i else 0
        db = b[kb][1] - j if kb < len(b) and b[kb][0] == j else 0
        if da or db:
            tag = "replace" if da and db else "delete" if da else "insert"
            ops.append((tag, i, i + da, j, j + db))
            ka, kb = ka + bool(da), kb + bool(db)
            i, j = i + da, j + db
            continue
        n = min(
            (a[ka][0] if ka < len(a) else len(have)) - i,
            (b[kb][0] if kb < len(b) else len(want)) - j,
        )
        if n <= 0:  # (what is left of both differs: _left said it does not)
            return None
        ops.append(("equal", i, i + n, j, j + n))
        i, j = i + n, j + n
    return ops


def _left(s: str, out: list[tuple[int, int]]) -> str:
    """`s` without the ranges `out` of code points."""
    kept, at = [], 0
    for start, end in out:
        kept.append(s[at:start])
        at = end
    kept.append(s[at:])
    return "".join(kept)


def _taken_out(doc: Doc[Any], name: str, s: str, deletes: Ranges) -> list[tuple[int, int]] | None:
    """The code point ranges of text root `name` of `doc` (its text `s`) that deleting
    the items `deletes` takes out (in a copy), sorted and apart; None when the copy's
    text is not `s`."""
    copy: Doc[Any] = Doc(skip_gc=True, client_id=scratch_client(doc))
    copy.apply_update(doc.get_update())
    text = copy.get(name, type=Text)
    if str(text) != s:
        return None
    deltas: list[Any] = []
    sub = text.observe(lambda e: deltas.extend(e.delta))
    try:
        copy.apply_update(b"\x00" + encode_ranges(deletes))
    finally:
        text.unobserve(sub)
    offs = byte_offsets(s)
    out: list[tuple[int, int]] = []
    at = 0  # (in pycrdt's offsets: UTF-8 bytes, of the text before the deletion)
    for op in deltas:
        if "retain" in op:
            at += int(op["retain"])
        elif "delete" in op:
            n = int(op["delete"])
            start, end = bisect_left(offs, at), bisect_left(offs, at + n)
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
            at += n
        else:
            return None
    return out


def set_text(
    text: RichText,
    target: str,
    writers: Writers | None = None,
    named: list[dict[Any, int]] | None = None,
    note: Note | None = None,
    items: Items | None = None,
) -> None:
    """Make the characters of `text` equal `target`, a plain string (PUT /text): new
    characters are formatted as typing there would format them (like the character
    before them), and embeds, which a plain string does not show, stay where they are.
    `writers` (a restore): keep only characters the target has by the same writer
    (_by_writer), when the text is still the one they were taken from; then, when every
    character taken out has a writer there, `named` gets how many of each writer's
    were (blame's writers: text an undo brought back is its writer's, not the undoer's,
    which is what the restore's answer says). `items` (a restore: the live document, the
    version's and the root): keep exactly the characters that are the same Yjs items at
    the version and now (item_opcodes), before all else. `note`: see set_rich_text."""
    current = text.diff()
    if _plain(current):
        chars = "".join(i for i, _ in current)
        keys: tuple[str, str] | None = None
        known = writers is not None and writers[0] == chars and len(writers[2]) == len(target)
        if writers is not None and known:
            keys = _by_writer(chars, writers[1], target, writers[2])
        # (the same characters by other writers are not the version's: a wrecker who
        # retyped the text whole left it "already equal", and named for them; a copy an
        # undo or a restore wrote is its writer's, and the version's)
        a, b = keys if keys is not None else (chars, target)
        if a == b:
            return
        limit = max(1, CHANGE_COST // max(1, len(chars)))
        same = item_opcodes(*items, chars, target) if items is not None else None
        if same is not None:
            # (no kept bit folded into the changes around it, as the character diff
            # folds bits of rewritten words: a line break kept between two changes was
            # deleted and written again, the restorer's, not the version's writer's)
            ops = coarsened(same, limit)
        else:
            word: WordTest = is_word
            if keys is not None:
                # (the diff of stand-ins: which of them stand for a character of a word,
                # for the fold of kept bits of words, bounded_diff._folded)
                stands = dict(zip(a + b, chars + target, strict=True))  # (C: no loop per char)
                words = {k for k, c in stands.items() if is_word(c)}
                word = words.__contains__
            ops = coarsened(string_opcodes(a, b, word), limit)
        offs = byte_offsets(chars)
        if writers is not None and known and named is not None:
            out: dict[Any, int] = {}
            for tag, i1, i2, _j1, _j2 in ops:
                for who in writers[1][i1:i2] if tag != "equal" else ():
                    out[who[0]] = out.get(who[0], 0) + 1
            if None not in out:
                named.append(out)
        # from the start, the offsets moved by what came before: pycrdt finds each
        # position faster so (4,000 changes of a 100 kB text: 0.14-0.20 s, from the end
        # 0.26-0.32 s)
        moved = 0
        toffs = byte_offsets(target) if note is not None else []
        for tag, i1, i2, j1, j2 in ops:
            if tag == "equal":
                continue
            at = offs[i1] + moved
            if i2 > i1:
                del text[at : offs[i2] + moved]
                moved -= offs[i2] - offs[i1]
            if j2 > j1:
                new = target[j1:j2]
                if note is None:
                    text.insert(at, new)
                else:
                    note(toffs[j1], toffs[j2], functools.partial(text.insert, at, new))
                moved += len(new.encode())
        return
    # formatted: the rich text that typing `target` over it would give, made by
    # set_rich_text (whose cost is bounded: this walk per change was not, 3.4 s for 2,000
    # changed lines of a 760 kB text with formatting on every other line)
    set_rich_text(text, _typed_over(current, target), note=note)


def scratch_client(*docs: Doc[Any]) -> int:
    """A Yjs client id that none of `docs` holds (for an edit made on a scratch copy)."""
    held: set[int] = set()
    for d in docs:
        held.update(decode_state_vector(d.get_state()))
    while True:
        client = random.getrandbits(32)
        if client not in held:
            return client


def rebase_text(live: Doc[Any], root: str, edit: tuple[int, bytes]) -> list[dict[str, Any]]:
    """What `edit` (client id, update: a change made on an older version of the
    document under a client id of its own, PUT /text with a base) does to the text
    root `root` of `live` as it is now, as a delta (Yjs's: retain, insert, delete, in
    the text's index units): merged as Yjs merges, so text typed since that version
    stays and only characters of the version the edit deleted are deleted. Computed
    on a copy of `live`; `live` is not changed (the caller applies the delta as its
    own change, under the server's client id: apply_delta)."""
    client, update = edit
    copy: Doc[Any] = Doc(skip_gc=True, client_id=scratch_client(live))
    copy.apply_update(live.get_update())
    if client in decode_state_vector(copy.get_state()):
        # another writer took that client id since: vanishingly rare; try again
        raise Conflict("the document changed under the edit; send it again")
    text = copy.get(root, type=Text)
    deltas: list[list[dict[str, Any]]] = []
    sub = text.observe(lambda e: deltas.append(list(e.delta)))
    try:
        copy.apply_update(update)
    finally:
        text.unobserve(sub)
    return [op for delta in deltas for op in delta]


def apply_delta(text: Text, delta: Iterable[dict[str, Any]]) -> None:
    """Apply a Yjs text delta (rebase_text's) to `text`, in one transaction of the
    caller's."""
    i = 0
    for op in delta:
        if "retain" in op:
            n = int(op["retain"])
            if op.get("attributes"):
                text.format(i, i + n, _writable(dict(op["attributes"])))
            i += n
        elif "delete" in op:
            n = int(op["delete"])
            del text[i : i + n]
        elif "insert" in op:
            value, attrs = _writable(op["insert"]), _writable(op.get("attributes") or None)
            if isinstance(value, str):
                text.insert(i, value, attrs)
                i += len(value.encode())
            else:
                text.insert_embed(i, value, attrs)
                i += 1


def _typed_over(current: Sequence[Run], target: str) -> list[Run]:
    """`current` with its characters changed into `target` by the character diff: kept
    characters keep their attributes, new ones take the attributes before them, embeds
    stay (after the new characters that replace characters around them)."""
    have = _pieces(current)
    live = _Layout(have, _codes(have, also=target))  # embeds: code points `target` lacks
    out: list[Piece] = []
    for tag, i1, i2, j1, j2 in string_opcodes(live.keys, target):
        if tag == "equal":
            out.extend(p for _, p in live.between(i1, i2))
            continue
        if j2 > j1:
            out.append((target[j1:j2], out[-1][1] if out else {}))
        out.extend(p for _, p in live.between(i1, i2) if isinstance(p[0], _Embed))
    runs: list[Run] = []
    for content, attrs in out:
        if isinstance(content, str) and runs and isinstance(runs[-1][0], str):
            if (runs[-1][1] or {}) == attrs:
                runs[-1] = (runs[-1][0] + content, attrs or None)
                continue
        runs.append((content.value if isinstance(content, _Embed) else content, attrs or None))
    return runs


# --- faithful copies and comparisons ----------------------------------------------------


def faithful(value: Any, depth: int = 0) -> Any:
    """A value as JSON with everything a restore must reproduce: formatting and embeds
    of text, XML tags, attributes and children, nested shared types. `depth`: how many
    shared types hold `value`; one nested deeper than MAX_DEPTH raises TooDeep (as the
    rendering does: this recursed until a RecursionError)."""
    if isinstance(value, XmlFragment | XmlElement | Map | Array):
        if depth >= MAX_DEPTH:
            raise too_deep()
        depth += 1
    if isinstance(value, XmlText):
        return {"xmltext": text_delta(value.diff(), faithful), "attrs": _attrs(value)}
    if isinstance(value, Text):
        return {"text": text_delta(value.diff(), faithful)}
    if isinstance(value, XmlElement):
        return {
            "tag": value.tag,
            "attrs": _attrs(value),
            "children": [faithful(c, depth) for c in value.children],
        }
    if isinstance(value, XmlFragment):
        return {"fragment": [faithful(c, depth) for c in value.children]}
    if isinstance(value, Map):
        return {"map": {k: faithful(v, depth) for k, v in value.items()}}
    if isinstance(value, Array):
        return {"array": [faithful(v, depth) for v in value]}
    return {"value": jsonable(unmarked(value), depth)}


def check_depth(value: Any, depth: int = 1) -> None:
    """Raise TooDeep when `value` (a root of a version to restore; `depth`: its level)
    holds values nested deeper than MAX_DEPTH (shared types, XML elements, JSON objects
    and lists: a root is the first level), as the rendering counts them. Walked with a
    stack of its own: the copy restore writes (_put, _fill) recurses, and a version of
    1,000 nested maps overflowed the stack (a RecursionError, a 500)."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, XmlFragment | XmlElement):
            kids: Iterable[Any] = value.children
        elif isinstance(value, Map):
            kids = [value[k] for k in value.keys()]
        elif isinstance(value, Array):
            kids = list(value)
        elif isinstance(value, dict):
            kids = value.values()
        elif isinstance(value, list | tuple):
            kids = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise too_deep()
        stack.extend((kid, depth + 1) for kid in kids)


def _attr_items(node: XmlElement | XmlText) -> list[tuple[str, Any]]:
    """The attributes of `node`, fit to write (MARK: undefined, see undefined.py)."""
    items: list[tuple[str, Any]] = [*node.attributes]  # type: ignore[misc]
    return [(k, v if v == MARK else _writable(v)) for k, v in items]


def _set_attr(node: XmlElement | XmlText, key: str, value: Any) -> None:
    if value == MARK:
        set_undefined(node, key)
    else:
        node.attributes[key] = value


def _writable(value: Any) -> Any:
    """A plain value read from a document, made fit to write into one: pycrdt reads a
    Yjs Uint8Array as a bytearray but writes only bytes (a bytearray is refused as a
    value, and written as null inside an object, an array, an embed or an attribute).
    (In a text's embed or format attribute pycrdt writes even bytes as an array of
    numbers, as it does for its own clients: a binary embed comes back as that.)"""
    if isinstance(value, bytearray):
        return bytes(value)
    if value == MARK:  # (where undefined cannot be written: an array's element)
        return None
    if isinstance(value, dict):
        return {k: _writable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_writable(v) for v in value]
    return value


def _attrs(node: XmlElement | XmlText) -> dict[str, Any]:
    return {k: jsonable(unmarked(v)) for k, v in _attr_items(node)}


def _key(value: Any) -> str:
    """What `value` is compared by. A live value nested deeper than MAX_DEPTH (the
    version's are checked first: check_depth) equals nothing: it is replaced."""
    try:
        return json.dumps(faithful(value), sort_keys=True, default=repr)
    except TooDeep:
        return f"\0too deep {id(value)}"


def _empty(value: Any) -> Any:
    """An empty shared type of `value`'s kind to insert, then fill (``_fill``); a plain
    value as it is. A prelim Text cannot hold formatting: it is filled once in place."""
    if isinstance(value, XmlText):
        return XmlText()
    if isinstance(value, Text):
        return Text()
    if isinstance(value, XmlElement):  # (its undefined attributes: set by _fill)
        return XmlElement(value.tag, [(k, v) for k, v in _attr_items(value) if v != MARK])
    if isinstance(value, XmlFragment):
        return XmlFragment()
    if isinstance(value, Map):
        return Map()
    if isinstance(value, Array):
        return Array()
    return _writable(value)


def _fill(live: Any, target: Any) -> None:
    """Fill `live`, just made by ``_empty(target)`` and integrated, like `target`."""
    if isinstance(target, XmlText):
        for k, v in _attr_items(target):
            _set_attr(live, k, v)
        set_rich_text(live, target.diff())
    elif isinstance(target, Text):
        set_rich_text(live, target.diff())
    elif isinstance(target, XmlElement | XmlFragment):
        if isinstance(target, XmlElement):
            for k, v in _attr_items(target):
                if v == MARK:
                    set_undefined(live, k)
        for child in target.children:
            _fill(live.children.append(_empty(child)), child)
    elif isinstance(target, Map):
        for k, v in target.items():
            _put(live, k, v)
    elif isinstance(target, Array):
        for v in target:
            _put(live, len(live), v)


def _put(live: Map[Any] | Array[Any], where: str | int, target: Any) -> None:
    """A copy of `target` under the key or at the index `where` of `live`."""
    if isinstance(target, XmlElement | XmlText):
        node = _put_xml_node(live, where, target)
        if isinstance(target, XmlElement):
            for k, v in _attr_items(target):
                if v != MARK:  # (those: _fill)
                    node.attributes[k] = v
    elif target == MARK and isinstance(live, Map):
        assert isinstance(where, str)
        set_undefined(live, where)
        return
    elif isinstance(live, Array):
        assert isinstance(where, int)
        live.insert(where, _empty(target))
        node = live[where]
    else:
        assert isinstance(where, str)
        live[where] = _empty(target)
        node = live[where]
    _fill(node, target)


#: an item's info byte: it has an origin, a right origin; its content a shared type
_HAS_ORIGIN, _HAS_RIGHT, _CONTENT_TYPE = 0x80, 0x40, 7
#: Yjs's type refs of an XML element and an XML text
_XML_ELEMENT_REF, _XML_TEXT_REF = 3, 6


def _put_xml_node(live: Map[Any] | Array[Any], where: str | int, target: Any) -> Any:
    """An empty XML element (of `target`'s tag) or XML text under the key or at the
    index `where` of `live`, integrated. pycrdt refuses to put one in a map or an array
    (Yjs does not: a board's list of paragraphs, a notebook's cell holding one), so it
    is written as the Yjs update a Yjs client would send: an item of the live
    document's own client with a placeholder inserted there just before as its origin
    (which makes it the key's value in a map, the next item in an array), the
    placeholder then deleted."""
    doc = live.doc
    if isinstance(live, Array):
        assert isinstance(where, int)
        live.insert(where, None)
        right = _item_id(live, where + 1) if where + 1 < len(live) else None
    else:
        assert isinstance(where, str)
        live[where] = None
        right = None
    client = doc.client_id
    clock = decode_state_vector(doc.get_state())[client]  # the placeholder's clock + 1
    info = _HAS_ORIGIN | (_HAS_RIGHT if right else 0) | _CONTENT_TYPE
    item = bytes([info]) + P.write_var_uint(client) + P.write_var_uint(clock - 1)
    if right is not None:
        item += P.write_var_uint(right[0]) + P.write_var_uint(right[1])
    if isinstance(target, XmlElement):
        item += P.write_var_uint(_XML_ELEMENT_REF) + P.write_var_string(target.tag or "")
    else:
        item += P.write_var_uint(_XML_TEXT_REF)
    # one client, one struct from `clock`; an empty delete set
    head = P.write_var_uint(1) + P.write_var_uint(1)
    doc.apply_update(head + P.write_var_uint(client) + P.write_var_uint(clock) + item + b"\0")
    if isinstance(live, Array):
        assert isinstance(where, int)
        del live[where]  # the placeholder
        return live[where]
    assert isinstance(where, str)
    return live[where]


def _insert_copy(live: Any, index: int, target: Any, copying: Copying | None = None) -> None:
    """A copy of `target` as child `index` of the XML node `live` (`copying`: told)."""
    if copying is None:
        _fill(live.children.insert(index, _empty(target)), target)
    else:
        copying.node(target, lambda: _fill(live.children.insert(index, _empty(target)), target))


def _change_in_place(live: Any, target: Any) -> bool:
    """Make the shared type `live` equal `target` in place when both are of one kind
    (XML elements: of one tag), so that it keeps its identity: what others write into it
    at the same moment stays, and an undo of the restore reverts only the keys, items,
    characters and attributes it changed. False when they are not (the caller replaces
    `live` with a copy)."""
    if isinstance(live, XmlText) and isinstance(target, XmlText):
        _set_attributes(live, target)
        copying = _COPYING.get()
        set_rich_text(live, target.diff(), note=copying.noting(target) if copying else None)
    elif isinstance(live, Text) and isinstance(target, Text):
        set_rich_text(live, target.diff())
    elif isinstance(live, XmlElement) and isinstance(target, XmlElement):
        if live.tag != target.tag:
            return False
        _set_attributes(live, target)
        set_xml(live, target)
    elif isinstance(live, XmlFragment) and isinstance(target, XmlFragment):
        set_xml(live, target)
    elif isinstance(live, Map) and isinstance(target, Map):
        set_map(live, target)
    elif isinstance(live, Array) and isinstance(target, Array):
        set_array(live, target)
    else:
        return False
    return True


def set_map(live: Map[Any], target: Map[Any] | None) -> None:
    """Set and delete the keys whose values differ; a shared type under a key that holds
    one of the same kind in both is changed in place (_change_in_place), not replaced."""
    want = {k: target[k] for k in target.keys()} if target is not None else {}
    for key in list(live.keys()):
        if key not in want:
            del live[key]
    for key, value in want.items():
        if key in live:
            old = live[key]
            if _key(old) == _key(value) or _change_in_place(old, value):
                continue
        _put(live, key, value)


def _item_id(array: Array[Any], index: int) -> tuple[int, int]:
    """The Yjs id of item `index` of `array` (pycrdt shows it only in a sticky index)."""
    item = array.sticky_index(index, Assoc.AFTER).to_json()["item"]
    return item["client"], item["clock"]


def _same_items(
    live: Array[Any],
    have: list[Any],
    i1: int,
    i2: int,
    target: Array[Any],
    want: list[Any],
    j1: int,
    j2: int,
) -> list[tuple[int, int]]:
    """(i, j) for the shared types among live items i1..i2 that are the same Yjs item as
    target item j in j1..j2 (alive at the version and now), in order: they stay, changed
    in place."""
    ids = {_item_id(live, i): i for i in range(i1, i2) if isinstance(have[i], SHARED)}
    pairs: list[tuple[int, int]] = []
    if not ids:
        return pairs
    for j in range(j1, j2):
        if isinstance(want[j], SHARED):
            i = ids.get(_item_id(target, j))
            # (items never move in a Yjs array: the pairs are in order on both sides)
            if i is not None and (not pairs or i > pairs[-1][0]):
                pairs.append((i, j))
    return pairs


def set_array(
    live: Array[Any],
    target: Array[Any] | None,
    have: list[Any] | None = None,
    want: list[Any] | None = None,
) -> None:
    """Replace the differing slices; within them, a shared type that is the same item at
    the version and now (a shape whose key changed) is changed in place, not replaced.
    `have`, `want`: the items of `live` (its own) and of `target` when the caller has
    them (a root array's, read in linear time: render.array_items)."""
    if want is None:
        want = list(target) if target is not None else []
    if have is None:
        have = list(live)
    a = [_key(v) for v in have]
    b = [_key(v) for v in want]
    if a == b:
        return
    for tag, i1, i2, j1, j2 in reversed(opcodes(a, b)):
        if tag == "equal":
            continue
        kept: list[tuple[int, int]] = []
        if tag == "replace" and target is not None:
            kept = _same_items(live, have, i1, i2, target, want, j1, j2)
        # from the end, so that the indices before stay valid: each kept item, then
        # the slice before it
        ends = [*kept, (i2, j2)]
        starts = [(i1, j1), *((i + 1, j + 1) for i, j in kept)]
        for k in reversed(range(len(ends))):
            (si, sj), (ei, ej) = starts[k], ends[k]
            if k < len(kept) and not _change_in_place(have[ei], want[ej]):
                del live[ei]
                _put(live, ei, want[ej])
            if ei > si:
                del live[si:ei]
            for n, v in enumerate(want[sj:ej]):
                _put(live, si + n, v)


def set_xml(live: XmlFragment | XmlElement, target: XmlFragment | XmlElement | None) -> None:
    """Make the children of `live` equal those of `target`: per child, so that the ones
    they share stay as they are; a child of the same kind (the same tag, or text) in
    the place of one that differs is changed in place."""
    have = list(live.children)
    want = list(target.children) if target is not None else []
    a, b = [_key(c) for c in have], [_key(c) for c in want]
    if a == b:
        return
    for tag, i1, i2, j1, j2 in reversed(opcodes(a, b)):
        if tag == "equal":
            continue
        paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        # the rest first (from the end), so that the paired children keep their index
        if i2 - i1 > paired:
            del live.children[i1 + paired : i2]
        copying = _COPYING.get()
        for k in range(paired, j2 - j1):
            _insert_copy(live, i1 + k, want[j1 + k], copying)
        for k in reversed(range(paired)):
            if not _change_in_place(have[i1 + k], want[j1 + k]):
                del live.children[i1 + k]
                _insert_copy(live, i1 + k, want[j1 + k], copying)


def _set_attributes(live: XmlElement | XmlText, target: XmlElement | XmlText) -> None:
    want = dict(_attr_items(target))
    for k, v in _attr_items(live):
        if k not in want:
            del live.attributes[k]
        elif jsonable(v) == jsonable(unmarked(want[k])):
            # (a null where the version held undefined stays: pycrdt reads both as None)
            del want[k]
    for k, v in want.items():
        _set_attr(live, k, v)


class Copying:
    """The copies a restore writes of deleted content, for its meta (``copies``:
    [originals, copies] as base64 ID sets, as an undo's): the new text (or XML node) it
    inserts where the version had text (a node) that is deleted now stands for that,
    so that an undo of the deletion, or a redo of the typing, finds it brought back
    already and does not bring it a second time (server/undo/recorder.py,
    ``RoomUndo.revert``).

    Each insertion of the version's text into a text (a text root, or an XML text
    changed in place: ``noting``) is told the version's offsets it copies, and each
    XML node made again (``node``) the version's node it copies. At the end
    (``pairs``) the version's items there are read by deleting them in a copy of the
    version (the delete set of that transaction: their IDs, a node's with all inside
    it), and those deleted in the live document before the restore are the originals
    of what the insertion wrote. What a map's or an array's values made again copy is
    not paired (docs/history.md)."""

    def __init__(self, live: Doc[Any], target: Doc[Any]) -> None:
        self.live, self.target = live, target
        # what the live document holds deleted before the restore: its whole delete
        # set, which an update from its own state vector carries alone
        self._gone = decode_update_meta(live.get_update(live.get_state())).deletes
        #: the root being made equal (make_equal sets it)
        self.root = ""
        #: (root, the version's node by child indices from the root, the version's start
        #: and end offsets in its text or -1 for the node whole, what was written)
        self.noted: list[tuple[str, tuple[int, ...], int, int, Ranges]] = []
        self._kids: dict[Any, dict[Any, int]] = {}

    def _written(self, insert: Callable[[], None]) -> Ranges:
        client = self.live.client_id
        before = decode_state_vector(self.live.get_state()).get(client, 0)
        insert()
        after = decode_state_vector(self.live.get_state()).get(client, 0)
        return {client: [(before, after)]} if after > before else {}

    def _path(self, node: Any) -> tuple[int, ...] | None:
        """The child indices from the root to the version's XML node `node` (None: not
        inside the root's XML tree)."""
        path: list[int] = []
        while isinstance(node, XmlElement | XmlText):
            parent = node.parent
            if not isinstance(parent, XmlElement | XmlFragment):
                return None
            kids = self._kids.get(parent)
            if kids is None:
                kids = self._kids[parent] = {kid: i for i, kid in enumerate(parent.children)}
            index = kids.get(node)
            if index is None:
                return None
            path.append(index)
            node = parent
        if not isinstance(node, XmlFragment) or node.parent is not None:
            return None
        return tuple(reversed(path))

    def noting(self, text: Any = None) -> Note | None:
        """What to tell of each insertion into the version's text `text` (an XML text),
        or into the text root being made equal (None)."""
        path = () if text is None else self._path(text)
        if path is None:
            return None
        root = self.root

        def note(start: int, end: int, insert: Callable[[], None]) -> None:
            made = self._written(insert)
            if made and end > start:
                self.noted.append((root, path, start, end, made))

        return note

    def node(self, copied: Any, insert: Callable[[], None]) -> None:
        """Make `insert` (an XML node of the version, `copied`, made again)."""
        path = self._path(copied)
        made = self._written(insert)
        if made and path:
            self.noted.append((self.root, path, -1, -1, made))

    def pairs(self) -> list[list[str]]:
        """[originals, copies] per insertion that copies deleted content (base64)."""
        if not self.noted or not self._gone:
            return []
        scratch: Doc[Any] = Doc(skip_gc=True, client_id=scratch_client(self.target))
        scratch.apply_update(self.target.get_update())
        taken: list[Ranges] = []

        def on_transaction(e: Any) -> None:
            ds = e.delete_set
            taken.append(decode_ranges(ds) if ds != b"\x00" else {})

        def at(root: str, path: tuple[int, ...], xml: bool = True) -> Any:
            if not xml:
                return scratch.get(root, type=Text)
            node: Any = scratch.get(root, type=XmlFragment)
            for i in path:
                node = node.children[i]
            return node

        out: list[list[str]] = []

        def paired(made: Ranges) -> None:
            originals: Ranges = {}
            for t in taken:
                union_into(originals, intersect(t, self._gone))
            if originals:
                out.append([to_b64(originals), to_b64(made)])

        # texts first, each from its start, the offsets moved by what went before it
        # (pycrdt finds a position from the start: from the end, 1,500 pieces of a
        # 120 kB text took 0.30 s, from the start 0.04 s); then the nodes, the last
        # first, so that the indices before stay valid (no text noted is in a node
        # made again)
        texts = sorted((n for n in self.noted if n[2] >= 0), key=lambda n: n[:3])
        nodes = sorted((n for n in self.noted if n[2] < 0), key=lambda n: n[:2], reverse=True)
        sub = scratch.observe(on_transaction)
        try:
            moved, last = 0, None
            for root, path, start, end, made in texts:
                if (root, path) != last:
                    moved, last = 0, (root, path)
                taken.clear()
                del at(root, path, bool(path))[start - moved : end - moved]
                moved += end - start
                paired(made)
            for root, path, _start, _end, made in nodes:
                taken.clear()
                del at(root, path[:-1]).children[path[-1]]
                paired(made)
        finally:
            scratch.unobserve(sub)
        return out


#: the restore's Copying while make_equal runs (for the XML it changes in place)
_COPYING: ContextVar[Copying | None] = ContextVar("restore_copying", default=None)


def make_equal(
    live: Doc[Any],
    target: Doc[Any],
    types: dict[str, str],
    writers: dict[str, Writers] | None = None,
    named: list[dict[Any, int]] | None = None,
    items: dict[str, list[Any]] | None = None,
    target_items: dict[str, list[Any]] | None = None,
    copying: Copying | None = None,
) -> None:
    """Change every root of `live` listed in `types` to equal the same root of `target`
    (a scratch document at the restored version; a root it lacks counts as empty).
    `writers`: per text root, who wrote what; `named`: who wrote what that took out
    (see set_text); `items`: the items of root arrays of `live`, where the caller read
    them (render.copy_with_items); `target_items`: those of `target`, where it did;
    `copying`: told of the copies it writes of deleted text and XML nodes (Copying)."""
    token = _COPYING.set(copying)
    try:
        _make_equal(live, target, types, writers, named, items, target_items, copying)
    finally:
        _COPYING.reset(token)


def _make_equal(
    live: Doc[Any],
    target: Doc[Any],
    types: dict[str, str],
    writers: dict[str, Writers] | None,
    named: list[dict[Any, int]] | None,
    items: dict[str, list[Any]] | None,
    target_items: dict[str, list[Any]] | None,
    copying: Copying | None,
) -> None:
    target_names = set(target.keys())
    for name, kind in sorted(types.items()):
        if copying is not None:
            copying.root = name
        cls = ROOT_CLASSES[kind]
        root = live.get(name, type=cls)
        other = target.get(name, type=cls) if name in target_names else None
        if kind == TEXT:
            want = other.diff() if other is not None else []
            note = copying.noting() if copying is not None else None
            set_rich_text(root, want, (writers or {}).get(name), named, note, (live, target, name))
        elif kind == MAP:
            set_map(root, other)
        elif kind == ARRAY:
            want = None
            if other is not None:
                want = (target_items or {}).get(name) or array_items(target, name)
            set_array(root, other, (items or {}).get(name), want)
        elif kind == XML:
            set_xml(root, other)
