"""The runnable examples of the docs (README's client example, docs/client.md's), run
against a real server, print what the docs say they print.

docs/client.md's example said blame gives ada's text "(seq 7)", the redo that brought it
back, where the server keeps the seq of the edit that first wrote it (docs/history.md);
nothing ran the example to notice. Here each example runs as its own process (as a
reader runs it) against a server on a free port, and its output is compared with the
block that follows it, timestamps and event sizes aside (a size depends on the random
Yjs client ids the example's sessions get).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from conftest import RunningServer

REPO = Path(__file__).resolve().parent.parent

#: an ISO timestamp the server gives an event, and the size that follows it
_EVENT = re.compile(r"^(\d+) \d{4}-\d\d-\d\dT[\d:.]+Z (\S+ \S+) \d+ ")


def blocks(doc: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", doc, re.S)


async def run_example(code: str, server: RunningServer) -> str:
    """`code`, with the docs' 127.0.0.1:8000 pointing at `server`, run by a new Python;
    its standard output."""
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def normalised(output: str) -> list[str]:
    """`output`'s lines, an event line's timestamp and size left out."""
    return [_EVENT.sub(r"\1 \2 ", line) for line in output.strip().splitlines()]


async def test_the_client_guides_example_prints_what_the_guide_says(
    server: RunningServer,
) -> None:
    doc = (REPO / "docs" / "client.md").read_text()
    (code,) = [b for b in blocks(doc, "python") if "readme-demo" in b and "asyncio.run" in b]
    after = doc[doc.index(code) + len(code) :]
    printed = after[after.index("prints") :]
    expected = blocks(printed, "")[0]
    assert normalised(await run_example(code, server)) == normalised(expected)


async def test_the_readmes_client_example_prints_what_its_comment_says(
    server: RunningServer,
) -> None:
    """README's comment showed an OpResult without its `removed_others` field."""
    readme = (REPO / "README.md").read_text()
    (code,) = [b for b in blocks(readme, "python") if "client.connect(" in b]
    (said,) = re.findall(r"print\(await s\.undo\(\)\) +# (.*)", code)
    lines = (await run_example(code, server)).splitlines()
    assert lines[0] == said
    assert lines[1:] == ["1 ada edit", "2 ada undo"]


async def test_the_undo_guides_streamed_answer_writes_in_order_and_is_one_undo(
    server: RunningServer,
) -> None:
    """docs/undo.md's bot example inserted every token at one fixed position: each went
    before the one it had just written, and the answer came out backwards."""
    doc = (REPO / "docs" / "undo.md").read_text()
    (block,) = [b for b in blocks(doc, "python") if "undo_group()" in b]
    answer = ["The ", "answer ", "is ", "42."]
    code = (
        "import asyncio\n"
        "from palimpsest import client\n\n"
        "async def main() -> None:\n"
        "    url = 'ws://127.0.0.1:8000/ws'\n"
        "    async with client.connect(url, 'streamed', user='bot') as session:\n"
        "        session.text().insert(0, 'Q: what is it? A:  (end)')\n"
        "        await session.flush()\n"
        f"        answer = {answer!r}\n"
        "        text = session.text()\n"
        "        at = str(text).index(' (end)')\n"
        + textwrap.indent(block, "        ")
        + "        async with client.History('http://127.0.0.1:8000', user='bot') as h:\n"
        "            print((await h.version('streamed', result.seq - 1)).text)\n"
        "        await session.wait_for(lambda: str(session.text()) == QUESTION)\n"
        "        print(result.ok, str(session.text()))\n"
        "QUESTION = 'Q: what is it? A:  (end)'\n"
        "asyncio.run(main())\n"
    )
    out = (await run_example(code, server)).splitlines()
    assert out[0] == "Q: what is it? A: The answer is 42. (end)", out
    assert out[1] == "True Q: what is it? A:  (end)", out


def test_every_snippet_of_the_extension_guide_names_what_it_uses() -> None:
    """Field test: docs/extending.md's snippets did not run as written: ContentPolicy
    used Doc and Text without importing them, Stats Route and JSONResponse, and
    WordCount was both an extension and a per-room state class, whose `add` the
    on_applied snippet called and the class lacked. Each snippet now imports what it
    uses, or says in a comment that a name is the reader's own ("db: yours"), and the
    per-room state class has what the snippets call on it."""
    guide = (REPO / "docs" / "extending.md").read_text()
    snippets = [
        (guide[: m.start()].count("\n") + 2, textwrap.dedent(m.group(2)))
        for m in re.finditer(r"^( *)```python\n(.*?)^\1```", guide, re.S | re.M)
    ]
    assert len(snippets) > 15
    unmarked = []
    for line, code in snippets:
        found = subprocess.run(
            [str(Path(sys.executable).parent / "ruff"), "check", "--no-cache", "--isolated",
             "--select", "F821", "--output-format", "json", "--stdin-filename", "snippet.py",
             "-"],
            input=code, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        comments = [c for c in re.findall(r"#.*", code) if "your" in c]
        for name in sorted({d["message"].split("`")[1] for d in json.loads(found.stdout)}):
            if not any(re.search(rf"\b{re.escape(name)}\b", c) for c in comments):
                unmarked.append(f"docs/extending.md:{line}: {name}")
    assert unmarked == [], "\n".join(unmarked)

    # the per-room state of the snippets, with the extension's hooks they show
    (state,) = [code for _, code in snippets if code.startswith("class EditTally")]
    scope: dict[str, Any] = {}
    exec(state, scope)  # noqa: S102 - the guide's own snippet
    room = type("Room", (), {"snapshot_meta": {"edits": 2}})()
    tally = scope["EditTally"](room)
    tally.add(object())
    assert tally.total == 3


async def test_the_client_guides_late_answer_example_gets_the_answer(
    server: RunningServer,
) -> None:
    """docs/client.md's example of awaiting a timed-out undo's late answer, run with a
    timeout no answer can meet: the undo raises Timeout, and its `.late` gives the
    server's answer. The example waited with `asyncio.wait_for`, which the project left
    for `asyncio.timeout` (Python 3.11; the client's own waits say why): no Python
    snippet of the docs shows it any more."""
    guide = (REPO / "docs" / "client.md").read_text()
    (block,) = [b for b in blocks(guide, "python") if "e.late" in b]
    assert "timeout=2" in block, block
    code = (
        "import asyncio\n"
        "from palimpsest import client\n\n\n"
        "async def main() -> None:\n"
        "    url = 'ws://127.0.0.1:8000/ws'\n"
        "    async with client.connect(url, 'late-demo', user='ada') as session:\n"
        "        session.text().insert(0, 'typed')\n"
        "        await session.flush()\n"
        + textwrap.indent(block.replace("timeout=2", "timeout=1e-9"), " " * 8)
        + "        print(result.ok, session.text())\n\n\n"
        "asyncio.run(main())\n"
    )
    assert (await run_example(code, server)).split() == ["True"], code
    snippets = [
        (path.name, b)
        for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
        for b in blocks(path.read_text(), "python")
    ]
    assert [name for name, b in snippets if "asyncio.wait_for(" in b] == []
