"""Blame and ``?actor=`` say which roots they leave out, and why, instead of answering
as if the document had none.

Before, the blame of a notebook (a Y.Array of Y.Map cells, each source a nested
Y.Text) was ``{"roots": {}}``, ``?root=cells`` a 404 "has no text or XML root", and a
diff ``?actor=bob`` ``{"roots": {}}`` though bob had edited a cell's source. Blame now
attributes the texts nested in the cells (tests/test_history_nested_blame.py).
"""

from __future__ import annotations

from typing import Any

from conftest import RunningServer, eventually
from pycrdt import Array, Map, Text
from yclient import two_people


def _cell(source: str) -> Map[Any]:
    return Map({"id": "c1", "source": Text(source), "metadata": Map({"tags": []})})


async def test_blame_and_actor_name_the_roots_they_leave_out(server: RunningServer) -> None:
    async with two_people(server, "nb", ("ann", "bob")) as p:
        with p.ann.transaction():
            p.ann.get("cells", type=Array).append(_cell("print(1)"))
            p.ann.get("title", type=Text).insert(0, "Notes")
            p.ann.get("meta", type=Map)["kernel"] = "python3"
        await eventually(lambda: p.logged(1), what="ann's notebook logged")
        cells = p.bob.get("cells", type=Array)
        await eventually(lambda: len(cells) == 1, what="bob has the cell")
        with p.bob.transaction():
            cells[0]["source"].insert(8, "\nprint(2)")
            cells[0]["metadata"]["tags"] = ["bob"]
        await eventually(lambda: p.logged(2), what="bob's edit logged")

        blame = (await p.http.get("/api/docs/nb/blame")).json()
        assert blame["roots"]["title"] == {
            "type": "text",
            "runs": [{"text": "Notes", "actor": "ann", "seq": 1}],
        }
        # the texts nested in a map or array are attributed now
        # (tests/test_history_nested_blame.py); its other values are nobody's
        assert blame["roots"]["meta"] == {"type": "map", "texts": []}
        (source,) = blame["roots"]["cells"]["texts"]
        assert source["path"] == "cells/0/source"
        assert [r["actor"] for r in source["runs"]] == ["ann", "bob"]
        assert "not_attributed" not in blame

        one = await p.http.get("/api/docs/nb/blame", params={"root": "cells"})
        assert one.status_code == 200
        assert one.json()["roots"] == {"cells": blame["roots"]["cells"]}

        # a text root alone: nothing left out, no such field
        title = (await p.http.get("/api/docs/nb/blame", params={"root": "title"})).json()
        assert "not_attributed" not in title

        diff = (await p.http.get("/api/docs/nb/diff", params={"actor": "bob"})).json()
        assert diff["roots"] == {"title": {"type": "text", "ops": []}}
        reason = "?actor= keeps text and XML changes only: a map's or array's are nobody's"
        assert diff["not_attributed"] == [
            {"root": "cells", "type": "array", "reason": reason},
            {"root": "meta", "type": "map", "reason": reason},
        ]
        # without ?actor= the diff has them all, the array's ops unattributed
        whole = (await p.http.get("/api/docs/nb/diff")).json()
        assert sorted(whole["roots"]) == ["cells", "meta", "title"]
        assert "not_attributed" not in whole
