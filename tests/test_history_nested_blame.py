"""Blame of the texts nested in map and array roots (docs/history.md, "Texts nested in
a map or an array"): a notebook's cells (jupyter_ydoc's YNotebook: a root Y.Array
``cells`` of Y.Maps, each with a ``source`` Y.Text, beside a root Y.Map ``meta``), a
form's Y.Map of Y.Text fields.

Before, such a document's blame was ``{"roots": {}}`` with ``cells`` and ``meta`` in
``not_attributed``, and ``?root=cells`` a 404: a notebook had no "who wrote this" at
all."""

from __future__ import annotations

from typing import Any

import jsonschema
import yaml
from conftest import RunningServer, eventually
from pycrdt import Array, Map, Text
from serverproc import REPO_ROOT
from yclient import two_people

from palimpsest.client import History
from palimpsest.history import history_of

SCHEMAS = yaml.safe_load((REPO_ROOT / "docs" / "openapi.yaml").read_text())["components"]


def _valid(blame: dict[str, Any]) -> None:
    """`blame` as docs/openapi.yaml's Blame says."""
    jsonschema.validate(blame, {"$ref": "#/components/schemas/Blame", "components": SCHEMAS})


def _cell(cid: str, source: str) -> Map[Any]:
    return Map({"id": cid, "cell_type": "code", "source": Text(source), "metadata": Map({})})


def _text(entry: dict[str, Any]) -> str:
    return "".join(r["text"] for r in entry["runs"])


def _who(entry: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(r["text"], r["actor"]) for r in entry["runs"]]


async def test_two_users_in_different_cells_and_the_same_cell(server: RunningServer) -> None:
    async with two_people(server, "nb", ("ann", "bob")) as p:
        with p.ann.transaction():
            cells = p.ann.get("cells", type=Array)
            cells.extend([_cell("c0", "import os"), _cell("c1", "x = 1")])
            p.ann.get("meta", type=Map)["nbformat"] = 4
        await eventually(lambda: p.logged(1), what="ann's notebook logged")
        bcells = p.bob.get("cells", type=Array)
        await eventually(lambda: len(bcells) == 2, what="bob has the cells")
        bcells.append(_cell("c2", "print(x)"))  # a cell of bob's
        await eventually(lambda: p.logged(2), what="bob's cell logged")
        bcells[1]["source"].insert(5, "1")  # bob in ann's cell: x = 11
        await eventually(lambda: p.logged(3), what="bob's edit logged")

        r = await p.http.get("/api/docs/nb/blame")
        assert r.status_code == 200, r.text
        blame = r.json()
        _valid(blame)
        assert "not_attributed" not in blame
        assert blame["roots"]["meta"] == {"type": "map", "texts": []}
        texts = blame["roots"]["cells"]["texts"]
        assert [t["path"] for t in texts] == ["cells/0/source", "cells/1/source", "cells/2/source"]
        assert [t["keys"] for t in texts][1] == ["cells", 1, "source"]
        assert [t["id"] for t in texts] == ["c0", "c1", "c2"]
        assert [(t["actor"], t["seq"]) for t in texts] == [("ann", 1), ("ann", 1), ("bob", 2)]
        assert texts[0]["runs"] == [{"text": "import os", "actor": "ann", "seq": 1}]
        assert texts[1]["runs"] == [
            {"text": "x = 1", "actor": "ann", "seq": 1},
            {"text": "1", "actor": "bob", "seq": 3},
        ]
        assert _who(texts[2]) == [("print(x)", "bob")]

        # one root, one text, a cell's texts; an older version
        one = (await p.http.get("/api/docs/nb/blame", params={"root": "cells"})).json()
        assert one["roots"] == {"cells": blame["roots"]["cells"]}
        r = await p.http.get("/api/docs/nb/blame", params={"path": "cells/1/source"})
        assert r.status_code == 200, r.text
        assert r.json()["roots"] == {"cells": {"type": "array", "texts": [texts[1]]}}
        under = (await p.http.get("/api/docs/nb/blame", params={"path": "cells/2"})).json()
        assert [t["path"] for t in under["roots"]["cells"]["texts"]] == ["cells/2/source"]
        old = (await p.http.get("/api/docs/nb/blame", params={"seq": 1})).json()
        assert [_text(t) for t in old["roots"]["cells"]["texts"]] == ["import os", "x = 1"]
        missing = await p.http.get("/api/docs/nb/blame", params={"path": "cells/7/source"})
        assert missing.status_code == 404
        assert "no text at or under 'cells/7/source'" in missing.json()["detail"]

        # ?actor= and ?join= as for a text root's runs
        r = await p.http.get("/api/docs/nb/blame", params={"root": "cells", "actor": "bob"})
        _valid(r.json())
        kept = r.json()["roots"]["cells"]["texts"]
        assert [t["path"] for t in kept] == ["cells/1/source", "cells/2/source"]
        assert kept[0]["runs"] == [
            {"text": "", "actor": None, "seq": None, "omitted": 5},
            {"text": "1", "actor": "bob", "seq": 3},
        ]
        bcells[2]["source"].insert(8, "\n")
        await eventually(lambda: p.logged(4), what="bob's line logged")
        r = await p.http.get("/api/docs/nb/blame", params={"path": "cells/2", "join": "actor"})
        assert r.json()["roots"]["cells"]["texts"][0]["runs"] == [
            {"text": "print(x)\n", "actor": "bob", "seq": 2, "last_seq": 4}
        ]

        # the Python client
        async with History(server.url, user="ann") as h:
            got = await h.blame_texts("nb", "cells/1/source")
            assert [(t.path, t.id, t.actor) for t in got] == [("cells/1/source", "c1", "ann")]
            assert [(r.text, r.actor) for r in got[0].runs] == [("x = 1", "ann"), ("1", "bob")]
            assert len(await h.blame_texts("nb", "cells", seq=1)) == 2


async def test_a_moved_cell_keeps_its_writers_a_deleted_one_is_gone(
    server: RunningServer,
) -> None:
    """JupyterLab moves a cell by deleting it and inserting a copy in one transaction:
    the copy's text is still its writers' (the cell, its `actor` and `seq`, is the
    mover's). A deleted cell is not shown; its undo brings it back, its writers too."""
    async with two_people(server, "mv", ("ann", "bob")) as p:
        cells = p.ann.get("cells", type=Array)
        with p.ann.transaction():
            cells.extend([_cell("a", "first = 1"), _cell("b", "second = 2")])
        await eventually(lambda: p.logged(1), what="ann's cells logged")
        bcells = p.bob.get("cells", type=Array)
        await eventually(lambda: len(bcells) == 2, what="bob has the cells")
        bcells.append(_cell("c", "third = 3"))
        await eventually(lambda: p.logged(2), what="bob's cell logged")
        await eventually(lambda: len(cells) == 3, what="ann has bob's cell")
        with p.ann.transaction():  # ann moves bob's cell to the top
            source = str(cells[2]["source"])
            del cells[2]
            cells.insert(0, _cell("c", source))
        await eventually(lambda: p.logged(3), what="ann's move logged")

        texts = (await p.http.get("/api/docs/mv/blame")).json()["roots"]["cells"]["texts"]
        assert [(t["id"], t["actor"], t["seq"]) for t in texts] == [
            ("c", "ann", 3),
            ("a", "ann", 1),
            ("b", "ann", 1),
        ]
        assert texts[0]["runs"] == [{"text": "third = 3", "actor": "bob", "seq": 2}]

        await eventually(lambda: len(bcells) == 3 and bcells[0]["id"] == "c", what="bob sees it")
        del bcells[1]  # bob deletes ann's cell "a"
        await eventually(lambda: p.logged(4), what="bob's delete logged")
        texts = (await p.http.get("/api/docs/mv/blame")).json()["roots"]["cells"]["texts"]
        assert [(t["path"], t["id"]) for t in texts] == [
            ("cells/0/source", "c"),
            ("cells/1/source", "b"),
        ]

        r = await p.http.post("/api/docs/mv/undo", params={"user": "bob"})
        assert r.status_code == 200, r.text
        texts = (await p.http.get("/api/docs/mv/blame")).json()["roots"]["cells"]["texts"]
        assert [t["id"] for t in texts] == ["c", "a", "b"]
        assert _who(texts[1]) == [("first = 1", "ann")]


async def test_a_map_of_text_fields(server: RunningServer) -> None:
    """A form: a root Y.Map of Y.Text fields, one replaced by a new Y.Text."""
    async with two_people(server, "form", ("ann", "bob")) as p:
        with p.ann.transaction():
            form = p.ann.get("form", type=Map)
            form["name"] = Text("Ann")
            form["a/b"] = Text("slash")
            form["age"] = 41
        await eventually(lambda: p.logged(1), what="ann's form logged")
        bform = p.bob.get("form", type=Map)
        await eventually(lambda: "name" in bform, what="bob has the form")
        bform["name"].insert(3, " Smith")
        bform["notes"] = Text("likes tea")
        await eventually(lambda: p.logged(3), what="bob's edits logged")

        r = await p.http.get("/api/docs/form/blame")
        _valid(r.json())
        entry = r.json()["roots"]["form"]
        assert entry["type"] == "map"
        got = {t["path"]: _who(t) for t in entry["texts"]}
        assert got == {
            "form/a~1b": [("slash", "ann")],
            "form/name": [("Ann", "ann"), (" Smith", "bob")],
            "form/notes": [("likes tea", "bob")],
        }
        assert [t["keys"] for t in entry["texts"]][0] == ["form", "a/b"]
        one = (await p.http.get("/api/docs/form/blame", params={"path": "form/a~1b"})).json()
        assert [t["path"] for t in one["roots"]["form"]["texts"]] == ["form/a~1b"]

        form["notes"] = Text("a new note")  # ann replaces bob's field
        await eventually(lambda: p.logged(4), what="ann's field logged")
        r = await p.http.get("/api/docs/form/blame", params={"path": "form/notes"})
        assert _who(r.json()["roots"]["form"]["texts"][0]) == [("a new note", "ann")]
        old = await p.http.get("/api/docs/form/blame", params={"path": "form/notes", "seq": 3})
        assert _who(old.json()["roots"]["form"]["texts"][0]) == [("likes tea", "bob")]


async def test_a_map_of_plain_values_folds_nothing(server: RunningServer) -> None:
    """A text document's map of settings holds no text: its entry says so, and no
    nested index is folded for it (a long text's log is not replayed for nothing)."""
    async with two_people(server, "plain", ("ann", "bob")) as p:
        with p.ann.transaction():
            p.ann.get("content", type=Text).insert(0, "Hello")
            p.ann.get("meta", type=Map)["rev"] = 1
        await eventually(lambda: p.logged(1), what="ann's edit logged")
        blame = (await p.http.get("/api/docs/plain/blame")).json()
        _valid(blame)
        assert blame["roots"]["meta"] == {"type": "map", "texts": []}
        assert blame["roots"]["content"]["runs"] == [{"text": "Hello", "actor": "ann", "seq": 1}]
        assert not history_of(server.backend).nested.builds
