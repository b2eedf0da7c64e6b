"""Root types, rendering and structural diffs of document versions (no I/O).

A document that the server only knows from updates has untyped roots (pycrdt shows them
as None), and asking for a root with a type fixes that type, so types are guessed on
scratch copies (infer_root_types, which server.undo uses too): a Map if it has keys,
Text if it has characters, an XmlFragment if it holds XML elements and texts alone, an
Array if it holds anything else; a root with nothing visible renders as empty text.
"""

from __future__ import annotations

import base64
import json
import math
from bisect import bisect_right
from collections.abc import Callable, Iterable
from decimal import Decimal, localcontext
from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from ..errors import TooDeep
from . import yupdate
from .bounded_diff import Opcode, WordTest, opcodes, text_opcodes

TEXT, MAP, ARRAY, XML = "text", "map", "array", "xml"
#: the key of the JSON object a binary value is rendered as (jsonable)
BYTES_KEY = "$bytes"
#: the key of the JSON object a subdocument (a Y.Doc held in a map or array) is rendered
#: as: its guid (its content is a document of its own, which this one does not hold)
SUBDOC_KEY = "$doc"
ROOT_CLASSES: dict[str, type[Any]] = {TEXT: Text, MAP: Map, ARRAY: Array, XML: XmlFragment}
#: how deep the history follows values nested in one another (maps, arrays, JSON objects
#: and lists; XML elements in ``?format=tree``, where each is a JSON object; a root is
#: the first level): a version nested deeper is not rendered as JSON (TooDeep, HTTP
#: 422), and the blame's mirror of XML and nested types stops there (its walks recurse
#: too). An XML string has no such limit (xml_string). No editor nests so deep (a
#: whiteboard's groups of groups are a few levels); a hostile or buggy client's 1,000
#: nested maps overflowed the stack of the rendering (a RecursionError, a 500) and of
#: JSON readers.
MAX_DEPTH = 200


def root_names(doc: Doc[Any]) -> list[str]:
    return sorted(doc.keys())


def typed_roots(doc: Doc[Any]) -> dict[str, str]:
    """Types of the roots this doc object has already fixed (live docs)."""
    out: dict[str, str] = {}
    for name, root in doc.items():
        for kind, cls in ROOT_CLASSES.items():
            if isinstance(root, cls):
                out[name] = kind
    return out


def learn_types(doc: Doc[Any], known: dict[str, str]) -> dict[str, str]:
    """The root types of `doc` not in `known` that it tells: those its doc object has
    fixed, then those infer_root_types can guess (its work grows with the document:
    callers run it off the event loop)."""
    learnt = {n: k for n, k in typed_roots(doc).items() if n not in known}
    unknown = [n for n in root_names(doc) if n not in known and n not in learnt]
    for name, kind in infer_root_types(doc, unknown).items():
        if kind is not None:
            learnt[name] = kind
    return learnt


def infer_root_types(doc: Doc[Any], names: Iterable[str]) -> dict[str, str | None]:
    """Guess each root's type on a scratch copy (:func:`shown_root_type`); for a root
    with nothing visible, from the items it held (held_root_types); None when it never
    held any we can read."""
    names = list(names)
    if not names:
        return {}
    update = doc.get_update()
    scratch: Doc[Any] = Doc()
    scratch.apply_update(update)
    out = {name: shown_root_type(scratch, name) for name in names}
    empty = [name for name, kind in out.items() if kind is None]
    if empty:
        out.update(held_root_types(update, empty))
    return out


def shown_root_type(scratch: Doc[Any], name: str) -> str | None:
    """The type of the root `name` of `scratch` (a scratch document: asking for a root
    fixes its type) from what it shows: a Map if it has keys, Text if it has characters,
    an XmlFragment if it holds XML elements and texts alone, an Array if it holds
    anything else (values, XML fragments, texts, maps, arrays, any of them beside XML
    elements: a notebook's or a kanban board's list); None when nothing is visible.
    (pycrdt reads any root as an array of its items: a text's characters one by one.)
    A Y.Array holding XML elements and texts alone is encoded as a fragment is: it is
    taken for one (the items it held before, read from the whole update, would tell,
    at the cost of decoding it: half a second for a 1.8 MB ProseMirror document)."""
    if len(scratch.get(name, type=Map)) > 0:
        return MAP
    if str(scratch.get(name, type=Text)):
        return TEXT
    count = len(scratch.get(name, type=Array))
    if count == 0:
        return None
    # its children as a fragment's are its XML elements and texts (pycrdt leaves the
    # other items out): all of its items or not. (Reading it as an array, item by item,
    # walks the root from its start for each: 0.25 s for 6,000 paragraphs, 0.07 so.)
    children = scratch.get(name, type=XmlFragment).children
    nodes = sum(isinstance(child, XmlElement | XmlText) for child in children)
    return XML if nodes == count else ARRAY


#: type refs of the shared types an XmlFragment holds (YXmlElement, YXmlHook, YXmlText)
_XML_REFS = frozenset({3, 5, 6})


def held_root_types(update: bytes, names: Iterable[str]) -> dict[str, str | None]:
    """The type of each root in `names` from every item `update` has in it, deleted ones
    too (a document kept without garbage collection, as the server keeps them, encodes
    them whole): an emptied map or array was rendered as empty text, or as what it was,
    depending on which version had been asked for first since the start. A key makes a
    map; characters (or formats, embeds) a text; anything else but XML nodes (a value,
    a fragment, a map) an array; XML nodes alone an XML fragment. An item names its
    parent only when it has no origins: the others' is their origin's. None for a root
    with no such item (never written, or its items garbage-collected)."""
    wanted = set(names)
    out: dict[str, str | None] = dict.fromkeys(wanted)
    try:
        structs, _ = yupdate.decode_causal(update)
    except yupdate.Unsupported:
        return out
    starts: dict[int, list[int]] = {}  # per client, the first clock of each struct
    parents: dict[int, list[str | yupdate.ID | None]] = {}  # and its parent
    held: dict[str, set[str]] = {}
    for s in structs:
        parent = s.parent
        ref = s.origin or s.right
        if parent is None and ref is not None and ref[0] in starts:
            parent = parents[ref[0]][bisect_right(starts[ref[0]], ref[1]) - 1]
        starts.setdefault(s.client, []).append(s.clock)
        parents.setdefault(s.client, []).append(parent)
        if not isinstance(parent, str) or parent not in wanted:
            continue
        if s.sub is not None:  # (a garbage-collected entry keeps its key)
            held.setdefault(parent, set()).add(MAP)
        elif s.kind in (yupdate.STRING, yupdate.FORMAT, yupdate.EMBED):
            held.setdefault(parent, set()).add(TEXT)
        elif s.kind == yupdate.TYPE and s.type_ref in _XML_REFS:
            held.setdefault(parent, set()).add(XML)
        elif s.kind != yupdate.DELETED:
            held.setdefault(parent, set()).add(ARRAY)
    for name, kinds in held.items():
        out[name] = next(k for k in (MAP, TEXT, ARRAY, XML) if k in kinds)
    return out


def jsonable(value: Any, depth: int = 0) -> Any:
    """pycrdt values as JSON: shared types rendered at any depth (texts and XML as
    strings, maps and arrays as JSON, keys sorted: pycrdt gives them in a hash map's
    order, another on every read), floats that are integers as ints, NaN and ±Infinity
    as null (as JSON.stringify writes them: Yjs stores and syncs them, JSON has no word
    for them, and Python's encoder wrote NaN, or refused with a 500), binary values
    (a Yjs Uint8Array, which pycrdt gives as a bytearray: a whiteboard's thumbnail, a
    file) as ``{"$bytes": "<base64>"}``, a subdocument as ``{"$doc": "<guid>"}``
    (docs/history.md). `depth`: how many maps and arrays hold `value` (XML is written
    as a string, xml_string); a value nested deeper than MAX_DEPTH raises TooDeep (it
    recursed until the stack overflowed: a RecursionError, a 500)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, dict | list | tuple | Map | Array):
        if depth >= MAX_DEPTH:
            raise too_deep()
        depth += 1
    if isinstance(value, dict):
        return {k: jsonable(value[k], depth) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth) for v in value]
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, XmlFragment | XmlElement | XmlText):
        return xml_string(value)
    # (walked here, not by pycrdt's to_py, which raises for XML held in a map or array)
    if isinstance(value, Map):
        return {k: jsonable(value[k], depth) for k in sorted(value.keys())}
    if isinstance(value, Array):
        return [jsonable(v, depth) for v in value]
    if isinstance(value, bytes | bytearray):
        return {BYTES_KEY: base64.b64encode(value).decode("ascii")}
    if isinstance(value, Doc):
        return {SUBDOC_KEY: value.guid}
    return value


def too_deep() -> TooDeep:
    return TooDeep(
        f"this version holds values nested more than {MAX_DEPTH} levels deep (maps, arrays "
        "or XML elements in one another), deeper than the history renders as JSON: read "
        "it whole as a Yjs update (GET versions/{seq}?format=update, palimpsest export "
        "--format update)"
    )


def render_root(doc: Doc[Any], name: str, kind: str) -> Any:
    root = doc.get(name, type=ROOT_CLASSES[kind])
    if kind == TEXT:
        return str(root)
    if kind == XML:
        return xml_string(root)
    if kind == ARRAY:
        return [jsonable(v, 1) for v in array_items(doc, name)]  # (the root is a level)
    return jsonable(root)


#: a root array longer than this is read through a copy of its document (array_items)
READ_THROUGH_COPY = 512


def array_items(doc: Doc[Any], name: str) -> list[Any]:
    """The items of the root array `name` of `doc`, in time linear in the document.
    pycrdt reads item i by walking the array from its start (yrs's ``get``), so reading
    an array item by item takes time that grows with its length squared: 1.1 s for a
    notebook of 10,000 cells. A longer array is read from the one change event of a
    copy of the document as the whole of it is applied (0.3 s there): its items are the
    copy's, fit to read, not to change `doc` through."""
    array: Array[Any] = doc.get(name, type=Array)
    if len(array) <= READ_THROUGH_COPY:
        return list(array)
    copy, items = copy_with_items(doc.get_update(), [name])
    got = items[name]
    return got if len(got) == len(array) else list(array)


def copy_with_items(
    update: bytes, arrays: Iterable[str], client_id: int | None = None
) -> tuple[Doc[Any], dict[str, list[Any]]]:
    """A new document (kept without garbage collection, under `client_id`) made of
    `update`, and the items of each of its root arrays named in `arrays` read as they
    were inserted: in one pass, not one walk from the start per item (array_items)."""
    copy: Doc[Any] = Doc(skip_gc=True, client_id=client_id)
    deltas: dict[str, list[Any]] = {}
    subs = []

    def extend(got: list[Any]) -> Callable[[Any], None]:
        return lambda e: got.extend(e.delta)

    for name in arrays:
        root: Array[Any] = copy.get(name, type=Array)
        deltas[name] = []
        subs.append((root, root.observe(extend(deltas[name]))))
    try:
        copy.apply_update(update)
    finally:
        for root, sub in subs:
            root.unobserve(sub)
    items: dict[str, list[Any]] = {}
    for name, delta in deltas.items():
        # (a new document's array: one insert after another, nothing kept or deleted)
        if all(set(op) == {"insert"} for op in delta):
            items[name] = [v for op in delta for v in op["insert"]]
        else:
            items[name] = list(copy.get(name, type=Array))
    return copy, items


# --- XML as a string -------------------------------------------------------------------


#: embedded shared types nested deeper than this (a text in a text in a text...) are left
#: out of :func:`xml_string` (no editor nests blocks so deep; a hostile client's 5,000
#: texts nested in one another would overflow the stack)
MAX_EMBED_DEPTH = 100
#: the attributes that name a block kept as a Y.XmlText: Lexical's ``__type``,
#: Slate's (@slate-yjs) ``type``; the first one a block has is its tag
BLOCK_TYPE_KEYS = ("__type", "type")
#: the tag of a block (a Y.XmlText written as an element) that has no type attribute,
#: and of an embedded Y.Map that has none
UNTYPED_TEXT_TAG, UNTYPED_MAP_TAG = "xmltext", "map"


def xml_string(node: XmlFragment | XmlElement | XmlText, depth: int = 0) -> str:
    """`node` as pycrdt's ``str()`` spells it (``<tag a="v">`` elements, a text's marks
    as tags around its runs, embeds as values, nothing escaped), with every attribute
    and every key of a value in sorted order: pycrdt writes them in a hash map's order,
    another on every read, so the same version read twice differed and its diff showed
    changes nobody made. A node holding something no editor writes there (a value, a
    map: not an XML node) is pycrdt's own rendering.

    Blocks kept as texts (Lexical's and Slate's: each paragraph, heading, list and list
    item a Y.XmlText embedded in the root or in its parent block) are elements: a
    Y.XmlText with attributes or embedded shared types, or embedded in another text, is
    written ``<type a="v">…</type>``, its tag its ``__type`` or ``type`` attribute
    (:data:`UNTYPED_TEXT_TAG` without one), its other attributes in name order. The
    shared types embedded in a text are written in place, to :data:`MAX_EMBED_DEPTH`:
    a Y.XmlText so, a Y.XmlElement as an element, a Y.Map (Lexical's text node) as an
    empty element ``<text __format="1"/>``, named alike (:data:`UNTYPED_MAP_TAG`);
    other shared types (texts, arrays, subdocuments) are left out. A plain XML text
    (Tiptap's, ProseMirror's: no attributes, nothing embedded) is its runs alone. An
    element's attribute set to undefined is written ``undefined`` (as Yjs's toString()
    and yrs write it), one set to null ``null``: :func:`_undefined_keys`.

    Elements nested in elements are walked with a stack of their own, not by recursion:
    a string has no depth to limit, and a client's 1,000 nested elements overflowed the
    interpreter's stack (a RecursionError, a 500)."""
    if isinstance(node, XmlText):
        return _xml_text(node, depth, embedded=False)
    kids = list(node.children)
    if len(kids) != len(node.children):
        return str(node)
    # per open node: the node, its children, the next one's index, its children's strings
    stack: list[tuple[XmlFragment | XmlElement, list[Any], list[int], list[str]]] = [
        (node, kids, [0], [])
    ]
    while True:
        parent, children, at, parts = stack[-1]
        if at[0] < len(children):
            kid = children[at[0]]
            at[0] += 1
            if isinstance(kid, XmlText):
                parts.append(_xml_text(kid, depth, embedded=False))
                continue
            grandkids = list(kid.children)
            if len(grandkids) != len(kid.children):
                parts.append(str(kid))
            else:
                stack.append((kid, grandkids, [0], []))
            continue
        stack.pop()
        done = _closed(parent, "".join(parts))
        if not stack:
            return done
        stack[-1][3].append(done)


def _closed(node: XmlFragment | XmlElement, inner: str) -> str:
    """`node` as xml_string writes it, its children written `inner`."""
    if isinstance(node, XmlFragment):
        return inner
    items: list[tuple[str, Any]] = [*node.attributes]  # type: ignore[misc]
    undefined = _undefined_keys(node, items, len(inner)) if any(v is None for _, v in items) else ()
    shown = ((str(k), UNDEFINED if k in undefined else js_string(v)) for k, v in items)
    attrs = "".join(f' {k}="{v}"' for k, v in sorted(shown))
    return f"<{node.tag}{attrs}>{inner}</{node.tag}>"


#: how Yjs's toString() and yrs write an attribute set to undefined (BlockNote sets a
#: numbered item's `start` and an image's `previewWidth` so), and null
UNDEFINED, NULL = "undefined", "null"
#: an element whose children render longer than this writes its attributes set to
#: undefined as null (:func:`_undefined_keys` renders it whole to tell them apart)
UNDEFINED_READ_LIMIT = 1 << 16


def _undefined_keys(node: XmlElement, items: list[tuple[str, Any]], inner: int) -> set[str]:
    """Which of `node`'s attributes that pycrdt reads as None are undefined rather than
    null. pycrdt gives both as None; yrs's own rendering (``str()``: the opening tag,
    then its children's, then the closing tag) writes ``undefined`` and ``null``, so the
    opening tag is longer by 5 for each undefined one: all of them, none, or those whose
    `` k="undefined"`` it holds when that count says which. An element whose children
    render longer than :data:`UNDEFINED_READ_LIMIT` is not rendered again (in BlockNote
    those are leaves: a list item, an image), and its are null."""
    if inner > UNDEFINED_READ_LIMIT:
        return set()
    whole = str(node)
    kids = sum(len(str(kid)) for kid in node.children)
    head = whole[: len(whole) - kids - len(f"</{node.tag}>")]
    known = sum(len(f' {k}="{_any_string(v)}"') for k, v in items)
    nones = [str(k) for k, v in items if v is None]
    count, rest = divmod(len(head) - len(f"<{node.tag}>") - known, len(UNDEFINED) - len(NULL))
    if rest or not 0 <= count <= len(nones):
        return set()
    if count == len(nones):
        return set(nones)
    found = {k for k in nones if f' {k}="{UNDEFINED}"' in head}
    return found if len(found) == count else set()


def _xml_text(node: XmlText, depth: int, embedded: bool) -> str:
    delta = node.diff()
    inner = "".join(_xml_run(insert, attrs, depth) for insert, attrs in delta)
    items: list[tuple[str, Any]] = [*node.attributes]  # type: ignore[misc]
    if not embedded and not items and not any(_is_shared(insert) for insert, _ in delta):
        return inner
    tag, attrs = _typed_tag(items, UNTYPED_TEXT_TAG, js_string)
    return f"<{tag}{attrs}>{inner}</{tag}>"


def _typed_tag(
    items: list[tuple[str, Any]], untyped: str, show: Callable[[Any], str]
) -> tuple[str, str]:
    """A block's tag (its first type attribute that is a string: BLOCK_TYPE_KEYS) and
    its other attributes, written in name order."""
    values = dict(items)
    key = next((k for k in BLOCK_TYPE_KEYS if isinstance(values.get(k), str) and values[k]), None)
    tag = values.pop(key) if key is not None else untyped
    return tag, "".join(f' {k}="{show(values[k])}"' for k in sorted(values))


def _embedded(value: Any, depth: int) -> str:
    """A shared type embedded in a text, in place (xml_string)."""
    if depth >= MAX_EMBED_DEPTH:
        return ""
    if isinstance(value, XmlText):
        return _xml_text(value, depth + 1, embedded=True)
    if isinstance(value, XmlElement):
        return xml_string(value, depth + 1)
    if isinstance(value, Map):
        items = [(str(k), value[k]) for k in value.keys()]
        tag, attrs = _typed_tag(items, UNTYPED_MAP_TAG, js_string)
        return f"<{tag}{attrs}/>"
    return ""


def _xml_run(insert: Any, attrs: dict[str, Any] | None, depth: int = 0) -> str:
    """A run of an XML text: each mark a tag, in name order, with its attributes when
    it has a map of them (Tiptap's link: href, target, rel, class); an embedded shared
    type in place (:func:`_embedded`)."""
    marks = sorted((attrs or {}).items())
    opening = "".join(f"<{name}{_tag_attrs(value)}>" for name, value in marks)
    closing = "".join(f"</{name}>" for name, _ in reversed(marks))
    shown = _embedded(insert, depth) if _is_shared(insert) else js_string(insert)
    return opening + shown + closing


def _tag_attrs(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    return "".join(f' {k}="{js_string(value[k])}"' for k in sorted(value))


def _is_shared(value: Any) -> bool:
    return isinstance(value, Text | Map | Array | XmlFragment | XmlElement | XmlText | Doc)


def js_string(value: Any) -> str:
    """A value as JavaScript's ``String(value)`` writes it, as Yjs's toString() puts an
    attribute's value, a mark attribute's or an embed into its XML (a template string):
    strings bare, ``null``, ``true``/``false``, numbers as JS prints them (2, not 2.0;
    1e+21; 1e-7; NaN, Infinity), an array its items joined by "," (null ones empty,
    nested arrays alike: [[1, 2], 3] is 1,2,3), an object (a map, a Y.Map, a Y.Array,
    a subdocument) ``[object Object]``, bytes (a Uint8Array) their numbers joined by
    ","; a Y.Text or XML type its own string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value) if abs(value) < 10**21 else _js_number(float(value))
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, bytes | bytearray):
        return ",".join(str(b) for b in value)
    if isinstance(value, list | tuple):
        return ",".join("" if v is None else js_string(v) for v in value)
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, XmlFragment | XmlElement | XmlText):
        return xml_string(value)
    return "[object Object]"


def _js_number(x: float) -> str:
    """A double as JavaScript's Number.prototype.toString() writes it: the shortest
    digits that read back as it (Python's repr finds the same ones), fixed notation from
    1e-7 (exclusive) to 1e21 (exclusive), else ``d.ddde+N``/``de-N``; -0 is "0"."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    _, digits_t, exp = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digits_t)).rstrip("0") or "0"
    assert isinstance(exp, int)
    n = len(digits_t) + exp  # the value is 0.DIGITS * 10**n
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        out = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + out


def _any_string(value: Any) -> str:
    """A value as Yrs writes it into XML (its Display: what pycrdt's ``str()`` of an
    element holds, which :func:`_undefined_keys` measures; the history's own rendering
    writes values as Yjs does, :func:`js_string`): strings bare, null, true,
    numbers without an exponent or a needless ".0", bytes as 0x-hex, lists and maps as
    [a, b] and {k: v} (keys sorted); a shared type as Yrs names it (TextRef, MapRef)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _f64_string(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_any_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_any_string(value[k])}" for k in sorted(value)) + "}"
    return f"{type(value).__name__}Ref"


def _f64_string(x: float) -> str:
    """A float as Rust's Display writes it: the shortest digits that read back as it,
    never in exponent form (1e21 is 1000000000000000000000), -0 for negative zero, and
    of two such digits equally near it the one farther from zero (Python's repr takes
    the even one: 673424794363284.25 is ...284.2 to Python, ...284.3 to Rust)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    shortest = Decimal(repr(x))
    with localcontext(prec=800):  # exactly: a double has at most 767 significant digits
        off = Decimal(x) - shortest
    unit = Decimal(1).scaleb(int(shortest.as_tuple().exponent))
    if off and abs(off) * 2 == unit and (off > 0) == (x > 0):
        shortest += unit.copy_sign(off)
    return format(shortest.normalize(), "f")


# --- XML as a JSON tree ----------------------------------------------------------------


def xml_tree(
    node: XmlFragment | XmlElement, depth: int = 0, nested: int = 0
) -> list[dict[str, Any]]:
    """The children of `node` as a JSON tree (``?format=tree``): what the XML string
    (:func:`xml_string`) spells, but nothing to parse or escape, so no text can be
    taken for markup. An element is ``{"type", "attrs", "children"}`` (its attributes
    typed, as JSON: jsonable; one set to undefined or null is null); a run of text
    ``{"text", "marks"}``, each mark ``{"type", "attrs"}`` in name order (a mark whose
    value is not a map of attributes, Quill-style ``true``, has ``{}``, and the value
    itself as ``"value"`` when it is not true); an embed in a text ``{"embed", "marks"}``.
    A block kept as a text (Lexical's, Slate's) is an element named as in the string
    (its type attribute; ``xmltext``), its runs and embedded blocks its children; a
    Lexical text node's Y.Map an element with no children. Elements nested deeper than
    MAX_DEPTH (`nested`: those that hold `node`) raise TooDeep."""
    if nested >= MAX_DEPTH:
        raise too_deep()
    out: list[dict[str, Any]] = []
    for kid in node.children:
        if isinstance(kid, XmlText):
            out.extend(_text_tree(kid, depth, embedded=False))
        elif isinstance(kid, XmlElement):
            out.append(_element_tree(kid, depth, nested + 1))
    return out


def _element_tree(node: XmlElement, depth: int, nested: int = 0) -> dict[str, Any]:
    items: list[tuple[str, Any]] = [*node.attributes]  # type: ignore[misc]
    attrs = {str(k): jsonable(v) for k, v in sorted(items, key=lambda kv: str(kv[0]))}
    return {"type": node.tag, "attrs": attrs, "children": xml_tree(node, depth, nested)}


def _text_tree(node: XmlText, depth: int, embedded: bool) -> list[dict[str, Any]]:
    delta = node.diff()
    runs: list[dict[str, Any]] = []
    for insert, marks in delta:
        shown = sorted((marks or {}).items())
        mark_list = [_mark_tree(str(k), v) for k, v in shown]
        if _is_shared(insert):
            runs.extend(_embedded_tree(insert, depth))
        elif isinstance(insert, str):
            if insert:
                runs.append({"text": insert, "marks": mark_list})
        else:
            runs.append({"embed": jsonable(insert), "marks": mark_list})
    items: list[tuple[str, Any]] = [*node.attributes]  # type: ignore[misc]
    if not embedded and not items and not any(_is_shared(insert) for insert, _ in delta):
        return runs
    values = dict(items)
    key = next((k for k in BLOCK_TYPE_KEYS if isinstance(values.get(k), str) and values[k]), None)
    tag = values.pop(key) if key is not None else UNTYPED_TEXT_TAG
    attrs = {str(k): jsonable(values[k]) for k in sorted(values, key=str)}
    return [{"type": tag, "attrs": attrs, "children": runs}]


def _mark_tree(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"type": name, "attrs": jsonable(value)}
    if value is True:
        return {"type": name, "attrs": {}}
    return {"type": name, "attrs": {}, "value": jsonable(value)}


def _embedded_tree(value: Any, depth: int) -> list[dict[str, Any]]:
    """A shared type embedded in a text, as :func:`_embedded` writes it, as a tree."""
    if depth >= MAX_EMBED_DEPTH:
        return []
    if isinstance(value, XmlText):
        return _text_tree(value, depth + 1, embedded=True)
    if isinstance(value, XmlElement):
        return [_element_tree(value, depth + 1)]
    if isinstance(value, Map):
        values = {str(k): value[k] for k in value.keys()}
        key = next(
            (k for k in BLOCK_TYPE_KEYS if isinstance(values.get(k), str) and values[k]), None
        )
        tag = values.pop(key) if key is not None else UNTYPED_MAP_TAG
        attrs = {k: jsonable(values[k]) for k in sorted(values)}
        return [{"type": tag, "attrs": attrs, "children": []}]
    return []


def root_tree_entry(doc: Doc[Any], name: str, kind: str) -> dict[str, Any]:
    """A root as ``?format=tree`` gives it: an XML root as ``{"type": "xml", "nodes"}``
    (:func:`xml_tree`), any other as :func:`root_entry`."""
    if kind == XML:
        return {"type": XML, "nodes": xml_tree(doc.get(name, type=XmlFragment))}
    return root_entry(doc, name, kind)


def root_entry(doc: Doc[Any], name: str, kind: str) -> dict[str, Any]:
    """{type, value} of a root, and for a text with formatting or embeds (Quill's) its
    ``delta`` too, as Yjs's ``toDelta()`` gives it: [{"insert", "attributes"?}], runs of
    equal attributes joined. ``value`` is the characters alone."""
    entry: dict[str, Any] = {"type": kind, "value": render_root(doc, name, kind)}
    if kind == TEXT:
        delta = doc.get(name, type=Text).diff()
        if any(attrs or not isinstance(insert, str) for insert, attrs in delta):
            entry["delta"] = text_delta(delta)
    return entry


def joined_runs(
    delta: Iterable[tuple[Any, Any]], attrs: Callable[[Any], Any] = jsonable
) -> list[tuple[Any, Any, bool]]:
    """pycrdt's ``diff()`` with adjacent strings of equal attributes joined (pycrdt gives
    them apart when they are apart in the document's structure) and empty ones left out,
    as (insert, attributes or None, whether it is an embed): each attribute set as
    `attrs` makes it, each embed as pycrdt gives it. What text_delta, restore and the
    rich diff read a text through."""
    out: list[tuple[Any, Any, bool]] = []
    for insert, raw in delta:
        a = attrs(raw) if raw else None
        if not isinstance(insert, str):
            out.append((insert, a, True))
        elif out and not out[-1][2] and out[-1][1] == a:
            out[-1] = (out[-1][0] + insert, a, False)
        elif insert:
            out.append((insert, a, False))
    return out


def text_delta(
    delta: Iterable[tuple[Any, Any]], embed: Callable[[Any], Any] = jsonable
) -> list[dict[str, Any]]:
    """pycrdt's ``diff()`` as Yjs's ``toDelta()`` gives it (:func:`joined_runs`), each
    embed as ``embed`` renders it."""
    return [
        {"insert": embed(v) if is_embed else v, "attributes": a}
        if a
        else {"insert": embed(v) if is_embed else v}
        for v, a, is_embed in joined_runs(delta)
    ]


def render(doc: Doc[Any], types: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every root of `doc` (a scratch doc: this fixes its root types) as {type, value}
    (and ``delta``, see root_entry)."""
    return {name: root_entry(doc, name, types.get(name, TEXT)) for name in root_names(doc)}


def empty_value(kind: str) -> Any:
    return {TEXT: "", XML: "", MAP: {}, ARRAY: []}[kind]


# --- structural diffs (non-text roots) -------------------------------------------------


def diff_map(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            changes.append({"key": key, "op": "remove", "old": old[key]})
        elif key not in old:
            changes.append({"key": key, "op": "add", "new": new[key]})
        elif old[key] != new[key]:
            changes.append({"key": key, "op": "change", "old": old[key], "new": new[key]})
    return changes


def diff_array(old: list[Any], new: list[Any]) -> list[dict[str, Any]]:
    a = [json.dumps(v, sort_keys=True) for v in old]
    b = [json.dumps(v, sort_keys=True) for v in new]
    ops: list[dict[str, Any]] = []
    for tag, i1, i2, j1, j2 in opcodes(a, b):
        if tag == "equal":
            ops.append({"op": "equal", "index": i1, "values": old[i1:i2]})
        if tag in ("delete", "replace"):
            ops.append({"op": "delete", "index": i1, "values": old[i1:i2]})
        if tag in ("insert", "replace"):
            ops.append({"op": "insert", "index": j1, "values": new[j1:j2]})
    return ops


def equal_as_counts(roots: dict[str, Any]) -> dict[str, Any]:
    """A diff's `roots` with each array's ``equal`` ops as ``{"op": "equal", "index",
    "count"}`` instead of their values (``?equal=count``): a one-character edit of a
    500-cell notebook was 914 kB of JSON, nearly all of it the cells that did not change.
    New dicts: the answer given may be a cached one."""
    out: dict[str, Any] = {}
    for name, entry in roots.items():
        if isinstance(entry, dict) and entry.get("type") == ARRAY:
            ops = [
                {"op": "equal", "index": op["index"], "count": len(op["values"])}
                if op.get("op") == "equal"
                else op
                for op in entry.get("ops", ())
            ]
            entry = {**entry, "ops": ops}
        out[name] = entry
    return out


def diff_strings(old: str, new: str) -> list[dict[str, Any]]:
    """A character diff without attribution (XML roots)."""
    ops: list[dict[str, Any]] = []
    for tag, i1, i2, j1, j2 in string_opcodes(old, new):
        if tag == "equal":
            ops.append({"op": "equal", "text": old[i1:i2]})
        if tag in ("delete", "replace"):
            ops.append({"op": "delete", "text": old[i1:i2]})
        if tag in ("insert", "replace"):
            ops.append({"op": "insert", "text": new[j1:j2]})
    return ops


def string_opcodes(a: str, b: str, word: WordTest | None = None) -> list[Opcode]:
    """difflib-style opcodes over code points: common prefix and suffix trimmed, then
    bounded_diff.text_opcodes (a character diff where it is affordable, else by lines,
    then tokens, then characters, with short kept runs that hold no word folded into
    the changes around them); the work bounded, whatever the texts. `word`: which code
    points are characters of words (bounded_diff.is_word unless given)."""
    n = min(len(a), len(b))
    pre = _common(a, b, n, lambda s, k: s[:k])
    suf = _common(a, b, n - pre, lambda s, k: s[len(s) - k :])
    am, bm = a[pre : len(a) - suf], b[pre : len(b) - suf]
    ops: list[Opcode] = []
    if pre:
        ops.append(("equal", 0, pre, 0, pre))
    ops.extend(
        (t, i1 + pre, i2 + pre, j1 + pre, j2 + pre)
        for t, i1, i2, j1, j2 in text_opcodes(am, bm, word=word)
    )
    if suf:
        ops.append(("equal", len(a) - suf, len(a), len(b) - suf, len(b)))
    return ops


def _common(a: str, b: str, n: int, part: Callable[[str, int], str]) -> int:
    """The largest k <= n with part(a, k) == part(b, k) (a common prefix or suffix), by
    comparing slices (a loop over characters took 0.3 s on a megabyte)."""
    if n == 0 or part(a, 1) != part(b, 1):
        return 0
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if part(a, mid) == part(b, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def structural_diff(kind: str, old: Any, new: Any) -> dict[str, Any]:
    if kind == MAP:
        return {"type": MAP, "changes": diff_map(old or {}, new or {})}
    if kind == ARRAY:
        return {"type": ARRAY, "ops": diff_array(old or [], new or [])}
    return {"type": kind, "ops": diff_strings(old or "", new or "")}
