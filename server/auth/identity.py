"""Who is asking and what they may do: identities and the one authorization rule.

Extensions say who is asking (``Extension.authenticate`` returns an :class:`Identity`);
the core then decides with :func:`authorize` whether that identity may do what it asks
on the document: its ``docs`` patterns must grant the document and its role must rank at
least as high as the operation needs (read < edit < write < admin). ``edit`` is a
collaborator typing: it edits and undoes its own changes, but the history writes that
change others' work (restore, revert, PUT text) need ``write``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

from ..errors import AuthError, Forbidden
from ..names import NAME_CHARS
from ..store.doc_pages import NameRange

#: seconds of clock skew tolerated on the exp / nbf / iat of a token this server verifies
#: (its issuer's clock may run ahead of ours): such a session ends that long after exp
LEEWAY = 30
#: how often an open session (a websocket, a Hocuspocus document) reads its expiry
#: against the wall clock again, in seconds: its timer runs on the monotonic clock, so a
#: wall clock stepped forward past exp (NTP, a VM restored) ends it within this
EXPIRY_RECHECK = 30.0
ROLES = ("read", "edit", "write", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
#: Unicode categories a user name may not hold: controls (C0 and C1: U+0085 ends a line
#: in some readers), format characters (bidi overrides such as U+202E make "ecila" read
#: as "alice"; zero-width spaces hide), line and paragraph separators, private use and
#: surrogates
_NOT_IN_NAMES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs"})
#: format characters that names need all the same: the zero-width joiner and non-joiner
#: (emoji sequences such as 👩‍💻, Persian and Indic spelling) and the tag characters of
#: subdivision flags (🏴 + tags)
_FORMAT_IN_NAMES = frozenset({"\u200c", "\u200d", *map(chr, range(0xE0020, 0xE0080))})
USER_NAME_RULE = (
    "1-64 printable characters (code points, after Unicode normal form C), no space at "
    "either end (no control or format characters: no bidi overrides, no zero-width "
    "spaces; zero-width joiners and flag tags are fine)"
)


def user_name(name: str) -> str:
    """`name` as a user is named everywhere: in Unicode normal form C, so that a name
    typed with a precomposed letter (é, U+00E9) and one typed with a combining mark (e +
    U+0301) are one user, not two that look identical. Applied where a name enters (an
    Identity, ?actor= filters, a revert's actor, the revocation and CLI arguments);
    actors already stored in another form stay as they are."""
    return unicodedata.normalize("NFC", name)


def valid_user_name(name: object) -> TypeGuard[str]:
    """Whether `name` may be a user (an actor of the log, shown in the history and on
    cursors): :data:`USER_NAME_RULE`."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 64
        and not name[0].isspace()
        and not name[-1].isspace()
        and not any(
            unicodedata.category(c) in _NOT_IN_NAMES and c not in _FORMAT_IN_NAMES for c in name
        )
    )


def name_refused(name: object) -> AuthError:
    """The refusal of a user name that is not :func:`valid_user_name`, saying what came:
    its length in code points when that is what is wrong, else the name (escaped)."""
    if isinstance(name, str) and len(name) > 64:
        got = f"{len(name)} code points"
    else:
        got = repr(name[:80] if isinstance(name, str) else name)
    return AuthError(f"user name must be {USER_NAME_RULE}; got {got}")


def wall() -> float:
    """The wall clock (Unix seconds) that sessions' expiry is read by: time.time, a
    function of its own so that tests can step it as NTP would."""
    return time.time()


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated user: the actor of every event they make, their role
    (read | edit | write | admin) and the documents they may open (names or glob patterns).
    `user` is taken to NFC (:func:`user_name`) whatever form it is given in. An invalid
    user name or role raises ValueError (a bug of the caller; not an AuthError)."""

    user: str
    role: str
    docs: tuple[str, ...] = ("*",)
    #: when the session expires (Unix seconds): refused from then on, its sockets closed
    #: with 4401 (plus `leeway`); None = never (open mode)
    exp: float | None = None
    #: when the session began (a token's ``iat``, Unix seconds); None = not said (open
    #: mode, a token without iat, an app that does not say). A revoked user's identities
    #: issued before the revocation, or that do not say, are refused (server.revocation)
    iat: float | None = None
    #: seconds the session is still served past `exp`: the clock skew tolerated when
    #: the server verified a token minted elsewhere (LEEWAY for JWTAuth's); an app's own
    #: identity expires at its exp
    leeway: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.user, str):  # one user whatever the normal form it came in
            object.__setattr__(self, "user", user_name(self.user))
        # ValueError, not AuthError: an invalid Identity is a bug of the code that made
        # it (an app's authenticate: 500 ExtensionFailed, server.dispatch), not bad
        # credentials (401); what is made from credentials is checked before
        # (identity_from_claims, open_identity)
        if not valid_user_name(self.user):
            raise ValueError(f"Identity: {name_refused(self.user)}")
        if self.role not in RANK:
            raise ValueError(f"Identity: role must be one of {', '.join(ROLES)}; got {self.role!r}")
        if isinstance(self.docs, str):  # a lone pattern, not its characters
            object.__setattr__(self, "docs", (self.docs,))

    @property
    def can_write(self) -> bool:
        """Whether its edits over a websocket (and its own undo/redo) are accepted: the
        ``edit`` role and up. The history writes that change others' work (restore,
        revert, PUT text) ask :func:`authorize` for ``write`` instead."""
        return RANK.get(self.role, -1) >= RANK["edit"]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """Who this is as its token defines it: the user and the documents it may open.
        Tenants that share a signing secret may each have an ``alice``; their tokens'
        ``docs`` tell them apart, so what is counted per identity (the creation quota)
        is keyed by this, never by the name alone."""
        return self.user, tuple(sorted(set(self.docs)))

    def seconds_left(self) -> float | None:
        """Until the session ends: its exp plus the leeway its verification allowed
        (a websocket, a Hocuspocus document and a changefeed stream end then); None for
        identities without expiry (open mode)."""
        return None if self.exp is None else max(0.0, self.exp + self.leeway - wall())

    def expired(self) -> bool:
        """Whether the session has ended by the wall clock now (seconds_left is 0)."""
        return self.exp is not None and wall() >= self.exp + self.leeway


class ExpiryWatch:
    """Calls `expired` once `identity`'s session ends (exp plus leeway, by the wall
    clock): a timer on the event loop's monotonic clock, set for the time left or
    EXPIRY_RECHECK if sooner, that reads the wall clock again when it fires. (Set once
    for the time left at the start, it closed a socket at exp by the wall clock of then:
    a clock stepped forward a day kept an expired token's socket open.) Identities
    without expiry are not watched."""

    def __init__(self, identity: Identity, expired: Callable[[], None]) -> None:
        self._identity = identity
        self._expired = expired
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        left = self._identity.seconds_left()
        if left is not None:
            self._handle = asyncio.get_running_loop().call_later(
                min(left, EXPIRY_RECHECK), self._check
            )

    def _check(self) -> None:
        self._handle = None
        if self._identity.expired():
            self._expired()
        else:
            self._arm()

    def cancel(self) -> None:
        """Stop watching, and let go of `expired` (a connection's bound method: kept,
        it made a cycle that held a closed connection until a full collection)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._expired = _nothing


def _nothing() -> None:
    pass


def may_open(identity: Identity, doc: str) -> bool:
    """Whether the identity's ``docs`` patterns grant `doc` (case-sensitive globs)."""
    return any(fnmatch.fnmatchcase(doc, pattern) for pattern in identity.docs)


def granted_ranges(identity: Identity, prefix: str = "") -> tuple[NameRange, ...]:
    """The names the identity's ``docs`` patterns grant that start with `prefix`, as
    ranges a store searches in its name index (``EventStore.doc_page``): the rule of
    :func:`may_open`, pushed into SQL.

    A pattern's literal start (before its first ``*``, ``?`` or ``[``) is the range; a
    glob of ``*`` and ``?`` narrows it in the store too, unless it is that start + ``*``.
    A pattern with a ``[...]`` set is its range alone, marked approximate: the caller
    then checks :func:`may_open` on what the store returns. A pattern whose literal start holds a
    character no name may hold grants nothing."""
    ranges: set[NameRange] = set()
    for pattern in identity.docs:
        cut = next((i for i, c in enumerate(pattern) if c in "*?["), len(pattern))
        start = pattern[:cut]
        if any(c not in NAME_CHARS for c in start):
            continue
        if cut == len(pattern):  # a name
            if start.startswith(prefix):
                ranges.add(NameRange(start, exact=True))
            continue
        if start.startswith(prefix):
            narrowed = start
        elif prefix.startswith(start):
            narrowed = prefix
        else:
            continue
        if "[" in pattern:  # a set: the store gives the range, the caller checks
            ranges.add(NameRange(narrowed, approximate=True))
        else:
            ranges.add(NameRange(narrowed, glob=None if pattern == start + "*" else pattern))
    # a range held whole by another one without a glob adds nothing
    wide = {r.prefix for r in ranges if not r.exact and r.glob is None and not r.approximate}

    def held(r: NameRange) -> bool:
        return any(
            r.prefix.startswith(w) and (w != r.prefix or r.exact or r.glob is not None)
            for w in wide
        )

    return tuple(
        sorted((r for r in ranges if not held(r)), key=lambda r: (r.prefix, r.exact, r.glob or ""))
    )


def authorize(identity: Identity, doc: str | None, need: str) -> None:
    """Raise Forbidden unless `identity` may do `need` (read|edit|write|admin) on `doc`.

    `doc` None is an operation on no single document (e.g. the document list)."""
    if need not in RANK:
        raise ValueError(f"unknown permission {need!r}: expected one of {ROLES}")
    if doc is not None and not may_open(identity, doc):
        raise Forbidden(f"this token does not grant document {doc!r}")
    if RANK.get(identity.role, -1) < RANK[need]:
        raise Forbidden(f"role {identity.role!r} may not do this: it needs role {need!r}")


def open_identity(user: str | None) -> Identity:
    """Open development mode: whoever you say you are, with every right."""
    if user is None or user == "":
        return Identity("anonymous", "admin")
    user = user_name(user)
    if not valid_user_name(user):
        raise name_refused(user)
    return Identity(user, "admin")
