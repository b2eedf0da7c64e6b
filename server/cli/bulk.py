"""The admin commands that take many documents (delete, compact, export): which ones
(DOC..., ``--prefix P``, ``-`` for names on stdin) and a run over them in one process on
one store, with a progress bar on a terminal and a summary line.

One command per document cost its ~0.5 s of start-up (Python, the imports, opening the
store) each time: 20,000 documents took hours. A document that fails is named with the
reason as it happens; the rest go on, and the exit status is 1 when any failed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from ..errors import PalimpsestError
from ..store import EventStore
from .listing import names_in

#: failed documents the summary names (the lines above it name every one)
NAMED = 20


def add_doc_options(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("docs", metavar="DOC", nargs="*",
                   help=f"the documents to {verb}; - reads names from stdin (the first word "
                   "of each line: `palimpsest ls` prints the name first)")  # fmt: skip
    p.add_argument("--prefix", help=f"{verb} every document whose name starts with this")
    p.add_argument("--quiet", action="store_true",
                   help="with several documents: no progress bar")  # fmt: skip
    p.add_argument("--verbose", action="store_true",
                   help="with several documents: a line for each (else only the summary, "
                   "and a line for each that failed)")  # fmt: skip


def single(args: argparse.Namespace) -> bool:
    """Whether the command names one document as it always could (`delete DOC`): then it
    runs, and says what it did, exactly as before; else run() over many. Sets args.doc."""
    if len(args.docs) == 1 and args.docs[0] != "-" and args.prefix is None:
        args.doc = args.docs[0]
        return True
    return False


async def docs_of(store: EventStore, args: argparse.Namespace, name: str) -> list[str]:
    """The documents the command line names: each DOC, those on stdin for ``-``, and
    those under --prefix, in that order, each once."""
    if not args.docs and args.prefix is None:
        raise ValueError(
            "give a DOC, several, --prefix P (`--prefix ''`: every document), or - to read "
            "names from stdin"
        )
    out: list[str] = []
    for doc in args.docs:
        if doc == "-":
            out += [line.split()[0] for line in sys.stdin if line.strip()]
        else:
            out.append(doc)
    if args.prefix is not None:
        out += await names_in(store, args.prefix)
    return list(dict.fromkeys(out))


def some(docs: list[str]) -> str:
    """`docs` for a refusal: "3 documents (a, b, c)", the first few named."""
    shown = ", ".join(docs[:5]) + (", ..." if len(docs) > 5 else "")
    return f"{len(docs)} document{'s' * (len(docs) != 1)} ({shown})"


def say(line: str) -> None:
    """A line on stderr that leaves the progress bar whole."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


async def run(
    name: str, docs: list[str], args: argparse.Namespace, one: Callable[[str], Awaitable[str]],
    done: str, errors: tuple[type[Exception], ...] = (),
) -> int:  # fmt: skip
    """`one` on each document: what it returns is its --verbose line; an exception it
    raises (a refusal, a store error) fails that document and is said at once. Then the
    summary on stdout (`done`: the past participle, "deleted"), exit status 1 when any
    failed, naming them. `errors`: the command's own refusals, beside the store's."""
    from tqdm import tqdm

    failed: list[str] = []
    # disable=None: a bar only on a terminal, never in pipes and logs
    bar = tqdm(total=len(docs), desc=name, unit="doc", file=sys.stderr, leave=False,
               disable=True if args.quiet else None)  # fmt: skip
    try:
        for doc in docs:
            try:
                said = await one(doc)
            except (PalimpsestError, ValueError, OSError, *errors) as e:  # type: ignore[misc]
                failed.append(doc)
                tqdm.write(f"palimpsest {name}: {doc}: FAILED: {e}", file=sys.stderr)
            else:
                if args.verbose and said:
                    tqdm.write(f"palimpsest {name}: {said}", file=sys.stdout)
            bar.update(1)
    finally:
        bar.close()
    ok = len(docs) - len(failed)
    summary = f"palimpsest {name}: {ok:,} of {len(docs):,} document{'s' * (len(docs) != 1)} {done}"
    if failed:
        named = ", ".join(failed[:NAMED]) + (
            f" and {len(failed) - NAMED} more" * (len(failed) > NAMED)
        )
        print(f"{summary}; {len(failed)} failed: {named}")
        return 1
    print(summary)
    return 0


__all__ = ["add_doc_options", "docs_of", "run", "say", "single", "some"]
