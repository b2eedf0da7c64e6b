"""A text diff shows formatting and embeds (rich_diff): a word made bold is a ``format``
op, an image is an op with its ``embed``, inserted and deleted text carry their
attributes; read back to front, the ops spell each version's delta. A format op names
the last event that changed what differs (checked against every version, character by
character), and blame carries the version's formatting. A plain text's diff is what it
always was."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import RunningServer, eventually
from indexhelp import restamped
from pycrdt import Doc, Text
from serverproc import REPO_ROOT
from test_attribution_ids import ROOTS, _bounds, session
from yclient import two_people

from palimpsest.history import attribution_codec as codec
from palimpsest.history import service
from palimpsest.history.attribution import AttributionIndex
from palimpsest.history.render import text_delta
from palimpsest.history.rich_diff import (
    Mismatch,
    attribute_formats,
    formatted_blame,
    observe_texts,
    replay_marks,
    runs_of,
    with_formatting,
)
from palimpsest.store.base import Event

TEXT_OP = yaml.safe_load((REPO_ROOT / "docs" / "openapi.yaml").read_text())["components"][
    "schemas"
]["TextOp"]


def _versions(log: list[Event], name: str) -> list[list[dict[str, Any]]]:
    """The text's delta at each seq (0 to the end)."""
    doc: Doc[Any] = Doc()
    out = [text_delta([])]
    for ev in log:
        doc.apply_update(ev.update)
        out.append(text_delta(doc.get(name, type=Text).diff()))
    return out


def _spelled(ops: list[dict[str, Any]], side: str) -> list[dict[str, Any]]:
    """The delta the ops spell for the earlier version ("a") or the later ("b")."""
    keep = {"a": ("equal", "delete", "format"), "b": ("equal", "insert", "format")}[side]
    pieces = []
    for op in ops:
        if op["op"] not in keep:
            continue
        attrs = op["was"] if op["op"] == "format" and side == "a" else op.get("attributes")
        pieces.append((op["embed"] if "embed" in op else op["text"], attrs or None))
    return text_delta(pieces)


def _check(ops: list[dict[str, Any]], va: Any, vb: Any) -> None:
    assert _spelled(ops, "a") == va
    assert _spelled(ops, "b") == vb
    for op in ops:
        assert op["op"] in ("equal", "insert", "delete", "format")
        if op["op"] == "format":
            # only where the formatting differs, and nobody is named for it
            assert op["attributes"] != op["was"] and op["actor"] is None
        if "embed" in op:
            assert op["text"] == "\ufffc"


def _rich_edit(rng: random.Random, doc: Doc[Any]) -> None:
    """An editor's edit: typing (formatted or not), deleting, an embed, a format set or
    taken off (bold, italic, a header's level)."""
    t = doc.get("content" if rng.random() < 0.8 else "notes", type=Text)
    b = _bounds(t)
    n = len(b) - 1
    r = rng.random()
    attrs = rng.choice([{"bold": True}, {"italic": True}, {"header": rng.randint(1, 2)}])
    if n and r < 0.25:
        i = rng.randrange(n)
        del t[b[i] : b[min(n, i + rng.randint(1, 4))]]
    elif r < 0.3:
        t.insert_embed(b[rng.randint(0, n)], {"img": rng.randrange(9)})
    elif n and r < 0.6:
        i = rng.randrange(n)
        j = min(n, i + rng.randint(1, 8))
        t.format(b[i], b[j], attrs if rng.random() < 0.6 else dict.fromkeys(attrs))
    else:
        word = "".join(rng.choice("abc é😀\n") for _ in range(rng.randint(1, 4)))
        t.insert(b[rng.randint(0, n)], word, attrs if rng.random() < 0.2 else None)


@pytest.mark.parametrize("edits", ["bold", "rich"])
@pytest.mark.parametrize("by_ids", [True, False])
def test_concurrent_rich_sessions_diff_to_both_versions(by_ids: bool, edits: str) -> None:
    # three clients editing at once, each seeing the others late: the index's own test
    # sessions (embeds and bold), then with formats set and taken off
    edit = _rich_edit if edits == "rich" else None
    rich_seen: set[bool] = set()
    attributed = 0
    for seed in range(12):
        log, _ = session(seed, edit=edit)
        index = AttributionIndex("d", list(ROOTS), by_ids=by_ids)
        index.fold(log)
        assert index.verify()
        rng = random.Random(seed)
        n = len(log)
        for name in ROOTS:
            versions = _versions(log, name)
            ever = any(
                "attributes" in op or not isinstance(op["insert"], str)
                for v in versions
                for op in v
            )
            # a text that had formatting or an embed at any version is known as rich
            if ever:
                assert index.tracks[name].rich is True
            rich_seen.add(bool(ever))
            chars = None
            for _ in range(15):
                a, b = sorted(rng.randint(0, n) for _ in range(2))
                ops = index.diff(name, a, b)
                va, vb = versions[a], versions[b]
                runs_a, runs_b = runs_of(_diff(log, name, a)), runs_of(_diff(log, name, b))
                got = with_formatting(ops, runs_a, runs_b)
                _check(got, va, vb)
                # the characters and their attribution are the index's
                assert "".join(o["text"] for o in got) == "".join(o["text"] for o in ops)
                # blame at b, with b's formatting: the runs spell b's delta
                runs = index.blame(name, b)
                laid = formatted_blame("d", name, runs, _doc(log, b))
                assert _spelled([{"op": "insert", **r} for r in laid], "b") == vb
                assert [(r["text"], r["actor"]) for r in _merged(laid)] == [
                    (r["text"], r["actor"]) for r in _merged(runs)
                ]
                if any(o["op"] == "format" for o in got):
                    if chars is None:
                        chars = _by_identity(index, log, name)
                    _check_formats_attributed(log, name, a, b, got, chars)
                    attributed += 1
    assert True in rich_seen and attributed > 20  # the sessions do format and embed


def _by_identity(index: AttributionIndex, log: list[Event], name: str) -> list[list[Any]]:
    """For each seq, the text's characters as (identity, attributes): a character's
    identity is where its bytes are in the index (the same character at every seq)."""
    track = index.tracks[name]
    doc: Doc[Any] = Doc()
    out = []
    for seq in range(len(log) + 1):
        if seq:
            doc.apply_update(log[seq - 1].update)
        ids = []
        for run in track.runs():
            if run[1] and run[2] <= seq and not (run[3] and run[3] <= seq):
                at = run[0]
                for ch in bytes(track.content[at : at + run[1]]).decode():
                    ids.append(at)
                    at += len(ch.encode())
        attrs = []
        for text, a, _ in runs_of(doc.get(name, type=Text).diff()):
            attrs += [a or {}] * len(text)
        assert len(ids) == len(attrs), seq
        out.append(list(zip(ids, attrs, strict=True)))
    return out


def _check_formats_attributed(
    log: list[Event], name: str, a: int, b: int, ops: list[dict[str, Any]], chars: list[Any]
) -> None:
    """Each character of a format op names the last event between the versions that
    changed one of its attributes that differ between them (found by looking at every
    version: `chars`, _by_identity's); nothing else changes."""
    version_a: Doc[Any] = Doc()
    for ev in log[:a]:
        version_a.apply_update(ev.update)
    events = log[a:b]
    ranges = _ranges(version_a, name, events)
    actors = {ev.seq: ev.actor for ev in events}
    got = attribute_formats(ops, ranges, actors)
    assert [(o["op"], o.get("attributes"), o.get("was")) for o in got if o["op"] != "format"] == [
        (o["op"], o.get("attributes"), o.get("was")) for o in ops if o["op"] != "format"
    ]
    assert "".join(o["text"] for o in got) == "".join(o["text"] for o in ops)
    attrs_at = {s: dict(chars[s]) for s in range(a, b + 1)}
    assert_formats_named(got, [ident for ident, _ in chars[b]], attrs_at, a, b, actors)


def assert_formats_named(
    ops: list[dict[str, Any]],
    at_b: list[Any],
    attrs_at: dict[int, dict[Any, dict[str, Any]]],
    a: int,
    b: int,
    actors: dict[int, str],
) -> None:
    """Each character of a format op in `ops` names the last event in (a, b] that
    changed one of its attributes that differ between the versions: `at_b` is the
    identity of each character of version b, `attrs_at[s]` each character's attributes
    at seq s, by identity (every version from a to b)."""
    idents = iter(at_b)
    for o in ops:
        if o["op"] == "delete":
            continue
        for _ in o["text"]:
            ident = next(idents)
            if o["op"] != "format":
                continue
            differ = {k for k in {*o["attributes"], *o["was"]}
                      if o["attributes"].get(k) != o["was"].get(k)}  # fmt: skip
            changed = [s for s in range(a + 1, b + 1) for k in differ
                       if attrs_at[s - 1][ident].get(k) != attrs_at[s][ident].get(k)]  # fmt: skip
            assert o["seq"] == max(changed), (o, changed)
            assert o["actor"] == actors[o["seq"]]


def _ranges(version_a: Doc[Any], name: str, events: list[Event]) -> list[Any]:
    """Who formatted what in text root `name`: the service's replay, of that root."""
    return replay_marks(version_a, events, [observe_texts([name])]).get(name, [])


def _doc(log: list[Event], seq: int) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for ev in log[:seq]:
        doc.apply_update(ev.update)
    return doc


def _diff(log: list[Event], name: str, seq: int) -> Any:
    return _doc(log, seq).get(name, type=Text).diff()


def _merged(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent runs of one event joined (blame's runs, split or not by formatting)."""
    out: list[dict[str, Any]] = []
    for r in runs:
        if out and out[-1]["seq"] == r["seq"]:
            out[-1] = {**out[-1], "text": out[-1]["text"] + r["text"]}
        else:
            out.append(dict(r))
    return out


def _log(changes: list[Any]) -> tuple[Doc[Any], list[Event]]:
    doc: Doc[Any] = Doc()
    t = doc.get("t", type=Text)
    got: list[bytes] = []
    doc.observe(lambda e: got.append(e.update))
    for change in changes:
        change(t)
    log = [Event("d", i + 1, 0, f"u{i + 1}", "edit", u, {}) for i, u in enumerate(got)]
    return doc, log


def test_bold_an_image_and_typing_read_as_editors_would() -> None:
    doc, log = _log(
        [
            lambda t: t.insert(0, "Hello brave world"),
            lambda t: t.format(6, 11, {"bold": True}),
            lambda t: t.insert_embed(17, {"image": "cat.png"}, {"width": "120"}),
            lambda t: t.insert(0, "Oh! ", {"italic": True}),
            lambda t: t.format(0, 3, {"italic": None}),
        ]
    )
    index = AttributionIndex("d", ["t"])
    index.fold(log)
    assert index.tracks["t"].rich is True
    got = with_formatting(
        index.diff("t", 1, 5), runs_of(_diff(log, "t", 1)), runs_of(doc.get("t", type=Text).diff())
    )
    assert got == [
        {"op": "insert", "text": "Oh!", "actor": "u4", "seq": 4},
        {"op": "insert", "text": " ", "actor": "u4", "seq": 4, "attributes": {"italic": True}},
        {"op": "equal", "text": "Hello ", "actor": None, "seq": None},
        {
            "op": "format",
            "text": "brave",
            "actor": None,
            "seq": None,
            "attributes": {"bold": True},
            "was": {},
        },  # fmt: skip
        {"op": "equal", "text": " world", "actor": None, "seq": None},
        {
            "op": "insert",
            "text": "\ufffc",
            "actor": "u3",
            "seq": 3,
            "attributes": {"width": "120"},
            "embed": {"image": "cat.png"},
        },  # fmt: skip
    ]
    # and back: the bold taken off is a format op the other way, the image a delete
    back = with_formatting(
        index.diff("t", 3, 3), runs_of(_diff(log, "t", 3)), runs_of(_diff(log, "t", 3))
    )
    assert [o["op"] for o in back] == ["equal", "equal", "equal", "equal"]
    assert back[1] == {"op": "equal", "text": "brave", "actor": None, "seq": None,
                       "attributes": {"bold": True}}  # fmt: skip


def test_who_formatted_is_the_last_to_set_what_differs() -> None:
    doc, log = _log(
        [
            lambda t: t.insert(0, "Hello brave new world"),  # u1
            lambda t: t.format(6, 15, {"bold": True}),  # u2: "brave new"
            lambda t: t.insert(0, "Oh, "),  # u3: everything moves
            lambda t: t.format(16, 25, {"italic": True}),  # u4: "new world"
            lambda t: t.format(16, 19, {"italic": None}),  # u5: not "new"
            lambda t: t.insert(15, "ly"),  # u6: "bravely", inside the bold
            lambda t: t.format(18, 21, {"italic": True}),  # u7: "new" again
        ]
    )
    index = AttributionIndex("d", ["t"])
    index.fold(log)
    ops = with_formatting(
        index.diff("t", 1, 7), runs_of(_diff(log, "t", 1)), runs_of(doc.get("t", type=Text).diff())
    )
    va: Doc[Any] = Doc()
    va.apply_update(log[0].update)
    ranges = _ranges(va, "t", log[1:])
    got = attribute_formats(ops, ranges, {ev.seq: ev.actor for ev in log})
    brief = [(o["op"], o["text"], o["actor"], o.get("attributes")) for o in got]
    assert brief == [
        ("insert", "Oh, ", "u3", None),
        ("equal", "Hello ", None, None),
        ("format", "brave", "u2", {"bold": True}),
        ("insert", "ly", "u6", {"bold": True}),
        ("format", " ", "u2", {"bold": True}),
        # bold by u2, italic by u4, u5 took it off, u7 put it back: u7 was the last
        ("format", "new", "u7", {"bold": True, "italic": True}),
        ("format", " world", "u4", {"italic": True}),
    ], brief
    # a bold taken off and put back between the versions is no change, and names nobody
    _, log = _log([lambda t: t.insert(0, "abc"), lambda t: t.format(0, 3, {"bold": True}),
                   lambda t: t.format(0, 3, {"italic": True}),
                   lambda t: t.format(0, 3, {"bold": None})])  # fmt: skip
    index = AttributionIndex("d", ["t"])
    index.fold(log)
    ops = with_formatting(
        index.diff("t", 1, 4), runs_of(_diff(log, "t", 1)), runs_of(_diff(log, "t", 4))
    )
    va = Doc()
    va.apply_update(log[0].update)
    got = attribute_formats(ops, _ranges(va, "t", log[1:]), {3: "u3", 2: "u2", 4: "u4"})
    assert [(o["op"], o["actor"], o["attributes"]) for o in got] == [
        ("format", "u3", {"italic": True})
    ]


def test_an_embedded_text_stays_apart_from_the_text_after_it() -> None:
    # an embed that renders as a string (a Y.Text inside a Y.Text) was joined to the
    # characters after it in a version's delta: "inner" and "b" became "innerb"
    doc: Doc[Any] = Doc()
    t = doc.get("t", type=Text)
    t.insert(0, "ab")
    t.insert_embed(1, Text("inner"))
    assert text_delta(t.diff()) == [{"insert": "a"}, {"insert": "inner"}, {"insert": "b"}]
    runs = runs_of(t.diff())
    assert [text for text, _, _ in runs] == ["a", "\ufffc", "b"] and runs[1][2] == "inner"


def test_a_plain_text_is_not_rich_and_ops_that_do_not_spell_the_versions_are_refused() -> None:
    _, log = _log([lambda t: t.insert(0, "abc"), lambda t: t.insert(3, "def")])
    index = AttributionIndex("d", ["t"])
    index.fold(log)
    assert index.tracks["t"].rich is False
    ops = index.diff("t", 1, 2)
    assert with_formatting(ops, runs_of(_diff(log, "t", 1)), runs_of(_diff(log, "t", 2))) == ops
    with pytest.raises(Mismatch):
        with_formatting(ops, runs_of(_diff(log, "t", 2)), runs_of(_diff(log, "t", 2)))


def test_the_stored_index_keeps_what_it_knows_of_formatting() -> None:
    doc, log = _log([lambda t: t.insert(0, "plain"), lambda t: t.format(0, 2, {"bold": True})])
    index = AttributionIndex("d", ["t", "u"])
    index.fold(log)
    assert index.tracks["t"].rich is True and index.tracks["u"].rich is False
    data = codec.encode(index, "fp")
    back = codec.decode(data, doc)
    assert back.tracks["t"].rich is True and back.tracks["u"].rich is False
    # an index stored before "rich" was kept is of version 1: not read (it is rebuilt)
    with pytest.raises(ValueError, match="version"):
        codec.decode(restamped(data, 1, lambda header: header.pop("rich")), doc)


async def test_diff_over_http_shows_formatting_embeds_and_who_formatted(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with two_people(server, "quill", ("alice", "bob")) as (src, other, c, head, _):
        quill = src.get("quill", type=Text)
        bobs = other.get("quill", type=Text)
        quill.insert(0, "Title\nsome words\n")
        await eventually(lambda: str(bobs) == "Title\nsome words\n", what="bob has the text")
        first = await head()
        quill.format(0, 5, {"header": 1})
        bobs.format(11, 16, {"bold": True})  # bob's bold
        await eventually(lambda: _at_least(head, first + 2), what="both formats logged")
        quill.insert_embed(17, {"image": "cat.png"})
        await eventually(lambda: _at_least(head, first + 3), what="the image logged")
        events = (await c.get("/api/docs/quill/events", params={"after": first})).json()
        seq_of = {e["actor"]: e["seq"] for e in events["events"] if e["seq"] <= first + 2}
        # no index yet (a range diff), then with the index a blame builds
        for _ in range(2):
            r = await c.get("/api/docs/quill/diff", params={"from": first})
            assert r.status_code == 200, r.text
            ops = r.json()["roots"]["quill"]["ops"]
            assert [o["op"] for o in ops] == ["format", "equal", "format", "equal", "insert"]
            header, bold = ({"header": 1}, seq_of["alice"]), ({"bold": True}, seq_of["bob"])
            assert ops[0] == {"op": "format", "text": "Title", "actor": "alice",
                              "seq": header[1], "attributes": header[0], "was": {}}  # fmt: skip
            assert ops[2] == {"op": "format", "text": "words", "actor": "bob",
                              "seq": bold[1], "attributes": bold[0], "was": {}}  # fmt: skip
            assert ops[4]["embed"] == {"image": "cat.png"} and ops[4]["actor"] == "alice"
            for op in ops:  # as the API's contract says
                jsonschema.validate(op, TEXT_OP)
            assert (await c.get("/api/docs/quill/blame")).status_code == 200
        # blame shows who typed each run, in the version's formatting
        blame = (await c.get("/api/docs/quill/blame")).json()["roots"]["quill"]["runs"]
        assert [(r["text"], r["actor"], r.get("attributes"), r.get("embed")) for r in blame] == [
            ("Title", "alice", {"header": 1}, None),
            ("\nsome ", "alice", None, None),
            ("words", "alice", {"bold": True}, None),
            ("\n", "alice", None, None),
            ("\ufffc", "alice", None, {"image": "cat.png"}),
        ]
        # bob's server-side undo takes his bold off: a format op the other way, his
        before = await head()
        r = await c.post("/api/docs/quill/undo", params={"user": "bob"})
        assert r.status_code == 200 and r.json()["ok"], r.text
        undo = r.json()["seq"]
        await eventually(
            lambda: not any((a or {}).get("bold") for _, a in quill.diff()), what="unbolded"
        )
        ops = (await c.get("/api/docs/quill/diff", params={"from": before})).json()
        assert [o for o in ops["roots"]["quill"]["ops"] if o["op"] == "format"] == [
            {
                "op": "format",
                "text": "words",
                "actor": "bob",
                "seq": undo,
                "attributes": {},
                "was": {"bold": True},
            }  # fmt: skip
        ]
        # past the work bound, the format ops name nobody (the rest is as before)
        monkeypatch.setattr(service, "ATTRIBUTE_FORMATS_WORK", 0)
        ops = (await c.get("/api/docs/quill/diff", params={"from": first})).json()
        got = [(o["op"], o["actor"]) for o in ops["roots"]["quill"]["ops"]]
        assert got == [("format", None), ("equal", None), ("insert", "alice")]
        monkeypatch.undo()
        # a plain text's diff is as it was: no formatting keys
        plain = src.get("plain", type=Text)
        plain.insert(0, "just text")
        await eventually(lambda: _at_least(head, undo + 1), what="the plain text logged")
        ops = (await c.get("/api/docs/quill/diff", params={"root": "plain"})).json()
        assert ops["roots"]["plain"]["ops"] == [
            {"op": "insert", "text": "just text", "actor": "alice", "seq": undo + 1}
        ]


async def _at_least(head: Any, n: int) -> bool:
    return bool(await head() >= n)


def test_a_bold_line_moved_stays_bold_and_marked_moved_both_ways() -> None:
    """A formatted text's diff keeps the index's marks on the text a move inserted and
    deleted (ops of their own, never joined to typing beside them), with the formatting
    they have."""

    def move(t: Text) -> None:
        with t.doc.transaction():  # (an editor's line move: one transaction)
            del t[9:18]
            t.insert(0, "line two\n", {"bold": True})
            t.insert(9, "new\n", {"bold": True})

    doc, log = _log(
        [
            lambda t: t.insert(0, "line one\n"),
            lambda t: t.insert(9, "line two\n", {"bold": True}),
            move,
        ]
    )
    index = AttributionIndex("d", ["t"])
    index.fold(log)
    got = with_formatting(
        index.diff("t", 2, 3), runs_of(_diff(log, "t", 2)), runs_of(doc.get("t", type=Text).diff())
    )
    bold = {"bold": True}
    assert got == [
        {"op": "insert", "text": "line two\n", "actor": "u3", "seq": 3, "moved": True,
         "attributes": bold},
        {"op": "insert", "text": "new\n", "actor": "u3", "seq": 3, "attributes": bold},
        {"op": "equal", "text": "line one\n", "actor": None, "seq": None},
        {"op": "delete", "text": "line two\n", "actor": "u3", "seq": 3, "moved": True,
         "attributes": bold},
    ]  # fmt: skip
