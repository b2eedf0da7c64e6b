"""`palimpsest tail` against a real server: the backlog, then events as they happen."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
from feedhelp import type_into
from serverproc import REPO_ROOT, ServerProcess


def tail(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "palimpsest", "tail", *args],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


async def test_tail_prints_the_backlog_then_live_events(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path) as srv:
        await type_into(srv.ws_url, "notes", list("abc"), user="ada")
        one = tail("notes", "--from", "1", "-n", "3", "--url", srv.http_url)
        every = tail("--all", "--json", "-n", "5", "--url", srv.http_url)
        await asyncio.sleep(1.0)  # both are following now (or will read it from the log)
        await type_into(srv.ws_url, "notes", ["d"], user="bo")
        await type_into(srv.ws_url, "todo", ["x"], user="cy")
        out, err = await asyncio.to_thread(one.communicate, timeout=30)
        assert one.returncode == 0, err
        lines = out.splitlines()
        assert [int(line.split()[0]) for line in lines] == [2, 3, 4]
        assert [line.split()[-1] for line in lines] == ["ada", "ada", "bo"]
        out, err = await asyncio.to_thread(every.communicate, timeout=30)
        assert every.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert [(e["doc"], e["seq"]) for e in events] == [
            ("notes", 1), ("notes", 2), ("notes", 3), ("notes", 4), ("todo", 1),
        ]  # fmt: skip
        assert [e["pos"] for e in events] == sorted(e["pos"] for e in events)
        assert events[-1]["actor"] == "cy"
        # refusals are clear
        bad = tail("no/such doc!", "--url", srv.http_url)
        _, err = await asyncio.to_thread(bad.communicate, timeout=30)
        assert bad.returncode == 2 and "document name" in err


async def test_tail_all_starts_at_the_last_10_positions_and_ends_quietly_on_a_closed_pipe(
    tmp_path: Path,
) -> None:
    """`tail --all` without --from printed the whole history (its help says the last 10);
    `tail … | head -1` ended with a BrokenPipeError traceback."""
    async with ServerProcess(tmp_path) as srv:
        await type_into(srv.ws_url, "long", [f"{i} " for i in range(25)], user="ada")
        every = tail("--all", "--json", "-n", "10", "--url", srv.http_url)
        out, err = await asyncio.to_thread(every.communicate, timeout=30)
        assert every.returncode == 0, err
        assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(16, 26))
        piped = await asyncio.to_thread(
            subprocess.run,
            f"{sys.executable} -m palimpsest tail --all --from 0 --url {srv.http_url} | head -1",
            shell=True, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert piped.stdout.startswith("long@1 ") and len(piped.stdout.splitlines()) == 1
        assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


async def test_tail_into_a_reader_that_left_ends_while_nothing_is_written(
    tmp_path: Path,
) -> None:
    """`tail … | head -1` ended only at tail's next write: on a document nobody writes any
    more (here: one event, printed before head left), it waited for ever."""
    async with ServerProcess(tmp_path) as srv:
        await type_into(srv.ws_url, "quiet", ["only "], user="ada")
        for how in ("--all", "quiet"):
            piped = await asyncio.to_thread(
                subprocess.run,
                f"{sys.executable} -m palimpsest tail {how} --from 0 --url {srv.http_url}"
                " | head -1; echo tail=${PIPESTATUS[0]}",
                shell=True, executable="/bin/bash", cwd=REPO_ROOT, capture_output=True,
                text=True, timeout=30,
            )  # fmt: skip
            first, status = piped.stdout.splitlines()
            assert "quiet@1 " in first or first.lstrip().startswith("1 "), piped.stdout
            assert status == "tail=141", (piped.stdout, piped.stderr)
            assert "Traceback" not in piped.stderr, piped.stderr


async def test_tail_to_a_terminal_interrupted_exits_130_quietly(tmp_path: Path) -> None:
    """Ctrl-C on `tail` writing to a terminal exited 141 (128 + SIGPIPE, as if its reader
    had left): the watch for a reader that left ended at once on a terminal, and the
    interrupt was taken for it. 130 (128 + SIGINT), as an interrupted command exits."""
    import os
    import pty
    import signal

    async with ServerProcess(tmp_path) as srv:
        await type_into(srv.ws_url, "tty", ["one "], user="ada")
        master, slave = pty.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "palimpsest", "tail", "tty", "--from", "0",
                "--url", srv.http_url, stdout=slave, stderr=subprocess.PIPE, cwd=REPO_ROOT,
            )  # fmt: skip
            os.close(slave)
            seen = b""
            while b"ada" not in seen:  # the backlog printed: it follows now
                seen += await asyncio.to_thread(os.read, master, 4096)
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 130, (proc.returncode, err)
            assert b"Traceback" not in err, err
        finally:
            os.close(master)


async def test_tail_all_prints_a_deletion(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path) as srv:
        await type_into(srv.ws_url, "notes", list("ab"), user="ada")
        await type_into(srv.ws_url, "todo", ["x"], user="cy")
        async with httpx.AsyncClient(base_url=srv.http_url) as http:
            r = await http.delete("/api/docs/notes", params={"user": "root"})
            assert r.status_code == 200, r.text
        await type_into(srv.ws_url, "todo", ["y"], user="cy")
        every = tail("--all", "--json", "--from", "0", "-n", "3", "--url", srv.http_url)
        text = tail("--all", "--from", "3", "-n", "1", "--url", srv.http_url)
        out, err = await asyncio.to_thread(every.communicate, timeout=30)
        assert every.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        # notes' events are gone from the log; its deletion is at its own position
        assert [(e["doc"], e["kind"], e["seq"], e["pos"], e["actor"]) for e in events] == [
            ("todo", "edit", 1, 3, "cy"), ("notes", "deleted", 2, 4, "root"),
            ("todo", "edit", 2, 5, "cy"),
        ]  # fmt: skip
        out, err = await asyncio.to_thread(text.communicate, timeout=30)
        assert text.returncode == 0, err
        assert out.split()[0] == "notes@2" and out.split()[2] == "deleted", out
