"""Client subcommands of ``palimpsest`` (and ``python -m palimpsest.client``): cat, blame,
edit, replay, history, tail, revert.

    palimpsest cat notes                       # the text now
    palimpsest cat notes --seq 12              # ... at a version (or --at ISO, --tag NAME)
    palimpsest cat notes --by ada              # what ada wrote that is still there
    palimpsest edit notes draft.md             # make the text equal the file (minimal diff)
    echo hi | palimpsest edit notes -
    palimpsest replay automerge-paper --limit 20000
    palimpsest history notes --limit 20
    palimpsest blame notes --tag draft-1       # who wrote each stretch (--seq, --at; --json)
    palimpsest tail notes --from 0             # every event, then each new one (Ctrl-C)
    palimpsest revert notes --actor s06 --since 12 --dry-run  # what taking out s06's would do
    palimpsest revert notes --actor s06 --since "before the test"  # ... and do it

A time given without an offset (``--at 2026-11-27T10:00``) is this machine's local time,
as ``date`` reads it (the HTTP API reads one as UTC: the CLI sends the offset); one that
a daylight-saving change skipped or repeated there is refused: add an offset.

The server is ``--url`` / PALIMPSEST_URL (default http://127.0.0.1:8000); you are
``--user`` / PALIMPSEST_USER in open mode, or ``--token`` / PALIMPSEST_TOKEN. These
commands talk to a server only; with none to reach, the error names the commands that
read a stopped server's store (``export``, ``inspect``: OFFLINE).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gzip
import json
import logging
import os
import stat
import sys
import time
from collections.abc import AsyncIterable, Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from palimpsest.readable import blame_pieces, tree_text
from palimpsest.util import argv_text, text_output, with_local_offset

from .errors import ClientError, Locked, NotFound, ReadOnly, Refused, ServerGone, Timeout
from .history import DEFAULT_URL, BlameRun, History, Version
from .session import Removed, Session, connect

#: where trace names are looked up (the repository's data/traces; a wheel has none)
TRACES_DIR = Path(
    os.environ.get(
        "PALIMPSEST_TRACES",
        Path(__file__).resolve().parent.parent / "data/traces/sequential_traces",
    )
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("PALIMPSEST_URL", DEFAULT_URL),
        help="server URL (env PALIMPSEST_URL; default %(default)s)",
    )
    p.add_argument("--user", default=os.environ.get("PALIMPSEST_USER"), help="user (open mode)")
    p.add_argument("--token", default=os.environ.get("PALIMPSEST_TOKEN"), help="JWT")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("cat", help="print a document's text (now or at a version)")
    p.add_argument("doc")
    at = p.add_mutually_exclusive_group()
    at.add_argument("--seq", type=int, help="the version after event SEQ")
    at.add_argument("--at", metavar="TIME",
                    help="the version at a time, ISO 8601 (2026-11-27T10:00, 2026-11-27 "
                    "10:00:30, 2026-11-27: its midnight); without an offset it is this "
                    "machine's local time (TZ), as `date` reads it; with one (Z, +05:30) "
                    "the time it says (a local time a DST change skipped or repeated: "
                    "refused, add an offset). Before the document's first event: nothing "
                    "printed, exit 1")  # fmt: skip
    at.add_argument("--tag", help="a named version")
    p.add_argument(
        "--root",
        help="the root (shared type) to print; default: `content`, else the document's one "
        "text root (y-monaco's `monaco`, Quill's `quill`), else its one root of any kind",
    )
    p.add_argument(
        "--actor", "--by", action="append", metavar="USER",
        help="only the text USER wrote that is still there, in document order, a blank line "
        "where others' lines were between (again for several users)",
    )  # fmt: skip
    p.add_argument(
        "--format", choices=["text", "xml"], default="text",
        help="text: an XML root's (Tiptap's, Lexical's) readable text, a line per "
        "paragraph; xml: its XML string as Yjs writes it, every element and attribute "
        "(default text; other roots print alike)",
    )  # fmt: skip
    _common(p)
    p.set_defaults(func=_runner(cmd_cat))

    p = subparsers.add_parser(
        "blame", help="who wrote each stretch of a document's text (now or at a version)",
        description="Print who wrote each stretch of a text root that is there at the head "
        "(or at a version), or of an XML root's text as cat prints it (a paragraph's line "
        "break its maker's): one line per stretch, the event(s) that wrote it (#seq, or "
        "#first-last for neighbouring events of one writer), the writer and the text (as "
        "JSON, its line breaks as \\n). A writer nobody can name (text folded into a "
        "compacted base) is `?`.",
    )  # fmt: skip
    p.add_argument("doc")
    at = p.add_mutually_exclusive_group()
    at.add_argument("--seq", type=int, help="the version after event SEQ")
    at.add_argument("--at", metavar="TIME",
                    help="the version at a time, ISO 8601, read as `cat --at` reads it "
                    "(without an offset: this machine's local time)")  # fmt: skip
    at.add_argument("--tag", help="a named version")
    p.add_argument("--root", help="the text root; default: as `cat` chooses it")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per stretch: seq, last_seq, actor, text")  # fmt: skip
    _common(p)
    p.set_defaults(func=_runner(cmd_blame))

    p = subparsers.add_parser("edit", help="make a document's text equal a file (minimal diff)")
    p.add_argument("doc")
    p.add_argument("file", nargs="?",
                   help="a file, or - for stdin (default: stdin, refused when it is empty "
                   "unless --allow-empty: cron or ssh -n would empty the document)")  # fmt: skip
    p.add_argument("--allow-empty", action="store_true",
                   help="without FILE: an empty stdin empties the document")  # fmt: skip
    p.add_argument(
        "--root",
        help="the text root to set; default: `content`, else the document's one text root "
        "(y-monaco's `monaco`, Quill's `quill`)",
    )
    _common(p)
    p.set_defaults(func=_runner(cmd_edit))

    p = subparsers.add_parser(
        "replay",
        help="replay an editing trace into a document",
        description="Type an editing trace's transactions into a new document through a "
        "running server, as one client would. The document must be empty (its --root "
        "text): replay into a document that has text is refused (exit 2), so name a new "
        "one with --doc or leave the default. It does not log one event per transaction: "
        "what is typed between two update frames goes out merged as one frame, which the "
        "server logs as one event, so the log gets at most --rate events a second of the "
        "replay (100,000 transactions gave 1,054 events at the default rate, 20,000 gave "
        "56). --rate 0 lifts the pacing but still merges what piles up between "
        "sends (about 64 transactions an event): no option gives one event per "
        "transaction.",
    )
    p.add_argument("trace", help=f"a .json.gz trace file, or a name in {TRACES_DIR}")
    p.add_argument("--doc", help="target document (default: the trace name + a suffix)")
    p.add_argument("--limit", type=int, help="replay only the first N transactions")
    p.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="at most this many update frames per second; edits in between are merged "
        "into one frame (default %(default)s; 0 = no limit; a server allows 1000/s by default)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--root", help=f"the text root to type the trace into (default: `{DEFAULT_ROOT}`)"
    )
    _common(p)
    p.set_defaults(func=_runner(cmd_replay))

    p = subparsers.add_parser("history", help="list a document's events")
    p.add_argument("doc")
    p.add_argument("--after", type=int, help="events after this seq")
    p.add_argument("--limit", type=int, default=50, help="at most N events (default 50)")
    p.add_argument("--actor", help="only this user's events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _common(p)
    p.set_defaults(func=_runner(cmd_history))

    p = subparsers.add_parser(
        "revert", help="take out one writer's changes since a version, keeping everyone else's",
        description="Take out what ACTOR did after version SINCE (up to UNTIL, the head by "
        "default): their insertions deleted, the text they deleted brought back, everybody "
        "else's changes kept. One new event of kind revert, which your undo takes back.",
    )  # fmt: skip
    p.add_argument("doc")
    p.add_argument("--actor", required=True, help="the writer whose changes to take out")
    p.add_argument("--since", required=True, help="a seq or a tag name: changes after it")
    p.add_argument("--until", help="a seq or a tag name: changes up to it (default: head)")
    p.add_argument("--dry-run", action="store_true", help="write nothing: say what it would do")
    p.add_argument("--json", action="store_true", help="the server's answer as JSON")
    _common(p)
    p.set_defaults(func=_runner(cmd_revert))

    p = subparsers.add_parser(
        "tail", help="print a document's events as they happen (like tail -f)",
        description="Print a document's events (the last 10, or those after --from), then "
        "each new one as it is committed, until interrupted. Resumes by itself across "
        "disconnects and server restarts.",
    )  # fmt: skip
    p.add_argument("doc", nargs="?", help="the document (omit with --all)")
    p.add_argument("--from", dest="after", type=int,
                   help="start after this seq (--all: this global position); default: "
                   "the last 10 events (--all: of the last 10 positions)")  # fmt: skip
    p.add_argument("--all", action="store_true", help="every document you may read")
    p.add_argument("-n", "--count", type=int, help="stop after N events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _common(p)
    p.set_defaults(func=_runner(cmd_tail))


def _runner(cmd: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(cmd(args))
        except ClientError as e:
            print(f"palimpsest: {e}{_offline_hint(args, e)}", file=sys.stderr)
            return 2 if isinstance(e, Refused) else 1
        except httpx.InvalidURL as e:  # http://256.1.1.1: no address to try
            url = getattr(args, "url", None)
            print(f"palimpsest: --url {url!r} is not a URL to reach: {e}", file=sys.stderr)
            return 2
        except UnicodeEncodeError as e:
            if "surrogates" not in str(e):
                raise
            # an argument argv_text could not read (bytes that are no UTF-8)
            bad = os.fsencode(e.object[e.start : e.end]) if isinstance(e.object, str) else b""
            print(f"palimpsest: an argument is not UTF-8 text (bytes {bad!r}); give it in "
                  "UTF-8", file=sys.stderr)  # fmt: skip
            return 2
        except BrokenPipeError:
            # the reader went away (`palimpsest tail --all | head -1`): quietly, as other
            # Unix tools do, and without Python's second complaint when it flushes stdout
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # 128 + SIGPIPE

    return run


#: what reads a stopped server's store instead of each command that needs a server
#: (README: the client commands talk to a server and take no --db; the admin ones read
#: the store): said when no server answers
OFFLINE = {
    "cat": "`palimpsest export DOC --db PATH [--seq N | --tag NAME | --at TIME]` prints "
    "it, as cat does",
    "blame": "`palimpsest export DOC --db PATH --format json` prints the text, and "
    "`palimpsest inspect DOC --db PATH` who wrote to it (blame itself needs a server: "
    "`palimpsest serve --db PATH`)",
    "history": "`palimpsest inspect DOC --db PATH` says its head, actors and tags (the "
    "event list itself needs a server: `palimpsest serve --db PATH`)",
}


def _offline_hint(args: argparse.Namespace, e: ClientError) -> str:
    """For a command that needs a server and reached none: which store-reading command
    does its work on a stopped server's store (they take --db, these --url)."""
    hint = OFFLINE.get(str(getattr(args, "command", "") or ""))
    if not isinstance(e, ServerGone) or hint is None:
        return ""
    return f". No server there; on a stopped server's store, {hint}"


def _session(args: argparse.Namespace, doc: str) -> Session:
    return connect(args.url, doc, user=args.user, token=args.token, reconnect=True)


def _history(args: argparse.Namespace) -> History:
    return History(args.url, user=args.user, token=args.token)


# --- commands ---------------------------------------------------------------------------


#: the root a document of Palimpsest's own page and client keeps its text in
DEFAULT_ROOT = "content"


class NoRoot(Exception):
    """The document has no root the command can print or set unasked; the message says
    which roots it has."""


def pick_root(doc: str, roots: dict[str, Any], given: str | None, *, editing: bool) -> str:
    """The root `cat` prints and `edit` sets: `given` (--root); else `content` when the
    document has it or has no root yet; else its one text root (y-monaco's `monaco`,
    Quill's `quill`), or for `cat` its one root of any kind. Anything else is refused
    with the roots named, never guessed: `edit` used to write a `content` text beside a
    Tiptap document's tree, which no editor of it showed."""

    def kind(name: str) -> str:
        root = roots.get(name)
        return str(root.get("type")) if isinstance(root, dict) else "?"

    listing = ", ".join(f"{name} ({kind(name)})" for name in sorted(roots))
    name = given
    if name is None:
        texts = [n for n in roots if kind(n) == "text"]
        if not roots or DEFAULT_ROOT in roots:
            name = DEFAULT_ROOT
        elif len(texts) == 1:
            name = texts[0]
        elif not editing and len(roots) == 1:
            name = next(iter(roots))
        elif editing and not texts:
            raise NoRoot(
                f"{doc!r} holds no text to set (its roots: {listing}): edit sets a text "
                "root's characters; --root NAME would add one beside them"
            )
        else:
            raise NoRoot(f"{doc!r} has several roots ({listing}): choose one with --root")
    if editing and name in roots and kind(name) != "text":
        raise NoRoot(
            f"{doc!r}'s root {name!r} is {kind(name)}, not a text: edit sets a text's characters"
        )
    return name


def _root_value(version: Version, name: str) -> str:
    """What `cat` prints of a root: a text's characters, an XML tree as Yjs writes it
    (`--format xml`; `--format text` prints its readable text), a map or an array as
    JSON."""
    root = version.roots.get(name)
    value = root.get("value") if isinstance(root, dict) else None
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


async def _version_and_root(args: argparse.Namespace, h: History) -> tuple[Version, str] | int:
    """The version `cat` and `blame` print (--seq, --at or --tag) and its root (--root);
    an exit status, said on stderr, when there is none. A name nobody has written to (a
    typo?) is an error (NotFound), as in `history`."""
    v = await h.version(args.doc, args.seq, at=args.at, tag=args.tag)
    if args.at is not None and v.seq == 0:
        return await _before_first_event(args, h)
    try:
        return v, pick_root(args.doc, v.roots, args.root, editing=False)
    except NoRoot as e:
        print(f"palimpsest: {e}", file=sys.stderr)
        return 2


async def cmd_cat(args: argparse.Namespace) -> int:
    async with _history(args) as h:
        found = await _version_and_root(args, h)  # (an empty text prints nothing)
    if isinstance(found, int):
        return found
    v, name = found
    if args.actor:
        return await _cat_by(args, v, name)
    if args.format == "text" and (v.roots.get(name) or {}).get("type") == "xml":
        # its readable text, from its tree at that very version
        try:
            async with _history(args) as h:
                root = (await h.version(args.doc, v.seq, tree=True)).roots.get(name) or {}
        except ClientError as e:
            if e.code != 422:  # (TooDeep: nested deeper than a tree is given)
                raise
            print(f"palimpsest: {e}: its XML string instead", file=sys.stderr)
        else:
            _write(tree_text(root.get("nodes") or []))
            return 0
    _write(_root_value(v, name))
    return 0


async def _before_first_event(args: argparse.Namespace, h: History) -> int:
    """`cat --at` a time before the document's first event: nothing printed, said on
    stderr with the first event's time (in UTC and here), exit 1, as for a document
    nobody wrote to. An empty output with exit 0 looked like an empty text, and the
    likely cause is a time in another zone than meant."""
    page = await h.events(args.doc, limit=1)
    first = page.events[0].ts if page.events else None
    when = ""
    if first:
        with contextlib.suppress(ValueError):
            here = datetime.fromisoformat(first).astimezone()
            when = f": its first is at {first} ({here.isoformat(timespec='milliseconds')} here)"
    at = with_local_offset(args.at)
    print(f"palimpsest: {args.doc!r} had no events at that time ({at}){when}", file=sys.stderr)
    return 1


async def _cat_by(args: argparse.Namespace, v: Version, name: str) -> int:
    """`cat --actor`: the text the actors wrote that is still in root `name` at version
    `v` (their blame); an actor who never changed the document is an error (a typo?)."""
    kind = (v.roots.get(name) or {}).get("type")
    if kind not in (None, "text", "xml"):  # (None: no such root yet, an empty text)
        print(
            f"palimpsest: {args.doc!r}'s root {name!r} is {kind}: only a text or an XML "
            "tree says who wrote what",
            file=sys.stderr,
        )
        return 2
    async with _history(args) as h:
        text = await h.text_by(args.doc, args.actor, v.seq, root=name)
        if not text:
            for actor in args.actor:
                if not (await h.events(args.doc, actor=actor, limit=1)).events:
                    print(f"palimpsest: {actor!r} never changed {args.doc!r}", file=sys.stderr)
                    return 1
    # printed as lines: no blank line at either end, a line break after the last
    lines = text.strip("\n")
    _write(lines + "\n" if lines else "")
    return 0


async def cmd_blame(args: argparse.Namespace) -> int:
    async with _history(args) as h:
        found = await _version_and_root(args, h)
        if isinstance(found, int):
            return found
        v, name = found
        kind = (v.roots.get(name) or {}).get("type")
        if kind not in (None, "text", "xml"):
            print(f"palimpsest: {args.doc!r}'s root {name!r} is {kind}: blame prints the "
                  "writers of a text root or of an XML root's text (GET /api/docs/DOC/blame "
                  "gives the others')", file=sys.stderr)  # fmt: skip
            return 2
        if kind == "xml":
            runs = _xml_runs(await h.blame_tree(args.doc, v.seq, root=name, join="actor"))
        else:
            runs = await h.blame(args.doc, v.seq, root=name, join="actor")
    for r in runs:
        if args.json:
            print(json.dumps({"seq": r.seq, "last_seq": r.last_seq, "actor": r.actor,
                              "text": r.text}, ensure_ascii=False))  # fmt: skip
        else:
            seqs = f"#{r.seq}" if r.last_seq in (None, r.seq) else f"#{r.seq}-{r.last_seq}"
            print(f"{seqs:>13}  {r.actor or '?'}  {json.dumps(r.text, ensure_ascii=False)}")
    return 0


def _xml_runs(nodes: list[dict[str, Any]]) -> list[BlameRun]:
    """An XML root's blame tree as blame runs of its readable text (what `cat` prints of
    it): each stretch of one writer's characters, neighbours of one writer joined (their
    events first-last), a paragraph's line break its maker's."""
    runs: list[BlameRun] = []
    for text, who in blame_pieces(nodes):
        seqs = [s for s in (who.seq, who.last_seq) if s is not None]
        if runs and runs[-1].actor == who.actor:
            r = runs[-1]
            seqs += [r.seq, r.last_seq if r.last_seq is not None else r.seq]
            runs[-1] = dataclasses.replace(r, text=r.text + text, seq=min(seqs),
                                           last_seq=max(seqs))  # fmt: skip
        else:
            first, last = (min(seqs), max(seqs)) if seqs else (0, None)
            runs.append(BlameRun(text=text, actor=who.actor, seq=first, last_seq=last))
    return runs


def _write(text: str) -> None:
    sys.stdout.write(text)
    if text and not text.endswith("\n") and sys.stdout.isatty():
        sys.stdout.write("\n")


async def cmd_edit(args: argparse.Namespace) -> int:
    new = await asyncio.to_thread(_read_input, args.file or "-")
    if not new and args.file is None and not args.allow_empty:
        print(
            f"palimpsest edit: stdin is empty (no FILE given): {args.doc!r} is left as it "
            "is. To empty it, give - (stdin) or --allow-empty",
            file=sys.stderr,
        )
        return 1
    async with _history(args) as h:
        try:
            roots = (await h.version(args.doc)).roots
        except NotFound:
            roots = {}  # a new document
        try:
            name = pick_root(args.doc, roots, args.root, editing=True)
        except NoRoot as e:
            print(f"palimpsest: {e}", file=sys.stderr)
            return 2
        root = roots.get(name)
        if isinstance(root, dict) and "delta" in root:
            # formatting or embeds (Quill's): the server's own smallest edit keeps them,
            # where a diff of the plain characters would count past an embed wrongly
            before = len(str(root.get("value") or ""))
            try:
                seq = await h.put_text(args.doc, new, root=name)
            except Locked as e:
                detail = e.detail.get("detail") if isinstance(e.detail, dict) else None
                raise _not_made(args.doc, str(detail or "")) from None
            done = "already equal" if seq is None else f"event #{seq}"
            print(f"{args.doc}: {done}, {before} -> {len(new)} characters", file=sys.stderr)
            return 0
    with _lock_warning_unsaid():
        async with _session(args, args.doc) as s:
            await _refuse_if_read_only(s)
            text = s.text(name)
            before = len(text)
            spans = text.set(new)
            try:
                await s.flush(timeout=60)
            except Locked:
                raise _not_made(args.doc, s.denied or "") from None
    print(
        f"{args.doc}: {spans} changed span(s), {before} -> {len(new)} characters",
        file=sys.stderr,
    )
    return 0


def _not_made(doc: str, refusal: str) -> Locked:
    """The error of an edit the document's lock refused: the session would keep it and
    send it again once the document is unlocked, but the command exits with it, so it
    was not made (the session's own message promised the later delivery). `refusal`:
    the server's ``locked: the document ... is locked read-only by ...[: reason]``."""
    why = refusal.removeprefix("locked:").strip() or f"the document {doc!r} is locked"
    return Locked(f"the edit of {doc!r} was not made: {why}. Run it again once it is unlocked")


class _LockRefusalFilter(logging.Filter):
    """Drops the session's warning that the server refused its edits (Session.
    _edits_refused): it says they are kept and sent again once the document is
    unlocked, which the exiting command does not do; _not_made says what happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.funcName != "_edits_refused"


@contextlib.contextmanager
def _lock_warning_unsaid() -> Iterator[None]:
    logger = logging.getLogger("palimpsest.client")
    unsaid = _LockRefusalFilter()
    logger.addFilter(unsaid)
    try:
        yield
    finally:
        logger.removeFilter(unsaid)


async def _refuse_if_read_only(s: Session) -> None:
    """ReadOnly before anything is sent when the server names our role read (its answer
    to the session's hello): sent, the edit was refused, and the refusal said twice, as
    the session's warning and as flush()'s error."""
    with contextlib.suppress(Timeout):
        await s.wait_for(lambda: s.role is not None, timeout=10)
    if s.role == "read":
        raise ReadOnly(f"{s.name!r}: this token may only read (role read); edit needs write")


def _read_input(file: str) -> str:
    """The new text: UTF-8, from a file or stdin; what cannot be read is said, not raised."""
    where = "stdin" if file == "-" else repr(file)
    try:
        if file == "-":
            return sys.stdin.read()
        # bytes decoded, not read_text(): that translates "\r\n" and "\r" into "\n",
        # and the text must equal the file, line ends included
        return Path(file).read_bytes().decode("utf-8")
    except OSError as e:
        raise SystemExit(f"palimpsest: cannot read {where}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SystemExit(
            f"palimpsest: {where} is not UTF-8 text (byte {e.start}: {e.reason}); "
            "edit sets a document's text"
        ) from None


def load_trace(trace: str) -> tuple[Path, dict[str, Any]]:
    """A trace by path or by name (``automerge-paper``) in TRACES_DIR."""
    path = Path(trace)
    if not path.exists():
        name = trace if trace.endswith(".json.gz") else f"{trace}.json.gz"
        path = TRACES_DIR / name
    if not path.exists():
        known = sorted(p.name.removesuffix(".json.gz") for p in TRACES_DIR.glob("*.json.gz"))
        if known:
            raise SystemExit(f"palimpsest: no trace {trace!r} (known: {', '.join(known)})")
        # an installed palimpsest: the traces (4 MB) stay in the repository
        raise SystemExit(
            f"palimpsest: no trace {trace!r}: no traces in {TRACES_DIR} (the package does not "
            "include them: they are in the repository's data/traces/sequential_traces; give "
            "a trace file's path, or set PALIMPSEST_TRACES to that directory)"
        )
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except gzip.BadGzipFile:
        raise SystemExit(f"palimpsest: {path} is not a gzip file (a trace is .json.gz)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, EOFError) as e:
        raise SystemExit(f"palimpsest: {path} is not JSON (a trace is gzipped JSON): {e}") from None
    except OSError as e:
        raise SystemExit(f"palimpsest: cannot read {path}: {e.strerror or e}") from None
    problem = _trace_problem(data)
    if problem:
        raise SystemExit(f"palimpsest: {path} is not an editing trace: {problem}")
    return path, data


def _trace_problem(data: Any) -> str | None:
    """What keeps `data` from being an editing trace (startContent, endContent, txns of
    patches [pos, deleted, inserted]), else None: said before replay connects."""
    if not isinstance(data, dict):
        return f"its JSON is {type(data).__name__}, not an object"
    for key in ("startContent", "endContent"):
        if not isinstance(data.get(key), str):
            return f"no {key} string"
    if not isinstance(data.get("txns"), list):
        return "no txns list"
    for i, txn in enumerate(data["txns"], start=1):
        patches = txn.get("patches") if isinstance(txn, dict) else None
        if not isinstance(patches, list) or not all(
            isinstance(p, list) and len(p) == 3 and type(p[0]) is int and type(p[1]) is int
            and p[0] >= 0 and p[1] >= 0 and isinstance(p[2], str)
            for p in patches
        ):  # fmt: skip
            return f"transaction {i} is not {{patches: [[pos, deleted, inserted], ...]}}"
    return None


async def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    path, trace = await asyncio.to_thread(load_trace, args.trace)
    txns = trace["txns"][: args.limit] if args.limit else trace["txns"]
    name = path.name.removesuffix(".json.gz")
    doc = args.doc or f"replay-{name}-{int(time.time())}"
    expected = trace["startContent"]
    session = connect(
        args.url, doc, user=args.user, token=args.token, max_frames_per_second=args.rate
    )
    async with session as s:
        text = s.text(args.root or DEFAULT_ROOT)
        if len(text):
            print(f"palimpsest: {doc!r} is not empty; replay into a new document", file=sys.stderr)
            return 2
        if expected:
            text.insert(0, expected)
        t0 = time.perf_counter()
        bar = tqdm(total=len(txns), unit="txn", disable=args.no_progress, desc=doc)
        for i, txn in enumerate(txns):
            patches = txn["patches"]
            if len(patches) == 1:
                pos, n, ins = patches[0]
                text.replace(pos, n, ins)
            else:
                with s.doc.transaction():
                    for pos, n, ins in patches:
                        text.replace(pos, n, ins)
            if i % 64 == 63:
                bar.update(64)
                await asyncio.sleep(0)  # let the session send
        bar.update(len(txns) - bar.n)
        bar.close()
        local = time.perf_counter() - t0
        await s.flush(timeout=120)
        total = time.perf_counter() - t0
        content = str(text)
    if args.limit is None and content != trace["endContent"]:
        print(f"palimpsest: {doc}: the result differs from the trace's endContent", file=sys.stderr)
        return 1
    print(
        f"{doc}: {len(txns)} transactions, {len(content)} characters; "
        f"applied in {local:.2f}s, durable on the server after {total:.2f}s "
        f"({len(txns) / total:,.0f} txn/s)",
        file=sys.stderr,
    )
    return 0


async def cmd_history(args: argparse.Namespace) -> int:
    async with _history(args) as h:
        page = await h.events(args.doc, after=args.after, limit=args.limit, actor=args.actor)
    for e in page.events:
        if args.json:
            print(
                json.dumps(
                    {"seq": e.seq, "ts": e.ts, "actor": e.actor, "kind": e.kind,
                     "size": e.size, "meta": e.meta, "reverts": e.reverts or None}
                )
            )  # fmt: skip
        else:
            print(f"{e.seq:>7}  {e.ts}  {e.kind:<8} {e.size:>7}B  {e.actor}{_reverts(e)}")
    if page.next_after is not None and not args.json:
        print(f"... more: --after {page.next_after}", file=sys.stderr)
    return 0


def _ref(raw: str | None) -> int | str | None:
    """A version as given on the command line: a seq, or a tag name."""
    return int(raw) if raw is not None and raw.strip().isdigit() else raw


async def cmd_revert(args: argparse.Namespace) -> int:
    async with _history(args) as h:
        since = _ref(args.since) or 0
        r = await h.revert(args.doc, args.actor, since, _ref(args.until), dry_run=args.dry_run)
    if args.json:

        def per_user(removed: tuple[Removed, ...]) -> list[dict[str, Any]]:
            return [{"user": o.user, "characters": o.characters, "items": o.items}
                    for o in removed]  # fmt: skip

        out: dict[str, Any] = {
            "seq": r.seq, "actor": r.actor, "since": r.since, "until": r.until,
            "reverts": r.reverts, "reason": r.reason, "dry_run": r.dry_run,
            "removed": {"characters": r.removed_characters, "items": r.removed_items},
            "added": {"characters": r.added_characters, "items": r.added_items},
            "removed_others": per_user(r.removed_others),
        }  # fmt: skip
        if r.kept_containers is not None:  # (as the server's answer: absent when none)
            out["kept_containers"] = {"items": r.kept_containers.items,
                                      "others": per_user(r.kept_containers.others)}  # fmt: skip
        print(json.dumps(out))
        return 0
    what = f"{r.actor}'s changes after #{r.since} up to #{r.until}"
    if r.reason:
        print(f"{args.doc}: {r.reason} ({what})")
        return 0
    done = "would take out" if r.dry_run else "took out"
    lead = f"{args.doc}: {'dry run: ' if r.dry_run else f'#{r.seq} '}"
    print(f"{lead}reverting {what} ({len(r.reverts)} events) {done} "
          f"{_amount(r.removed_characters, r.removed_items)} and "
          f"{'would put' if r.dry_run else 'put'} back "
          f"{_amount(r.added_characters, r.added_items)}")  # fmt: skip
    for o in r.removed_others:
        print(f"  also {done} {_amount(o.characters, o.items)} by {o.user or 'an unknown writer'}")
    if r.kept_containers is not None:
        # the writer's paragraphs (elements) that others wrote in stay, with their words
        k = r.kept_containers
        whose = ", ".join(f"{_amount(o.characters, o.items)} by {o.user or 'an unknown writer'}"
                          for o in k.others)  # fmt: skip
        print(f"  {'would keep' if r.dry_run else 'kept'} {k.items} item{'s' * (k.items != 1)}"
              f"{': others wrote in them: ' + whose if whose else ''}")  # fmt: skip
    return 0


def _amount(characters: int, items: int) -> str:
    out = f"{characters} character{'s' * (characters != 1)}"
    return out + (f" and {items} item{'s' * (items != 1)}" if items else "")


def _reverts(e: Any) -> str:
    """What an undo or redo reverts, or which version a restore brought back (the API
    gives both as `reverts`), for a line of history or tail; "" for other events."""
    if not e.reverts:
        return ""
    if e.kind == "restore":
        return f"  restores #{e.reverts[0]}"
    if e.kind == "revert" and isinstance(e.meta.get("writer"), str):
        return f"  reverts {e.meta['writer']}'s {','.join(map(str, e.reverts))}"
    return f"  reverts {','.join(map(str, e.reverts))}"


async def cmd_tail(args: argparse.Namespace) -> int:
    if args.all == bool(args.doc):
        print("palimpsest tail: give a document, or --all", file=sys.stderr)
        return 2
    async with _history(args) as h:
        after = args.after
        if after is None and args.doc:
            head = next((d.head for d in await h.docs(args.doc) if d.doc == args.doc), 0)
            after = max(0, head - 10)
        elif after is None:  # --all: the last 10 positions (those you may read of them)
            after = max(0, await h.position() - 10)
        follow = (
            h.stream_all(after=after, updates=False)
            if args.all
            else h.stream(args.doc, after=after, updates=False)
        )
        watch = asyncio.create_task(_reader_gone(asyncio.current_task()))
        try:
            return await _print_events(args, follow)
        except asyncio.CancelledError:
            # the reader left (not Ctrl-C, which cancels us too: 130, main)
            if watch.done() and not watch.cancelled() and watch.result():
                raise BrokenPipeError from None  # (quietly, 141: _runner)
            raise
        finally:
            watch.cancel()


async def _reader_gone(task: asyncio.Task[Any] | None) -> bool:
    """Cancel `task` once nobody reads our stdout any more: `tail | head -1` ended only
    at tail's next write, so never on a document nobody writes. The write end of a pipe
    whose readers are gone reports an error, which the event loop's selector hands to a
    reader callback (the write end is never readable otherwise). True when it did;
    False at once when stdout is no pipe (a terminal, a file): nothing to watch."""
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
    except (OSError, ValueError):  # (no real stdout: a test's capture)
        return False
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def seen() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, seen)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
    if task is not None:
        task.cancel()
    return True


async def _print_events(args: argparse.Namespace, follow: AsyncIterable[Any]) -> int:
    n = 0
    async for e in follow:
        if args.json:
            print(json.dumps({"doc": e.doc, "seq": e.seq, "pos": e.pos, "ts": e.ts,
                              "actor": e.actor, "kind": e.kind, "size": e.size,
                              "meta": e.meta, "reverts": e.reverts or None}),
                  flush=True)  # fmt: skip
        else:
            where = f"{e.doc}@{e.seq}" if args.all else f"{e.seq:>7}"
            print(f"{where}  {e.ts}  {e.kind:<8} {e.size:>7}B  {e.actor}{_reverts(e)}",
                  flush=True)  # fmt: skip
        n += 1
        if args.count is not None and n >= args.count:
            break
    return 0


def main(argv: list[str] | None = None) -> int:
    # (not __doc__: None under python -OO)
    parser = argparse.ArgumentParser(
        prog="python -m palimpsest.client",
        description="Client subcommands of palimpsest: cat, blame, edit, replay, history, tail, "
        "revert.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv_text(sys.argv[1:] if argv is None else argv))
    text_output()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
