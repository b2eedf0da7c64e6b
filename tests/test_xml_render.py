"""The same version of an XML document reads the same on every request.

pycrdt writes an element's attributes and a mark's (Tiptap's link: href, target, rel,
class) in a hash map's order, another on every read: the same version came back eleven
ways in twelve requests, and a diff's XML-string ops showed attributes moved that
nobody touched. History renders XML itself (render.xml_string), attributes sorted.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually
from nodehelp import scenario
from pycrdt import Doc, XmlElement, XmlFragment, XmlText
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture
from yclient import connect

from palimpsest.history.render import xml_string

ROOT = "default"
LINK = {"href": "https://x.test", "target": "_blank", "rel": "noopener", "class": None}
READS = 20


async def test_a_version_reads_the_same_every_time_and_its_diff_shows_only_changes(
    server: RunningServer,
) -> None:
    ydoc: Doc[Any] = Doc()
    async with (
        connect(server.ws_url, "tiptap", "alice", ydoc=ydoc),
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        frag = ydoc.get(ROOT, type=XmlFragment)
        attrs = {"level": 2, "id": "h", "textAlign": "left", "data-x": "y"}
        with ydoc.transaction():
            frag.children.append(XmlElement("heading", attrs, [XmlText("Minutes")]))
            text = frag.children.append(XmlElement("paragraph")).children.append(XmlText())
            text.insert(0, "the hall", {"link": LINK, "bold": {}})

        async def head(seq: int) -> bool:
            return await server.backend.store.head("tiptap") >= seq

        await eventually(lambda: head(1), what="the first event logged")
        frag.children.append(XmlElement("paragraph"))
        await eventually(lambda: head(2), what="the second event logged")

        docs = "/api/docs/tiptap"
        seen = {
            (await c.get(f"{docs}/versions/1")).json()["roots"][ROOT]["value"] for _ in range(READS)
        }
        heading = '<heading data-x="y" id="h" level="2" textAlign="left">Minutes</heading>'
        link = '<link class="null" href="https://x.test" rel="noopener" target="_blank">'
        assert seen == {f"{heading}<paragraph><bold>{link}the hall</link></bold></paragraph>"}

        params = {"from": 1, "to": 2}
        diffs = {(await c.get(f"{docs}/diff", params=params)).text for _ in range(READS)}
        assert len(diffs) == 1
        ops = json.loads(diffs.pop())["roots"][ROOT]["ops"]
        changed = [op for op in ops if op["op"] != "equal"]
        assert changed == [{"op": "insert", "text": "<paragraph></paragraph>"}], ops

        blames = {(await c.get(f"{docs}/blame", params={"seq": 1})).text for _ in range(READS)}
        assert len(blames) == 1
        nodes = json.loads(blames.pop())["roots"][ROOT]["nodes"]
        assert list(nodes[0]["attributes"]) == sorted(attrs)
        [run] = nodes[1]["children"][0]["runs"]
        assert list(run["attributes"]["link"]) == sorted(LINK)


def _value(rng: random.Random) -> Any:
    """A string value (pycrdt's str() writes other values as Rust does, the history as
    Yjs does: test_attribute_values_read_as_yjs_writes_them)."""
    return rng.choice(['a "q" <b> & ü😀', "", "x", "null", "1.0"])


def _fill(rng: random.Random, node: XmlFragment | XmlElement, depth: int) -> None:
    for _ in range(rng.randrange(4)):
        if depth < 3 and rng.random() < 0.5:
            attrs = {f"a{rng.randrange(3)}": _value(rng)} if rng.random() < 0.6 else {}
            _fill(
                rng,
                node.children.append(XmlElement(rng.choice(["p", "h", "li"]), attrs)),
                depth + 1,
            )
            continue
        text = node.children.append(XmlText())
        for _ in range(rng.randrange(4)):
            at = rng.randrange(len(text) + 1)
            mark = rng.choice([{}, True, {"href": _value(rng)}, _value(rng)])
            if rng.random() < 0.8:
                text.insert(
                    at, rng.choice(["x", "yz", "ü😀 q"]), {rng.choice(["bold", "link"]): mark}
                )
            else:
                text.insert_embed(at, _value(rng), {"m": mark} if rng.random() < 0.5 else None)


def test_the_rendering_is_pycrdts_own_where_that_has_one_order() -> None:
    """Where every element and mark has at most one attribute, pycrdt's str() has
    only one order: the history's rendering spells those documents exactly as it does
    (string values, embeds, marks as tags)."""
    rng = random.Random(7)
    for _ in range(300):
        frag = Doc().get(ROOT, type=XmlFragment)
        _fill(rng, frag, 0)
        assert xml_string(frag) == str(frag)


#: a BlockNote-shaped document written by Node's Yjs: BlockNote sets the attributes
#: whose default is undefined (a numbered item's `start`, an image's `previewWidth`) to
#: undefined, which Yjs keeps as such, beside null ones (Tiptap's); then the same
#: element nested in a group, and one with both
UNDEFINED_SCENARIO = scenario("""
const a = connect('ann')
await a.synced
const frag = a.ydoc.getXmlFragment('document-store')
const el = (name, attrs, kids = []) => {
  const e = new Y.XmlElement(name)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  e.insert(0, kids)
  return e
}
const item = el('numberedListItem', { start: undefined, textColor: 'default', level: 2 },
  [new Y.XmlText('one')])
const image = el('image', { url: 'https://x.test/c.png', previewWidth: undefined, caption: null })
const both = el('file', { a: undefined, b: null, c: undefined, name: 'undefined' })
const inner = el('blockGroup', { x: undefined }, [el('blockContainer', { id: '2' }, [image, both])])
frag.insert(0, [el('blockGroup', {}, [el('blockContainer', { id: '1' }, [item, inner])])])
await logged(1)
const server = (await head()).roots['document-store'].value
process.stdout.write(JSON.stringify({ client: frag.toString(), server }))
a.provider.destroy()
process.exit(0)
""")


#: attribute values as editors keep them (prosemirror-tables' colwidth, flags, numbers,
#: nested objects), set by Node's Yjs on elements and marks, and embedded in a text
VALUES_SCENARIO = scenario("""
const a = connect('ann')
await a.synced
const frag = a.ydoc.getXmlFragment('default')
const values = {
  s: 'a "q" <b> & ü', n0: 0, n2: 2, nf: 0.1, nneg: -1.5, big: 1e21, bigger: 123456789012345680000,
  tiny: 1e-7, small: 0.000001, third: 1 / 3, t: true, f: false, nul: null, colwidth: [120, 80],
  nested: [[1, 2], [3, [4, 'x']], null, true], empty: [], obj: { a: 1, b: [1, 'x'] },
  objs: [{ a: 1 }, 2], max: 1.7976931348623157e308, min: 5e-324, neg0: -0, i32: 2147483648,
  bytes: new Uint8Array([1, 255]),
}
const el = new Y.XmlElement('cell')
for (const [k, v] of Object.entries(values)) el.setAttribute(k, v)
const text = new Y.XmlText()
el.insert(0, [text])
text.insert(0, 'hi', { link: { href: [1, 2], n: 2, o: { x: 1 }, z: null } })
text.insertEmbed(2, { image: 'x.png' })
text.insertEmbed(3, [1, [2, 3]])
text.insertEmbed(4, 4.0)
frag.insert(0, [el])
await logged(1)
const server = (await head()).roots['default'].value
process.stdout.write(JSON.stringify({ client: frag.toString(), server }))
a.provider.destroy()
process.exit(0)
""")


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_attribute_values_read_as_yjs_writes_them(server: RunningServer) -> None:
    """Arrays, objects and numbers in attributes: Yjs's toString() writes JavaScript's
    String(value) (colwidth="120,80", data="[object Object]", 2 not 2.0), the server
    wrote Rust's Display (colwidth="[120, 80]", data="{a: 1, b: [1, x]}"), so a client's
    fragment and the server's version of the same document differed."""
    out = json.loads(await node_scenario(VALUES_SCENARIO, server.ws_url, server.url, "vals"))
    assert 'colwidth="120,80"' in out["server"] and 'obj="[object Object]"' in out["server"]
    assert out["server"] == out["client"], out


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_an_attribute_set_to_undefined_reads_as_yjs_writes_it(server: RunningServer) -> None:
    """BlockNote writes `start=undefined`, `previewWidth=undefined`: Yjs's toString()
    (and yrs's) says "undefined", the server's versions said "null" (pycrdt reads both
    as None), so a client's fragment and the server's version of the same document
    differed. The server tells them apart and writes them as Yjs does (Yjs's toString
    lowercases element names: compared without case)."""
    out = json.loads(await node_scenario(UNDEFINED_SCENARIO, server.ws_url, server.url, "bn-u"))
    assert 'start="undefined"' in out["server"] and 'caption="null"' in out["server"]
    assert 'a="undefined" b="null" c="undefined" name="undefined"' in out["server"]
    assert out["server"].lower() == out["client"].lower(), out


TRICKY = "one</paragraph><paragraph><bold>two</bold> <script>x</script> a < b && c > d"
HREF = 'https://x.y/?a=1&b="2"<'


async def test_format_tree_tells_apart_documents_whose_xml_strings_are_the_same(
    server: RunningServer,
) -> None:
    """`value` is written as Yjs's toString() writes it: nothing escaped, so markup
    typed into one paragraph and a real two-paragraph document gave the same string.
    ``?format=tree`` gives the fragment as JSON (elements, typed attributes, runs with
    their marks): the two differ there, and the characters and attribute values come
    back exactly as written."""
    typed, real = Doc(), Doc()
    async with (
        connect(server.ws_url, "amb-a", "alice", ydoc=typed),
        connect(server.ws_url, "amb-b", "alice", ydoc=real),
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        with typed.transaction():
            frag = typed.get(ROOT, type=XmlFragment)
            p = frag.children.append(XmlElement("paragraph", {"data": HREF, "level": 2}))
            text = p.children.append(XmlText())
            text.insert(0, "one</paragraph><paragraph><bold>two</bold>")
            text.insert(len(text), "link", {"link": {"href": HREF, "class": None}})
        with real.transaction():
            frag = real.get(ROOT, type=XmlFragment)
            p = frag.children.append(XmlElement("paragraph", {"data": HREF, "level": 2}))
            p.children.append(XmlText("one"))
            p2 = frag.children.append(XmlElement("paragraph"))
            t2 = p2.children.append(XmlText())
            t2.insert(0, "two", {"bold": {}})
            t2.insert(len(t2), "link", {"link": {"href": HREF, "class": None}})

        async def logged(doc: str) -> bool:
            return await server.backend.store.head(doc) >= 1

        for doc in ("amb-a", "amb-b"):
            await eventually(lambda doc=doc: logged(doc), what=f"{doc} logged")
        a = (await c.get("/api/docs/amb-a/versions/head")).json()["roots"][ROOT]
        b = (await c.get("/api/docs/amb-b/versions/head")).json()["roots"][ROOT]
        # as Yjs's toString() writes them: nothing escaped, the same string for both
        link = f'<link class="null" href="{HREF}">link</link>'
        assert (
            a["value"]
            == b["value"]
            == (
                f'<paragraph data="{HREF}" level="2">one</paragraph>'
                f"<paragraph><bold>two</bold>{link}</paragraph>"
            )
        )

        ra = await c.get("/api/docs/amb-a/versions/head", params={"format": "tree"})
        rb = await c.get("/api/docs/amb-b/versions/head", params={"format": "tree"})
        assert ra.status_code == rb.status_code == 200, ra.text
        ta, tb = ra.json()["roots"][ROOT], rb.json()["roots"][ROOT]
        assert ta["type"] == "xml" and "value" not in ta
        link = [{"type": "link", "attrs": {"class": None, "href": HREF}}]
        assert ta["nodes"] == [
            {
                "type": "paragraph",
                "attrs": {"data": HREF, "level": 2},
                "children": [
                    {"text": "one</paragraph><paragraph><bold>two</bold>", "marks": []},
                    {"text": "link", "marks": link},
                ],
            }
        ]
        assert tb["nodes"] == [
            {
                "type": "paragraph",
                "attrs": {"data": HREF, "level": 2},
                "children": [{"text": "one", "marks": []}],
            },
            {
                "type": "paragraph",
                "attrs": {},
                "children": [
                    {"text": "two", "marks": [{"type": "bold", "attrs": {}}]},
                    {"text": "link", "marks": link},
                ],
            },
        ]
        bad = await c.get("/api/docs/amb-a/versions/head", params={"format": "html"})
        assert bad.status_code == 400 and bad.json()["error"] == "BadRequest"


def test_the_tree_holds_texts_blocks_and_embeds_as_they_are() -> None:
    """Script tags, ampersands and quotes in text, a Quill-style `true` mark, an embed,
    a Lexical-style block kept as a text with a Y.Map text node."""
    from pycrdt import Map

    from palimpsest.history.render import xml_tree

    doc: Doc[Any] = Doc()
    frag = doc.get(ROOT, type=XmlFragment)
    text = frag.children.append(XmlText())
    text.insert(0, TRICKY, {"bold": True})
    text.insert_embed(len(text), {"image": "a&b.png"})
    block = frag.children.append(XmlText())
    block.insert_embed(0, Map({"__type": "text", "__format": 1}))
    block.insert(1, "<i>")
    block.attributes["__type"] = "paragraph"
    assert xml_tree(frag) == [
        {"text": TRICKY, "marks": [{"type": "bold", "attrs": {}}]},
        {"embed": {"image": "a&b.png"}, "marks": [{"type": "bold", "attrs": {}}]},
        {
            "type": "paragraph",
            "attrs": {},
            "children": [
                {"type": "text", "attrs": {"__format": 1}, "children": []},
                {"text": "<i>", "marks": []},
            ],
        },
    ]
