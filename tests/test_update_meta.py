"""server/updates.py reads what real Yjs updates carry: checked against yjs itself (Node,
tests/node/update_meta.mjs prints what ``Y.decodeUpdate`` reads) and against pycrdt's own
transactions (their state vectors and delete sets)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, TransactionEvent, XmlElement, XmlFragment, XmlText

from palimpsest import protocol as P
from palimpsest.errors import ProtocolError
from palimpsest.ranges import Ranges
from palimpsest.updates import decode_update_meta, not_v1, read_delete_set

NODE_DIR = Path(__file__).resolve().parent / "node"


def merged(ranges: list[tuple[int, int, int]]) -> Ranges:
    """[(client, start, length)] -> {client: sorted, merged [(start, end)]}."""
    out: Ranges = {}
    for client, start, length in sorted(ranges):
        if length <= 0:
            continue
        cur = out.setdefault(client, [])
        if cur and start <= cur[-1][1]:
            cur[-1] = (cur[-1][0], max(cur[-1][1], start + length))
        else:
            cur.append((start, start + length))
    return out


def normal(r: Ranges) -> Ranges:
    return merged([(c, s, e - s) for c, rs in r.items() for s, e in rs])


@pytest.fixture(scope="module")
def yjs_cases() -> list[dict[str, Any]]:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "yjs").is_dir():
        pytest.fail("Node.js or tests/node/node_modules missing (./scripts/test installs them)")
    out = subprocess.run(
        ["node", "update_meta.mjs"], cwd=NODE_DIR, check=True, capture_output=True, timeout=60
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_reads_what_yjs_reads(yjs_cases: list[dict[str, Any]]) -> None:
    kinds = set()
    for case in yjs_cases:
        meta = decode_update_meta(bytes.fromhex(case["update"]))
        structs = [(c, clock, n) for c, clock, n, kind in case["structs"] if kind != "skip"]
        kinds.update(kind for *_, kind in case["structs"])
        assert normal(meta.structs) == merged(structs), case["name"]
        assert normal(meta.deletes) == merged([tuple(d) for d in case["ds"]]), case["name"]
    # the cases do exercise every struct kind and some deletions
    assert kinds == {"gc", "skip", "item"}
    assert any(case["ds"] for case in yjs_cases)
    assert len(yjs_cases) > 20


def test_reads_what_pycrdt_writes() -> None:
    doc: Doc[Any] = Doc(skip_gc=True)
    seen: list[tuple[bytes, bytes, bytes, bytes]] = []

    def record(ev: TransactionEvent) -> None:
        e: Any = ev  # pycrdt's stubs lack the state vectors and delete set it carries
        seen.append((e.update, e.before_state, e.after_state, e.delete_set))

    doc.observe(record)
    doc["content"] = text = Text()
    doc["meta"] = meta = Map()
    doc["list"] = arr = Array()
    doc["default"] = frag = XmlFragment()
    text += "hello 😀 world"
    text.insert(3, "fmt", attrs={"bold": True})
    del text[1:5]
    meta["n"] = 1
    meta["nested"] = {"a": [1, 2.5, None, True, "s"], "b": {"c": {}}}
    meta["bytes"] = b"\x00\x01\xff"
    arr += [1, "two", [3, [4]], {"five": 5}]
    arr.append(Map({"k": "v"}))
    del arr[0:2]
    para = XmlElement("paragraph", {"align": "left"}, [XmlText("Tiptap")])
    frag.children.append(para)
    del meta["n"]
    assert len(seen) > 10
    for update, before_state, after_state, delete_set in seen:
        got = decode_update_meta(update)
        before = P.decode_state_vector(before_state)
        after = P.decode_state_vector(after_state)
        inserted = {c: [(before.get(c, 0), k)] for c, k in after.items() if k > before.get(c, 0)}
        assert normal(got.structs) == inserted
        assert normal(got.deletes) == normal(read_delete_set(P.Reader(delete_set)))
    full = decode_update_meta(doc.get_update())
    sv = P.decode_state_vector(doc.get_state())
    assert normal(full.structs) == {c: [(0, k)] for c, k in sv.items()}


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x01",  # a client count, then nothing
        b"\x01\x01\x05\x00\x04",  # an item with no parent info
        b"\x01\x01\x05\x00\x1f\x00",  # content ref 31 is unknown
        b"\x00\x00\x00",  # trailing byte after an empty delete set
        b"\x00\x01\x05\x01\x00",  # a delete set range cut short
        b"\x01\x01\x05\x00\x08\x01\x01" + b"\x75" * 1_000 + b"\x00",  # nested arrays, cut short
    ],
)
def test_malformed_updates_say_what_is_wrong(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_update_meta(bad)


@pytest.mark.parametrize(
    "v2",
    [  # Node's yjs, Y.encodeStateAsUpdateV2: text, a map entry, an empty document, a
        # deletion alone (a diff against a state vector)
        "000002a90f000001040f0c636f6e74656e7468656c6c6f07050101000001010000",
        "000002aa0f0000012805026d6b4100010100010101010077017600",
        "00000000000001000000000000",
        "00000000000001000000000001eb07010000",
    ],
)
def test_a_v2_update_is_told_apart(v2: str) -> None:
    update = bytes.fromhex(v2)
    with pytest.raises(ProtocolError) as e:
        decode_update_meta(update)
    assert not_v1(update, str(e.value)).startswith("not a Yjs v1 update (v2 encoding?): ")


def test_an_empty_update_is_called_empty() -> None:
    assert not_v1(b"", "as it was").startswith("empty update: 0 bytes")


@pytest.mark.parametrize("bad", [b"\x00\x00\x05", b"\xff" * 40, b"\x01\x01\x05\x00\x04"])
def test_other_malformed_updates_are_not_called_v2(bad: bytes) -> None:
    assert not_v1(bad, "as it was") == "as it was"


def test_deep_nesting_does_not_recurse() -> None:
    """An attacker-chosen nesting depth is skipped iteratively (no RecursionError)."""
    depth = 100_000
    # one item (info: ContentAny, parent a root type named "m", key "k") holding one
    # value: arrays nested `depth` deep around an empty array
    content = b"\x01" + b"\x75\x01" * depth + b"\x75\x00"
    item = b"\x28" + b"\x01" + P.write_var_string("m") + P.write_var_string("k") + content
    update = b"\x01\x01\x07\x00" + item + b"\x00"
    meta = decode_update_meta(update)
    assert meta.structs == {7: [(0, 1)]}


def _typed_updates() -> list[bytes]:
    """What a client's keystrokes send: characters typed at the end, in the middle,
    before the first, astral and multi-byte ones, a paste, a deletion, a remote client's
    edit merged in, under two client ids of different varUint lengths."""
    out: list[bytes] = []
    for client in (7, 0x1F_FFFF_FFFF_FFFF):
        doc: Doc[Any] = Doc(client_id=client)
        text = doc.get("t", type=Text)
        doc.observe(lambda e: out.append(e.update))
        for i, s in enumerate(["a", "b", "é", "😀", "c", "漢字", "xyz" * 40, "d"]):
            text.insert(0 if i == 3 else len(text) if i % 2 else len(text) // 2, s)
        del text[1:3]
        text.insert(1, "e")
    return out


def test_the_keystroke_fast_path_reads_what_the_general_reader_reads() -> None:
    """updates._keystroke reads the commonest update shape by one regex: wherever it
    answers, its answer is the general reader's; on anything else (other shapes, every
    truncation and byte flip of a keystroke) it declines, and the general reader judges."""
    from palimpsest import updates as U

    updates = _typed_updates()
    fast = [u for u in updates if U._keystroke(u) is not None]
    assert len(fast) >= 10 and len(fast) < len(updates)  # both paths are exercised

    def general_only(u: bytes) -> Any:
        try:
            return U._read_meta(u)
        except ProtocolError as e:
            return type(e)

    for u in updates:
        got = U._keystroke(u)
        assert got is None or got == general_only(u), u.hex()
    # every truncation and every single-byte change of the typed updates: the fast path
    # answers only what the general reader answers the same
    for u in fast:
        variants = [u[:i] for i in range(len(u))] + [u + b"\x00"]
        variants += [
            u[:i] + bytes([b]) + u[i + 1 :] for i in range(len(u)) for b in (0, 0x7F, 0x80, 0xC4)
        ]
        for v in variants:
            got = U._keystroke(v)
            if got is not None:
                assert got == general_only(v), v.hex()


def _nested_entry(parent_info: int) -> bytes:
    """Client 5's update: an array root ``m`` holding a map (a type item, clock 0), and
    an entry ``k`` of that map (clock 1) whose parent is written out as an item id after
    a parent-info varUint of `parent_info`. Yjs (``readParentInfo``: ``=== 1``) and yrs
    (``read_parent_info``: ``== 1``) read a name only for 1: any other value, not just
    0, is followed by an item id."""
    u, s = P.write_var_uint, P.write_var_string
    update = u(1) + u(2) + u(5) + u(0)
    update += bytes([7]) + u(1) + s("m") + u(1)  # a type item in root "m": a YMap
    update += bytes([8 | 0x20]) + u(parent_info) + u(5) + u(0) + s("k")  # parent (5, 0), key
    update += u(1) + bytes([119]) + s("v")  # one any: the string "v"
    return update + u(0)


@pytest.mark.parametrize("parent_info", [0, 2, 3])
def test_a_parent_info_other_than_1_is_an_item_id_as_yrs_reads_it(parent_info: int) -> None:
    from palimpsest.store.update_clients import update_clients

    update = _nested_entry(parent_info)
    doc: Doc[Any] = Doc()
    doc.apply_update(update)  # the oracle: yrs takes the entry as the map's
    assert doc.get("m", type=Array).to_py() == [{"k": "v"}]
    assert decode_update_meta(update).structs == {5: [(0, 2)]}
    assert update_clients(update) == [5]


@pytest.mark.parametrize(
    ("info", "content"),
    [
        (0xC4, P.write_var_string("x")),  # a typed character (the inline path)
        (0xC1, P.write_var_uint(2)),  # a deleted run (skip_item)
    ],
)
@pytest.mark.parametrize("which", ["origin", "right origin"])
def test_an_item_naming_itself_or_later_as_a_neighbour_does_not_decode(
    info: int, content: bytes, which: str
) -> None:
    """It can never be integrated: yrs keeps it pending, Yjs throws "Unexpected case"."""
    other = P.write_var_uint(9) + P.write_var_uint(0)
    for clock, named in ((5, 5), (5, 7)):  # itself; a later item of its own client
        me = P.write_var_uint(77) + P.write_var_uint(named)
        origins = me + other if which == "origin" else other + me
        update = (
            b"\x01\x01" + P.write_var_uint(77) + P.write_var_uint(clock) + bytes([info])
            + origins + content + b"\x00"
        )  # fmt: skip
        with pytest.raises(ProtocolError, match=f"as its {which}, so it can never be integrated"):
            decode_update_meta(update)
    # an earlier item of its own client is the usual origin: typing on
    me = P.write_var_uint(77) + P.write_var_uint(4)
    update = (
        b"\x01\x01" + P.write_var_uint(77) + P.write_var_uint(5) + bytes([info])
        + me + other + content + b"\x00"
    )  # fmt: skip
    assert decode_update_meta(update).refs[77] == 5
