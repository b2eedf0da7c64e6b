"""The client subcommands (cat, edit, replay, history) against a real server."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, run_server
from pycrdt import Doc, Text, XmlElement, XmlFragment, XmlText

from palimpsest import cli as server_cli
from palimpsest.auth.tokens import mint
from palimpsest.client import connect
from palimpsest.client.cli import TRACES_DIR, main
from palimpsest.settings import Settings

TRACE = TRACES_DIR / "sveltecomponent.json.gz"


async def run(*argv: str) -> int:
    # the commands call asyncio.run(): give them a thread of their own
    return await asyncio.to_thread(main, list(argv))


async def test_edit_then_cat(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "draft.md"
    f.write_text("# Title\n\nfirst paragraph, naïve café\n", encoding="utf-8")
    assert await run("edit", "notes", str(f), "--url", server.url, "--user", "ada") == 0
    assert "1 changed span" in capsys.readouterr().err
    assert await run("cat", "notes", "--url", server.url) == 0
    assert capsys.readouterr().out == "# Title\n\nfirst paragraph, naïve café\n"

    f.write_text("# Title\n\nfirst paragraph, naïve café\nsecond\n", encoding="utf-8")
    assert await run("edit", "notes", str(f), "--url", server.url, "--user", "bob") == 0
    events = await server.backend.store.read("notes")
    assert [e.actor for e in events] == ["ada", "bob"]
    assert len(events[1].update) < 60  # a small diff, not the whole text again
    assert await run("cat", "notes", "--url", server.url) == 0
    assert capsys.readouterr().out.endswith("café\nsecond\n")


async def test_edit_keeps_a_files_line_ends(server: RunningServer, tmp_path: Path) -> None:
    """CRLF and lone CR line ends reach the document as the file has them (the file
    was read in text mode, which made them "\n"), and edit again finds it equal."""
    f = tmp_path / "windows.txt"
    content = "line one\r\nline two\r\nold mac\rlast, naïve\r\n"
    f.write_bytes(content.encode("utf-8"))
    assert await run("edit", "crlf", str(f), "--url", server.url, "--user", "ada") == 0
    assert (await _version(server, "crlf"))["roots"]["content"]["value"] == content
    assert await run("edit", "crlf", str(f), "--url", server.url, "--user", "ada") == 0
    assert len(await server.backend.store.read("crlf")) == 1  # nothing changed


async def test_edit_from_stdin(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin ✓"))
    monkeypatch.setenv("PALIMPSEST_URL", server.url)
    assert await asyncio.to_thread(main, ["edit", "piped", "-"]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["cat", "piped"]) == 0
    assert capsys.readouterr().out == "from stdin ✓"


async def test_edit_refuses_an_empty_stdin_it_was_not_told_to_read(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`palimpsest edit DOC` with no FILE reads stdin: from cron or `ssh -n` (stdin empty,
    not a terminal) it emptied the document and exited 0. An empty stdin read by default
    is now refused; `-` (stdin, explicitly) or --allow-empty make the text empty."""
    monkeypatch.setenv("PALIMPSEST_URL", server.url)
    monkeypatch.setattr(sys, "stdin", io.StringIO("important"))
    assert await asyncio.to_thread(main, ["edit", "kept"]) == 0  # piped text: as before
    for argv in (["edit", "kept"], ["edit", "kept", "--user", "cron"]):
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        capsys.readouterr()
        assert await asyncio.to_thread(main, argv) == 1
        err = capsys.readouterr().err
        assert "stdin is empty" in err and "--allow-empty" in err, err
        assert await asyncio.to_thread(main, ["cat", "kept"]) == 0
        assert capsys.readouterr().out == "important"
    for argv in (["edit", "kept", "-"], ["edit", "kept", "--allow-empty"]):
        monkeypatch.setattr(sys, "stdin", io.StringIO("important"))
        assert await asyncio.to_thread(main, ["edit", "kept"]) == 0
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        assert await asyncio.to_thread(main, argv) == 0
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["cat", "kept"]) == 0
        assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"plain text\n", "not a gzip file"),
        (gzip.compress(b"not json"), "not JSON"),
        (gzip.compress(b'{"a": 1}'), "startContent"),
        (gzip.compress(b"[1, 2]"), "not an editing trace"),
        (
            gzip.compress(b'{"startContent": "", "endContent": "", "txns": [{"patches": [[0]]}]}'),
            "transaction 1",
        ),
    ],
    ids=["text", "gzip-text", "object", "array", "patch"],
)
def test_replay_of_a_file_that_is_no_trace_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str
) -> None:
    """A file that is not gzip, not JSON or not a trace's shape gave a traceback
    (BadGzipFile, JSONDecodeError, KeyError 'txns'); now one line, exit 1, before any
    connection."""
    f = tmp_path / "t.json.gz"
    f.write_bytes(content)
    with pytest.raises(SystemExit) as e:
        main(["replay", str(f), "--url", "http://127.0.0.1:1"])
    assert isinstance(e.value.code, str) and says in e.value.code, e.value.code
    assert "\n" not in e.value.code and str(f) in e.value.code


def test_replay_by_name_without_the_traces_says_where_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed from a wheel, `palimpsest replay automerge-paper` said `no trace
    'automerge-paper' (known: )`: the traces are in the repository, not in the package.
    It says so now, and how to point at them."""
    from palimpsest.client import cli

    monkeypatch.setattr(cli, "TRACES_DIR", tmp_path / "nowhere")
    with pytest.raises(SystemExit) as e:
        main(["replay", "automerge-paper", "--url", "http://127.0.0.1:1"])
    said = str(e.value.code)
    assert "known: )" not in said and "\n" not in said, said
    assert "data/traces/sequential_traces" in said and "PALIMPSEST_TRACES" in said, said
    assert str(tmp_path / "nowhere") in said, said


@pytest.mark.parametrize("command", [["cat", "d1"], ["edit", "d1", "-"], ["history", "d1"]])
async def test_a_url_that_is_no_url_is_one_line(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cat d1 --url http://256.1.1.1:80` ended in an httpx.InvalidURL traceback."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("x"))
    assert await run(*command, "--url", "http://256.1.1.1:80") == 2
    err = capsys.readouterr().err
    assert "256.1.1.1" in err and "Traceback" not in err and len(err.splitlines()) == 1, err


async def test_replay_a_trace(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    with gzip.open(TRACE, "rt") as fh:
        trace = json.load(fh)
    content = ""
    for txn in trace["txns"][:2500]:
        for pos, n, ins in txn["patches"]:
            content = content[:pos] + ins + content[pos + n :]
    assert await run("replay", "sveltecomponent", "--doc", "svelte", "--limit", "2500",
                     "--url", server.url) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "2500/2500" in err  # the progress bar
    assert "2500 transactions" in err and "txn/s" in err
    assert await run("cat", "svelte", "--url", server.url) == 0
    assert capsys.readouterr().out == content
    # not an event per transaction: what is typed between two frames is one event, as
    # `replay --help` and the README say (--rate 0 too: what piles up between sends)
    async with httpx.AsyncClient(base_url=server.url) as http:
        head = (await http.get("/api/docs/svelte/versions/head")).json()["seq"]
    assert 0 < head < 2500, head
    assert await run("replay", "sveltecomponent", "--doc", "svelte0", "--limit", "2500",
                     "--rate", "0", "--url", server.url, "--no-progress") == 0  # fmt: skip
    async with httpx.AsyncClient(base_url=server.url) as http:
        head = (await http.get("/api/docs/svelte0/versions/head")).json()["seq"]
    assert 0 < head < 2500, head
    # replaying into a document that is not empty is refused
    assert await run("replay", str(TRACE), "--doc", "svelte", "--limit", "5",
                     "--url", server.url, "--no-progress") == 2  # fmt: skip
    assert "'svelte' is not empty; replay into a new document" in capsys.readouterr().err


async def test_cat_at_a_version_and_history(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "v.txt"
    for i, body in enumerate(["one\n", "one\ntwo\n", "one\ntwo\nthree\n"]):
        f.write_text(body)
        assert await run("edit", "versions", str(f), "--url", server.url, "--user", f"u{i}") == 0
    capsys.readouterr()
    assert await run("cat", "versions", "--seq", "2", "--url", server.url) == 0
    assert capsys.readouterr().out == "one\ntwo\n"
    assert await run("history", "versions", "--url", server.url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "u0" in lines[0] and "u2" in lines[2] and "edit" in lines[1]
    assert await run("history", "versions", "--json", "--limit", "1", "--after", "1",
                     "--url", server.url) == 0  # fmt: skip
    (only,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert only["seq"] == 2 and only["actor"] == "u1"
    assert only["reverts"] is None  # as the HTTP API gives it (it was [])
    # a restore names the version it brought back, an undo what it reverts
    async with httpx.AsyncClient(base_url=server.url, params={"user": "u9"}) as http:
        assert (await http.post("/api/docs/versions/restore", json={"seq": 1})).status_code == 200
        assert (await http.post("/api/docs/versions/undo")).status_code == 200
    assert await run("history", "versions", "--after", "3", "--url", server.url) == 0
    restore, undo = capsys.readouterr().out.splitlines()
    assert "restore" in restore and restore.endswith("u9  restores #1"), restore
    assert "undo" in undo and undo.endswith("u9  reverts 4"), undo


async def test_errors_are_one_line_messages(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("cat", "bad/name", "--url", server.url) == 2
    assert "not allowed" in capsys.readouterr().err
    assert await run("cat", "doc", "--url", "http://127.0.0.1:9") == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    # a document nobody wrote to is not an empty one
    assert await run("cat", "never-written", "--url", server.url) == 2
    out = capsys.readouterr()
    assert out.out == "" and "no document named 'never-written'" in out.err, out


async def test_cat_of_an_emptied_document_prints_nothing(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for text in ("gone soon", ""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        assert await run("edit", "emptied", "-", "--url", server.url) == 0
    capsys.readouterr()
    assert await run("cat", "emptied", "--url", server.url) == 0
    assert capsys.readouterr().out == ""


async def test_cat_adds_a_newline_on_a_terminal_only(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pty

    monkeypatch.setattr(sys, "stdin", io.StringIO("no newline at the end"))
    assert await run("edit", "nl", "-", "--url", server.url, "--user", "ada") == 0
    capsys.readouterr()
    # into a pipe (or a file): the text exactly
    assert await run("cat", "nl", "--url", server.url) == 0
    assert capsys.readouterr().out == "no newline at the end"
    # on a terminal: the prompt comes on a line of its own
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "palimpsest.client", "cat", "nl", "--url", server.url,
            stdout=slave, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(slave)
        _, err = await proc.communicate()
        assert proc.returncode == 0, err

        def read_all() -> bytes:
            out = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the terminal's other side is closed
                    return out
                if not chunk:
                    return out
                out += chunk

        assert await asyncio.to_thread(read_all) == b"no newline at the end\r\n"
    finally:
        os.close(master)


def test_entry_points() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "palimpsest.client", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for cmd in ("cat", "edit", "replay", "history"):
        assert cmd in out
    with pytest.raises(SystemExit) as e:
        server_cli.main(["cat", "--help"])
    assert e.value.code == 0


@pytest.mark.parametrize("module", ["palimpsest.client", "palimpsest"])
def test_help_under_python_OO_names_the_installed_module(module: str, tmp_path: Path) -> None:
    """`python -OO -m palimpsest.client --help` crashed (the parser's description read
    the module's __doc__, None without docstrings), and the usage line said `python -m
    client`, which is no module of the installed package."""
    out = subprocess.run(
        [sys.executable, "-OO", "-m", module, "--help"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    usage = out.stdout.splitlines()[0]
    assert usage.startswith("usage: python -m palimpsest.client " if module.endswith("client")
                            else "usage: palimpsest "), usage  # fmt: skip


async def test_edit_says_what_it_cannot_read(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file or one that is not UTF-8 text is said in one line, and the
    document is not touched (it used to be a traceback)."""
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    for path, says in (
        (tmp_path / "missing.md", "cannot read"),
        (binary, "is not UTF-8 text (byte 0: invalid start byte)"),
    ):
        with pytest.raises(SystemExit) as e:
            await run("edit", "untouched", str(path), "--url", server.url)
        assert says in str(e.value.code) and str(path) in str(e.value.code)
    assert await server.backend.store.doc_info("untouched") is None


async def test_a_read_only_edit_is_refused_in_one_line(settings: Settings) -> None:
    """`edit` with a read token: one line on stderr (it was the session's warning and
    then the same refusal as the error), and the document untouched."""
    settings.jwt_secret = "a-test-secret-that-is-long-enough-for-hs256!"
    reader = mint(settings.jwt_secret, "r", "read", ["ro"], ttl=600)
    async with run_server(settings) as server:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "palimpsest.client", "edit", "ro", "-",
             "--url", server.url, "--token", reader],
            input="hi", capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "palimpsest: 'ro': this token may only read (role read); edit needs write"
        ], done.stderr
        assert await server.backend.store.doc_info("ro") is None


async def test_an_edit_of_a_locked_document_says_it_was_not_made(server: RunningServer) -> None:
    """`edit` of a locked document (plain text over the websocket, a Quill text over
    HTTP): one line that says the edit was not made and why (the lock's who and
    reason), exit 2. It used to be the session's warning and error, which promise the
    edit reaches the server once the document is unlocked: true of a live session, not
    of a command that has exited with it."""

    def quill(d: Doc) -> None:
        d.get("quill", type=Text).insert(0, "Hello\n")
        d.get("quill", type=Text).format(0, 5, {"bold": True})

    await _write(server, "plain", lambda d: d.get("content", type=Text).insert(0, "old"))
    await _write(server, "q", quill)
    async with httpx.AsyncClient(base_url=server.url) as http:
        for doc in ("plain", "q"):
            r = await http.put(f"/api/docs/{doc}/lock", params={"user": "ann"},
                               json={"reason": "exam in progress"})  # fmt: skip
            assert r.status_code == 200, r.text
    for doc in ("plain", "q"):
        before = await _version(server, doc)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "palimpsest.client", "edit", doc, "-", "--url", server.url],
            input="new", capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done
        assert done.stderr.splitlines() == [
            f"palimpsest: the edit of {doc!r} was not made: the document {doc!r} is locked "
            "read-only by ann: exam in progress. Run it again once it is unlocked"
        ], done.stderr
        assert (await _version(server, doc))["roots"] == before["roots"]


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:8000", "ftp://127.0.0.1/x", "http://"])
async def test_a_url_that_names_no_server_is_refused_at_once(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to wait ten seconds for a sync that could never come."""
    for command in (["cat", "notes"], ["history", "notes"]):
        assert await run(*command, "--url", url) == 2
        err = capsys.readouterr().err
        assert f"palimpsest: {url!r} is not a server URL: give http://HOST:PORT" in err, err


async def _write(server: RunningServer, doc: str, build: Callable[[Doc], None]) -> None:
    async with connect(server.url, doc, user="ann") as s:
        build(s.doc)
        await s.flush()


async def _version(server: RunningServer, doc: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{server.url}/api/docs/{doc}/versions", params={"user": "t"})
        assert r.status_code == 200, r.text
        return dict(r.json())


def _set_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


async def test_cat_and_edit_find_the_text_other_editors_keep(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cat` and `edit` read and set `content`, the root Palimpsest's page and client
    write. A document another editor wrote keeps its text elsewhere: `cat` printed
    nothing for it, and `edit` wrote a `content` text beside it that no editor of it
    showed. Now they take the document's one text root (y-monaco's `monaco`), keep a
    Quill text's formatting and embeds, print a Tiptap tree, refuse to set a tree's
    characters, and ask which root when there are several."""
    url = ("--url", server.url)
    head = lambda v: (v["seq"], sorted(v["roots"]))  # noqa: E731

    await _write(server, "mon", lambda d: d.get("monaco", type=Text).insert(0, "fn main() {}\n"))
    assert await run("cat", "mon", *url) == 0
    assert capsys.readouterr().out == "fn main() {}\n"
    _set_stdin(monkeypatch, "fn main() { ok() }\n")
    assert await run("edit", "mon", "-", *url, "--user", "bob") == 0
    v = await _version(server, "mon")
    assert list(v["roots"]) == ["monaco"], v
    assert v["roots"]["monaco"]["value"] == "fn main() { ok() }\n"

    def quill(d: Doc) -> None:
        t = d.get("quill", type=Text)
        t.insert(0, "Hello world\n")
        t.insert_embed(11, {"image": "cat.png"})
        t.format(6, 11, {"bold": True})

    await _write(server, "q", quill)
    _set_stdin(monkeypatch, "Hi world\n")
    assert await run("edit", "q", "-", *url, "--user", "bob") == 0
    assert "event #" in capsys.readouterr().err
    v = await _version(server, "q")
    assert v["roots"]["quill"]["delta"] == [
        {"insert": "Hi "},
        {"insert": "world", "attributes": {"bold": True}},
        {"insert": {"image": "cat.png"}},
        {"insert": "\n"},
    ], v

    def tree(d: Doc) -> None:
        paragraph = d.get("default", type=XmlFragment).children.append(XmlElement("paragraph"))
        paragraph.children.append(XmlText("Hi"))

    await _write(server, "tree", tree)
    assert await run("cat", "tree", *url) == 0
    assert capsys.readouterr().out == "Hi\n"  # its text (test_readable_text)
    assert await run("cat", "tree", "--format", "xml", *url) == 0
    assert capsys.readouterr().out == "<paragraph>Hi</paragraph>"
    before = head(await _version(server, "tree"))
    _set_stdin(monkeypatch, "plain")
    assert await run("edit", "tree", "-", *url) == 2
    err = capsys.readouterr().err
    assert "holds no text to set" in err and "default (xml)" in err, err
    assert head(await _version(server, "tree")) == before

    def two(d: Doc) -> None:
        d.get("a", type=Text).insert(0, "first")
        d.get("b", type=Text).insert(0, "second")

    await _write(server, "two", two)
    assert await run("cat", "two", *url) == 2
    assert "several roots (a (text), b (text)): choose one with --root" in capsys.readouterr().err
    assert await run("cat", "two", "--root", "b", *url) == 0
    assert capsys.readouterr().out == "second"


def test_each_command_says_what_its_root_is_or_takes_none() -> None:
    """`--root` had one help for every client command, about cat's and edit's root, on
    replay too, and on history and tail, which never read it."""
    import argparse

    from palimpsest.client import cli as client_cli

    sub = argparse.ArgumentParser().add_subparsers()
    client_cli.register(sub)
    helps = {
        name: next((a.help for a in p._actions if "--root" in a.option_strings), None)
        for name, p in sub.choices.items()
    }
    assert helps["cat"] is not None and helps["cat"].startswith("the root (shared type) to print")
    assert helps["edit"] is not None and helps["edit"].startswith("the text root to set")
    assert helps["replay"] is not None and "the trace" in helps["replay"]
    said = " ".join((sub.choices["replay"].description or "").split())
    assert "replay into a document that has text is refused" in said, said
    assert "no option gives one event per transaction" in said, said
    assert helps["history"] is None and helps["tail"] is None


async def test_text_output_does_not_depend_on_the_locale(server: RunningServer) -> None:
    """With a stdout that cannot encode the text (PYTHONIOENCODING=latin-1; a file on
    Windows, cp1252), `cat` and `history` crashed with UnicodeEncodeError and a
    traceback. Their output to a file or pipe is UTF-8, as `export`'s is."""
    text = "cafe\u0301 \U0001f600 日本語\n"
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.put("/api/docs/utf/text", params={"user": "山田"}, json={"text": text})
        assert r.status_code == 200, r.text
    env = {**os.environ, "PYTHONIOENCODING": "latin-1"}
    for argv, want in (
        (["cat", "utf"], text.encode()),
        (["cat", "utf", "--by", "山田"], text.encode()),
        (["history", "utf"], "山田".encode()),
        (["revert", "utf", "--actor", "山田", "--since", "0", "--dry-run"], "山田".encode()),
    ):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "palimpsest", *argv, "--url", server.url, "--user", "ß"],
            capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0 and done.stderr == b"", (argv, done)
        if argv[0] == "cat":
            assert done.stdout == want, argv
        else:
            assert want in done.stdout, (argv, done.stdout)


async def _two_timed_events(server: RunningServer, doc: str) -> tuple[int, int]:
    """Events 1 ("first") and 2 ("first second") of `doc`, their ts (ms) apart."""
    async with httpx.AsyncClient(base_url=server.url, params={"user": "ada"}) as http:
        for text in ("first", "first second"):
            r = await http.put(f"/api/docs/{doc}/text", json={"text": text})
            assert r.status_code == 200, r.text
            await asyncio.sleep(0.05)  # (a ts of its own: ms apart)
    ts1, ts2 = (e.ts for e in await server.backend.store.read(doc))
    assert ts1 < ts2
    return ts1, ts2


async def run_in_zone(tz: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`palimpsest ARGV` in a process of its own whose local time zone is `tz`."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "palimpsest", *argv],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, TZ=tz),
    )  # fmt: skip


def local_wall_time(ts_ms: int, tz: str, fmt: str = "%Y-%m-%dT%H:%M:%S.%f") -> str:
    """The wall-clock time in zone `tz` at `ts_ms`, written with no offset (as a user
    in that zone types it, as `date` prints it), to the millisecond."""
    from zoneinfo import ZoneInfo

    moment = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(ZoneInfo(tz))
    return moment.strftime(fmt)[: -3 if fmt.endswith("%f") else None]


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kolkata"])
async def test_cat_at_a_time_without_offset_reads_it_as_local_time(
    server: RunningServer, tz: str
) -> None:
    """`TZ=America/New_York palimpsest cat notes --at <NY wall time>` printed '' and
    exited 0 (the time was sent as typed and the server reads one without an offset as
    UTC: hours before the first event); in Kolkata it printed the head. The CLI reads a
    time without an offset as the machine's local time, as `date` does, and sends it
    with its offset; one with an offset is sent as it is."""
    ts1, ts2 = await _two_timed_events(server, "zoned")
    url = ("--url", server.url, "--user", "x")
    for at, want in ((ts1, "first"), (ts2, "first second")):
        ran = await run_in_zone(tz, "cat", "zoned", "--at", local_wall_time(at, tz), *url)
        assert (ran.returncode, ran.stdout) == (0, want), ran
        # a space for the T (RFC 3339's other form) is local time too
        spaced = local_wall_time(at, tz).replace("T", " ")
        ran = await run_in_zone(tz, "cat", "zoned", "--at", spaced, *url)
        assert (ran.returncode, ran.stdout) == (0, want), ran
    # with an offset (or Z), as given: the same instant wherever the CLI runs
    utc = datetime.fromtimestamp(ts1 / 1000, UTC).isoformat(timespec="milliseconds")
    for given in (utc, utc.replace("+00:00", "Z")):
        ran = await run_in_zone(tz, "cat", "zoned", "--at", given, *url)
        assert (ran.returncode, ran.stdout) == (0, "first"), ran
    ran = await run_in_zone(tz, "cat", "--help")
    assert "local time" in " ".join(ran.stdout.split()), ran.stdout


async def test_cat_at_a_local_time_a_dst_change_skips_or_repeats_is_refused(
    server: RunningServer,
) -> None:
    """`TZ=Europe/Paris palimpsest cat d --at 2026-03-29T02:30` (the clocks went from
    02:00 to 03:00 that night: no such local time) was sent shifted by an hour with no
    word, and `--at 2026-10-25T02:30` (that half hour came twice) as one of the two. Both
    are refused, before anything is sent, with the offsets to choose from; with an offset
    the time is read."""
    tz = "Europe/Paris"
    await _two_timed_events(server, "dst")
    url = ("--url", server.url, "--user", "x")
    ran = await run_in_zone(tz, "cat", "dst", "--at", "2026-03-29T02:30", *url)
    assert (ran.returncode, ran.stdout) == (2, ""), ran
    assert "2026-03-29T02:30 is no time here" in ran.stderr, ran
    assert "add an offset" in ran.stderr and "+01:00" in ran.stderr, ran
    ran = await run_in_zone(tz, "cat", "dst", "--at", "2026-10-25 02:30:00", *url)
    assert (ran.returncode, ran.stdout) == (2, ""), ran
    assert "2026-10-25 02:30:00 is twice here" in ran.stderr, ran
    assert "add an offset" in ran.stderr, ran
    assert "2026-10-25T02:30:00+02:00" in ran.stderr, ran
    assert "2026-10-25T02:30:00+01:00" in ran.stderr, ran
    # with an offset: read (a time before the document's first event: said so, exit 1)
    ran = await run_in_zone(tz, "cat", "dst", "--at", "2026-10-25T02:30+01:00", *url)
    assert ran.returncode == 1 and "had no events at that time" in ran.stderr, ran


async def test_cat_at_a_time_before_the_first_event_says_so(server: RunningServer) -> None:
    """`cat --at` a time before the document's first event printed '' and exited 0, as
    for an emptied document: a time in the wrong zone looked like an empty text. It
    prints nothing, says on stderr that the document had no events then and when its
    first is, and exits 1 (as `cat` of a document nobody wrote to: a script stops)."""
    tz = "America/New_York"
    ts1, _ = await _two_timed_events(server, "young")
    first = datetime.fromtimestamp(ts1 / 1000, UTC).isoformat(timespec="milliseconds")
    first = first.replace("+00:00", "Z")
    url = ("--url", server.url, "--user", "x")
    for before in (ts1 - 1, ts1 - 3_600_000):
        for extra in ((), ("--by", "ada")):
            at = local_wall_time(before, tz)
            ran = await run_in_zone(tz, "cat", "young", "--at", at, *extra, *url)
            assert (ran.returncode, ran.stdout) == (1, ""), ran
            assert "'young' had no events at that time" in ran.stderr, ran
            assert f"its first is at {first}" in ran.stderr, ran
            assert local_wall_time(ts1, tz) in ran.stderr, ran  # (and in local time)
    # at the first event's time: its version
    ran = await run_in_zone(tz, "cat", "young", "--at", local_wall_time(ts1, tz), *url)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "first", ""), ran
    # --seq 0 asks for the empty version before the first event by its number: no error
    ran = await run_in_zone(tz, "cat", "young", "--seq", "0", *url)
    assert (ran.returncode, ran.stdout) == (0, ""), ran


async def test_arguments_under_the_c_locale_keep_their_characters(server: RunningServer) -> None:
    """Under LC_ALL=C without UTF-8 mode Python decodes argv as ASCII with
    surrogateescape: `cat conc2 --tag 初稿` sent the tag's escaped bytes, and httpx's
    encoding of them ended the command with UnicodeEncodeError and a traceback. The
    arguments' UTF-8 bytes are read back as the characters they are."""
    async with httpx.AsyncClient(base_url=server.url, params={"user": "ada"}) as http:
        r = await http.put("/api/docs/conc2/text", json={"text": "première\n"})
        assert r.status_code == 200, r.text
        r = await http.post("/api/docs/conc2/tags", json={"name": "初稿", "seq": 1})
        assert r.status_code == 201, r.text
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"}
    env.pop("PYTHONIOENCODING", None)
    for argv in (["cat", "conc2", "--tag", "初稿"], ["cat", "conc2", "--by", "ada"]):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "palimpsest", *argv, "--url", server.url, "--user", "ada"],
            capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0 and done.stderr == b"", (argv, done)
        assert done.stdout == "première\n".encode(), argv
    # a byte that is no UTF-8 is said in one line, not a traceback
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "palimpsest", "cat", "conc2", "--tag", os.fsdecode(b"\xff"),
         "--url", server.url],
        capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert b"Traceback" not in done.stderr and b"not UTF-8" in done.stderr, done.stderr


async def test_blame_names_the_writer_of_each_stretch(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """There was no blame in the CLI (`cat --by USER` prints one writer's text, without
    seqs). `blame` prints each stretch with its event(s) and writer, now or at a
    version (--seq, --tag, --at), or as JSON."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        for user, text in (("ada", "one\n"), ("bob", "one\ntwo\n")):
            r = await http.put("/api/docs/bl/text", params={"user": user}, json={"text": text})
            assert r.status_code == 200, r.text
        r = await http.post("/api/docs/bl/tags", params={"user": "ada"},
                            json={"name": "first", "seq": 1})  # fmt: skip
        assert r.status_code == 201, r.text
    assert await run("blame", "bl", "--url", server.url) == 0
    assert capsys.readouterr().out == '           #1  ada  "one\\n"\n           #2  bob  "two\\n"\n'
    for version in (["--tag", "first"], ["--seq", "1"]):
        assert await run("blame", "bl", *version, "--json", "--url", server.url) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert lines == [{"seq": 1, "last_seq": 1, "actor": "ada", "text": "one\n"}], version
    assert await run("blame", "bl", "--at", "2000-01-01T00:00Z", "--url", server.url) == 1
    assert "had no events at that time" in capsys.readouterr().err
    assert await run("blame", "nothing", "--url", server.url) == 2


async def test_a_command_that_needs_a_server_names_the_one_that_reads_the_store(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`cat` and `history` on a stopped server said only "cannot reach": they talk to a
    server (README: no --db), and the store-reading commands that do their work on a
    stopped server's store are named."""
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    for argv, names in (
        (["cat", "notes", "--tag", "draft-1"], "palimpsest export DOC --db PATH"),
        (["history", "notes"], "palimpsest inspect DOC --db PATH"),
        (["blame", "notes"], "palimpsest serve --db PATH"),
    ):
        assert await run(*argv, "--url", url) == 1
        err = capsys.readouterr().err
        assert "cannot reach" in err and names in err, (argv, err)
        assert err.count("\n") == 1, err
