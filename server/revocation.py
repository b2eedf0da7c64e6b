"""Revoking a user now, on every process: their open sockets closed, their old tokens
refused.

A signed token is good until its ``exp``. Revoking a user (``POST
/api/revocations/{user}``, ``palimpsest revoke USER``) records the whole second from
which their tokens count again (now, rounded up, plus the LEEWAY a token's ``iat`` is
verified with: an issuer whose clock is fast mints tokens that say they were issued up
to that much later than they were): a token of theirs issued before it
(its ``iat``), or one that says nothing of when it was issued, is refused (401, close
4401) from then on, while a token issued after it works. So a user whose identities
carry no ``iat`` (an app's own sessions, unless its ``authenticate`` says when each
began) stays shut out, whatever they sign in with, until the revocation is lifted: their
refusal says to ask an administrator, not to sign in again. Every connection of theirs open
with such a token is closed with 4401 and a reason that says so (``/ws``, and the
socket of ``/hocuspocus`` that carries one of their documents); a changefeed stream of
theirs ends at its next heartbeat. Lifting it (``DELETE``, ``palimpsest revoke --lift``)
lets their old tokens in again, until they expire.

The store is the truth (``server.store.revocations``): every process loads the revoked
users when it starts and reads them again every :data:`REFRESH_SECONDS` (what a
``palimpsest revoke`` run beside the server wrote, or a fan-out message that was lost),
and keeps them in memory: the check on every request reads no store. With fan-out, a
revocation reaches the other processes at once (``server.fanout``, a message on the
channel ``PREFIX:!revoked``, which no document name can be), and they close their own
connections of that user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import closes
from .auth.identity import LEEWAY, Identity, user_name
from .errors import AuthError, BadRequest, Forbidden, NotFound, StoreError
from .extensions import Client, Extension
from .lifecycle import Service, cancel_and_wait
from .store.base import EventStore
from .store.revocations import Revoked
from .util import iso

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("palimpsest.revocation")

#: seconds between two reads of the revoked users from the store
REFRESH_SECONDS = 5.0
#: how the reason of a close (4401) or a refusal for a revoked user begins
#: (closes.cause_of_code tells it from an expired token's by these words)
REVOKED = closes.REVOKED


def revoked_since(now: float | None = None) -> int:
    """The whole second from which a revocation made now lets tokens in again: LEEWAY
    seconds after the second that follows now. A token is verified with LEEWAY (its
    issuer's clock may run that far ahead of ours), so one minted just before the
    revocation may say it was issued up to LEEWAY later (``iat``): it must be refused as
    well, and so is one issued in that span after the revocation; the user is given a
    token issued after it. The row stored says this second: every process, and a
    ``palimpsest revoke`` beside them, refuses the same tokens."""
    return int(time.time() if now is None else now) + 1 + LEEWAY


#: what may be revoked: any name a token's sub could be (and a few more, which no token
#: can be, and so are harmless), bounded, and storable
REVOCABLE_RULE = "1-64 characters, no NUL"


def revocable(user: str) -> bool:
    return 0 < len(user) <= 64 and "\x00" not in user


def refusal(user: str, since: int, identity: Identity | None = None) -> str:
    """Why `identity` (a token of `user`'s) is refused. One that says when it was
    issued (``iat``) is let in again by a new sign-in; one that does not (an app's own
    sessions, a token minted without iat) is refused until the revocation is lifted,
    however often its user signs in: the reason must not tell them to."""
    if identity is not None and identity.iat is None:
        return (
            f"{REVOKED} for {user!r}: ask an administrator (your sign-in does not say when "
            "it began, no iat)"
        )
    return (
        f"{REVOKED} for {user!r} at {iso(since * 1000)}: tokens issued before then are "
        "refused; sign in again for a new one"
    )


class Revocation(Extension, Service):
    """The revoked users of this process (loaded from the store, kept in memory), the
    check every request passes (``Backend.authenticate``) and the admin routes."""

    def setup(self, backend: Backend) -> None:
        self.backend = backend
        #: user -> the second from which their tokens count again
        self.since: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def services(self) -> Sequence[Service]:
        return [self]

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/revocations", self.list_endpoint, methods=["GET"]),
            Route("/api/revocations/{user:path}", self.user_endpoint, methods=["POST", "DELETE"]),
        ]

    async def start(self) -> None:
        try:
            await self.refresh()
        except StoreError as e:  # (the store's own start said it works: read it again soon)
            log.warning("cannot read the revoked users now (%s); retrying", e)
        self._task = asyncio.create_task(self._refresher(), name="revocation-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task, log=log)
            self._task = None

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except StoreError as e:
                log.warning("cannot read the revoked users now: %s", e)

    async def refresh(self) -> None:
        """Take the store's revoked users as they are: a revocation made elsewhere closes
        the connections of its user here, a lifted one is dropped."""
        rows = {r.user: r.since for r in await self.backend.store.revocations().list()}
        for user in set(self.since) - set(rows):
            self.apply(user, None)
        for user, since in rows.items():
            if self.since.get(user) != since:
                self.apply(user, since)

    # --- the check ---------------------------------------------------------------------

    def refused(self, identity: Identity) -> str | None:
        """Why `identity` is refused now (its user revoked after its token was issued, or
        its token says not when), or None."""
        since = self.since.get(identity.user)
        if since is None or (identity.iat is not None and identity.iat >= since):
            return None
        return refusal(identity.user, since, identity)

    def check(self, identity: Identity) -> None:
        reason = self.refused(identity)
        if reason is not None:
            raise AuthError(reason)

    # --- revoking ------------------------------------------------------------------------

    def apply(self, user: str, since: int | None) -> int:
        """Hold `user` revoked from `since` (None: no longer) in this process, and close
        their connections here whose tokens that refuses; how many were closed."""
        if since is None:
            if self.since.pop(user, None) is not None:
                log.info("revocation of %s lifted", user)
            return 0
        self.since[user] = since
        closed = 0
        for room in list(self.backend.rooms.loaded.values()):
            for peer in list(room.peers.values()):
                client = getattr(peer, "client", None)
                identity = client.identity if isinstance(client, Client) else None
                if peer.actor != user or (identity is not None and self.refused(identity) is None):
                    continue
                peer.close(AuthError.close_code, refusal(user, since, identity))
                closed += 1
        log.info("%s revoked from %s: %d connections closed here", user, iso(since * 1000),
                 closed)  # fmt: skip
        return closed

    async def revoke(self, user: str, by: str) -> tuple[Revoked, int]:
        """Revoke `user` now, everywhere: (the row stored, connections closed here)."""
        row = Revoked(user, revoked_since(), by, int(time.time() * 1000))
        await self.backend.store.revocations().put(row)
        closed = self.apply(user, row.since)
        self._tell_others(user, row.since, by)
        return row, closed

    async def lift(self, user: str, by: str) -> bool:
        """Let `user`'s tokens in again; False when they were not revoked."""
        removed = await self.backend.store.revocations().remove(user)
        self.apply(user, None)
        self._tell_others(user, None, by)
        return removed

    def _tell_others(self, user: str, since: int | None, by: str) -> None:
        from .fanout import Fanout

        fanout = self.backend.extension(Fanout)
        if fanout is not None:
            fanout.publish_revocation(user, since, by)

    # --- HTTP ------------------------------------------------------------------------------

    async def _operator(self, request: Request) -> Identity:
        """An admin of every document: a revocation shuts a user out of every one."""
        identity = await self.backend.authenticate(request, None, "admin")
        if "*" not in identity.docs:
            raise Forbidden(
                "a revocation shuts a user out of every document: it needs an admin token "
                'for every document (docs ["*"])'
            )
        return identity

    @staticmethod
    def _user(request: Request) -> str:
        user = user_name(str(request.path_params["user"]))  # as identities name users
        if not revocable(user):
            raise BadRequest(f"a user to revoke is {REVOCABLE_RULE}")
        return user

    async def user_endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            return await self.lift_endpoint(request)
        return await self.revoke_endpoint(request)

    async def list_endpoint(self, request: Request) -> Response:
        await self._operator(request)
        rows = await self.backend.store.revocations().list()
        return JSONResponse({"revoked": [revoked_json(r) for r in rows]})

    async def revoke_endpoint(self, request: Request) -> Response:
        identity = await self._operator(request)
        row, closed = await self.revoke(self._user(request), identity.user)
        return JSONResponse({**revoked_json(row), "closed": closed})

    async def lift_endpoint(self, request: Request) -> Response:
        identity = await self._operator(request)
        user = self._user(request)
        if not await self.lift(user, identity.user):
            raise NotFound(f"user {user!r} is not revoked")
        return JSONResponse({"user": user, "revoked": False})


def revoked_json(row: Revoked) -> dict[str, object]:
    return {
        "user": row.user,
        "revoked": True,
        # tokens issued at or after this are accepted
        "since": iso(row.since * 1000),
        "by": row.by,
        "at": iso(row.ts),
    }


async def revoke_in_store(store: EventStore, user: str, by: str) -> Revoked:
    """Revoke `user` now in `store` alone (for tools that revoke without serving:
    ``palimpsest revoke``; the servers learn of it from the fan-out or the store)."""
    row = Revoked(user, revoked_since(), by, int(time.time() * 1000))
    await store.revocations().put(row)
    return row


__all__ = [
    "REVOCABLE_RULE",
    "REVOKED",
    "Revocation",
    "refusal",
    "revocable",
    "revoke_in_store",
    "revoked_json",
]
