"""client.split: a large Yjs update as parts that each apply, in order, and each pass the
server's own admission rule (no gap, no reference to an item the receiver lacks, no
deletion of one), so that a client never sends a frame over the server's limit.

Pure: real pycrdt documents, the server's real rule (palimpsest.ownership.Owners)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, XmlFragment

from palimpsest import protocol as P
from palimpsest.client.split import split_update
from palimpsest.errors import Forbidden, UpdateRejected
from palimpsest.ownership import Owners
from palimpsest.updates import decode_update_meta


def edited_by_three(seed: int) -> tuple[Doc[Any], Doc[Any]]:
    """(what the receiver holds, the document three writers made of it): text typed,
    deleted and pasted, map entries, arrays, an XML tree, the writers syncing now and
    then (so items refer to other writers' items)."""
    rnd = random.Random(seed)
    base: Doc[Any] = Doc()
    base.get("content", type=Text).insert(0, "base text " * 10)
    docs: list[Doc[Any]] = [Doc() for _ in range(3)]
    for d in docs:
        d.apply_update(base.get_update())
    for _ in range(300):
        d = rnd.choice(docs)
        t = d.get("content", type=Text)
        op = rnd.random()
        if op < 0.5:
            t.insert(rnd.randint(0, len(t)), rnd.choice(["x" * rnd.randint(1, 50), "é🌍", "w "]))
        elif op < 0.7 and len(t) > 2:
            pos = rnd.randint(0, len(t) - 2)
            del t[pos : pos + rnd.randint(1, min(20, len(t) - pos))]
        elif op < 0.8:
            d.get("m", type=Map)[f"k{rnd.randint(0, 5)}"] = {"v": [1, 2.5, "s" * 30, None]}
        elif op < 0.9:
            d.get("arr", type=Array).extend(list(range(rnd.randint(1, 40))))
        else:
            d.get("x", type=XmlFragment).children.append("xml text " * rnd.randint(1, 5))
        if rnd.random() < 0.1:
            a, b = rnd.sample(docs, 2)
            b.apply_update(a.get_update(b.get_state()))
    full: Doc[Any] = Doc()
    for d in docs:
        full.apply_update(d.get_update())
    return base, full


def apply_parts(base: Doc[Any], full: Doc[Any], limit: int) -> tuple[Doc[Any], list[bytes]]:
    """Split what `base` lacks of `full`, check each part against the server's admission
    rule as it arrives, apply it; the receiving document and the parts."""
    update = full.get_update(base.get_state())
    parts = split_update(update, limit)
    got: Doc[Any] = Doc()
    got.apply_update(base.get_update())
    owners = Owners(server_client=0)
    for part in parts:
        # raises UpdateRejected for a gap, a reference or a deletion of a missing item
        owners.admit("ada", part, lambda: P.decode_state_vector(got.get_state()))
        got.apply_update(part)
    return got, parts


def same(a: Doc[Any], b: Doc[Any]) -> None:
    assert str(a.get("content", type=Text)) == str(b.get("content", type=Text))
    assert a.get("m", type=Map).to_py() == b.get("m", type=Map).to_py()
    assert a.get("arr", type=Array).to_py() == b.get("arr", type=Array).to_py()
    assert str(a.get("x", type=XmlFragment)) == str(b.get("x", type=XmlFragment))
    # nothing waits as pending: every item is integrated
    assert P.decode_state_vector(a.get_state()) == P.decode_state_vector(b.get_state())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [300, 2000])
def test_parts_apply_in_order_and_pass_the_servers_rule(seed: int, limit: int) -> None:
    base, full = edited_by_three(seed)
    got, parts = apply_parts(base, full, limit)
    same(got, full)
    assert len(parts) > 1 and max(len(p) for p in parts) <= limit


def test_a_small_update_is_left_whole() -> None:
    d: Doc[Any] = Doc()
    d.get("content", type=Text).insert(0, "hello")
    update = d.get_update()
    assert split_update(update, 1 << 20) == [update]
    assert split_update(b"\x00\x00", 10) == [b"\x00\x00"]


def test_one_large_item_is_cut_as_yjs_splits_items() -> None:
    # one paste in the middle of a text (an item with both origins), one at the end, a
    # long array push, a large deletion: each larger than a part by itself
    base: Doc[Any] = Doc()
    base.get("content", type=Text).insert(0, "start ")
    full: Doc[Any] = Doc()
    full.apply_update(base.get_update())
    t = full.get("content", type=Text)
    t.insert(3, "é🌍abc" * 2000)  # multi-byte characters: cut between characters
    t += "z" * 5000
    full.get("arr", type=Array).extend([{"k": i, "s": "v" * 10} for i in range(500)])
    full.get("m", type=Map)["list"] = list(range(60))  # one value: small enough
    del t[100:4000]
    for receiver in (base, Doc()):
        got, parts = apply_parts(receiver, full, 500)
        same(got, full)
        assert max(len(p) for p in parts) <= 500


def test_an_item_that_cannot_be_cut_goes_whole_in_a_part_of_its_own() -> None:
    full: Doc[Any] = Doc()
    full.get("content", type=Text).insert(0, "a" * 3000)
    full.get("m", type=Map)["blob"] = b"\x01" * 5000  # one binary value: one clock unit
    got, parts = apply_parts(Doc(), full, 1000)
    same(got, full)
    assert got.get("m", type=Map)["blob"] == b"\x01" * 5000
    big = [p for p in parts if len(p) > 1000]
    assert len(big) == 1 and len(big[0]) < 5100  # the blob alone, nothing added to it


def test_the_rule_used_here_does_refuse_a_part_out_of_order() -> None:
    # the check above is not vacuous: the second part alone is refused by the server
    full: Doc[Any] = Doc()
    full.get("content", type=Text).insert(0, "b" * 3000)
    parts = split_update(full.get_update(), 1000)
    assert len(parts) >= 3
    with pytest.raises((UpdateRejected, Forbidden)):
        Owners(server_client=0).admit("ada", parts[1], lambda: {})


def test_no_part_holds_only_an_item_of_length_0() -> None:
    # yrs leaves a text item of length 0 where a deletion ended at an append; a part
    # holding only that of its client is refused by the server (updates.py: yrs panics
    # on it), so the parts leave it out (it holds nothing)
    base: Doc[Any] = Doc()
    base.get("content", type=Text).insert(0, "start ")
    full: Doc[Any] = Doc()
    full.apply_update(base.get_update())
    t = full.get("content", type=Text)
    t.insert(3, "é🌍abc" * 2000)
    t += "z" * 5000
    del t[100:4000]
    update = full.get_update()
    assert len(decode_update_meta(update).structs) == 2  # whole, it passes
    for limit in range(100, 1500, 7):
        parts = split_update(update, limit)
        for part in parts:
            decode_update_meta(part)  # raises ProtocolError for a section of no clock
    got, _ = apply_parts(base, full, 121)
    same(got, full)
