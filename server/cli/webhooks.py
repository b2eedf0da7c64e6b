"""`palimpsest webhooks`: the webhooks' delivery state, from the store, and the
operator's switches (enable a failing hook: it resumes from its cursor; disable one).

Works on the store directly, with or without a running server: a server notices a
change of state within half its lease (``webhook_lease_seconds`` / 2, 5 s)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

from ..changefeed.extension import hook_json
from ..changefeed.webhooks import Webhook, shown_url
from ..errors import PalimpsestError
from ..store import open_store
from ..store.cursors import ACTIVE, DISABLED
from . import add_store_options, not_a_store, settings_from


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "webhooks",
        help="list webhooks and their delivery state; enable or disable one",
        description="List the webhooks a store knows (cursor, state, failures), or enable "
        "a failing one (delivery resumes from its cursor), disable or forget one.",
    )
    add_store_options(p)
    p.add_argument("action", nargs="?", default="list",
                   choices=["list", "enable", "disable", "remove"])  # fmt: skip
    p.add_argument("hook", nargs="?", metavar="ID|URL", help="the webhook (its id or its URL)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _hook_id(ref: str) -> str:
    return Webhook(ref).id if ref.startswith(("http://", "https://")) else ref


def _shown(ref: str) -> str:
    """The hook as a message names it: an id as it is, a URL masked (it may hold a
    password or a token)."""
    return repr(ref) if re.fullmatch(r"[\w.-]{1,64}", ref) else shown_url(ref)


async def webhooks(args: argparse.Namespace) -> int:
    url = settings_from(args).store_url
    store = open_store(url)
    problem = await not_a_store(store, url)  # opening it would make one
    if problem:
        print(f"palimpsest webhooks: {problem}", file=sys.stderr)
        return 1
    async with store:
        cursors = store.webhook_cursors()
        last = await store.last_position()
        if args.action == "list":
            rows = [hook_json(r, last) for r in await cursors.list()]
            if args.json:
                print(json.dumps({"position": last, "webhooks": rows}, indent=2))
                return 0
            if not rows:
                print("no webhooks")
            for r in rows:
                print(
                    f"{r['id']}  {r['state']:<8}  cursor {r['cursor']} (behind {r['behind']})"
                    f"  delivered {r['delivered']}  failures {r['failures']}  {r['url']}"
                )
                if r["last_error"]:
                    print(f"    last error: {r['last_error']}")
            return 0
        if not args.hook:
            print(f"palimpsest webhooks {args.action}: which webhook? (an id or URL)",
                  file=sys.stderr)  # fmt: skip
            return 2
        hook_id = _hook_id(args.hook)
        if args.action == "remove":
            done = await cursors.remove(hook_id)
            row = None
        else:
            row = await cursors.set_state(hook_id, ACTIVE if args.action == "enable" else DISABLED)
            done = row is not None
        if not done:
            print(f"no webhook {_shown(args.hook)} in this store", file=sys.stderr)
            return 1
        if row is not None:
            out = hook_json(row, last)
            print(
                json.dumps(out)
                if args.json
                else f"{out['id']}: {out['state']}, cursor {out['cursor']} (behind {out['behind']})"
            )
        else:
            print(f"{hook_id}: removed")
        return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(webhooks(args))
    except (PalimpsestError, ValueError) as e:  # ValueError: a store URL of no store
        print(f"palimpsest webhooks: {e}", file=sys.stderr)
        return 1
