"""Signed tokens (JWT) and the limits that protect a server on the open internet.

Auth. With ``--jwt-secret`` (HS256), ``--jwt-public-key`` (a PEM file: RS256 for an RSA
key, ES256 for an EC P-256 key) and/or ``--jwt-jwks-url`` (an identity provider's key
set, kept up to date: server.auth.jwks), every websocket and HTTP request needs a token:
``?token=`` on the websocket URL (what y-websocket's ``params`` sends), ``Authorization:
Bearer`` on HTTP. Claims::

    sub   the user (1-64 printable characters, no space at either end, no control or
          format characters), taken to Unicode NFC: the actor of every event it makes
    docs  the documents it may open: a list of names or glob patterns ("team-*", "*"),
          or one string of them separated by spaces (or tabs), as OAuth's scope
          ("team-* notes"); a blank one is refused
    role  read | edit | write | admin, or a list (as identity providers write roles):
          the highest of those four it holds, its other entries ignored
    exp   expiry (required; a small leeway absorbs clock skew)
    aud   with ``--jwt-audience`` set: required, naming one of its values
    iss   with ``--jwt-issuer`` set: required, one of its values

Keys (rotation). Each setting takes a comma-separated list, each entry optionally named
``KID:value`` (:func:`parse_keys`); the first secret is the current one, which
``palimpsest token`` signs with. A token whose header names a ``kid`` this server has is
verified with that key alone; one that names no kid is tried against every key of its
algorithm, in order; one naming a kid no key here has (after the JWKS, if any, was
fetched again) against the keys configured without a kid, and refused as "not one of the
server's keys" when there are none, whatever its algorithm (a kid is judged before the
algorithm: after a rotation the new key is the news).

A missing, damaged, expired or wrongly signed token is an AuthError (close 4401,
HTTP 401); a valid token for another document or a role below what the operation needs
is Forbidden (close 4403, HTTP 403). In JWT mode ``?user=`` is ignored. With neither
setting the server runs open (``?user=``, every right) and says so loudly.

Both modes are extensions (:class:`JWTAuth`, :class:`OpenAccess`): their ``authenticate``
reads the credentials of a request or a websocket. An app that embeds Palimpsest with
its own authentication lists its own extension instead (docs/extending.md).

Limits (see :class:`Limits`, an extension too): connections per client address and the
size of a document. Frame size, events per second, awareness size and the send queue
are enforced by ``server.routes.ws`` from the same settings.
"""

from __future__ import annotations

import json
import logging
import re
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from ..errors import AuthError
from ..extensions import Extension
from ..lifecycle import Service
from ..settings import Settings
from ..util import iso, without_password
from .identity import (
    LEEWAY,
    RANK,
    ROLES,
    USER_NAME_RULE,
    Identity,
    authorize,
    may_open,
    user_name,
    valid_user_name,
)
from .jwks import JWKS
from .keys import (
    VerificationKey,
    describe_source,
    load_public_key,
    refuse_url,
    verification_key,
)

if TYPE_CHECKING:
    # (PyJWT is imported where a token is read or made: a server in open mode that is
    # given none never needs it, and it costs 0.1 s at start-up)
    import jwt

log = logging.getLogger("palimpsest.auth")

#: an HS256 secret shorter than the hash is weak (RFC 7518 section 3.2)
MIN_SECRET_BYTES = 32
_RANK = RANK
_MAX_PATTERNS = 256
#: what separates the patterns of a ``docs`` claim given as one string
_DOCS_SEPARATOR = re.compile(r"[ \t]+")
#: tokens may not live longer than this (an exp of 10**30 is a token that never expires)
MAX_TOKEN_LIFETIME = 10 * 366 * 86400

#: what the open mode's extension logs at start (the log line names its level and logger;
#: `serve` prints it after "palimpsest: WARNING: " when the log level hides it)
OPEN_MODE_WARNING = (
    "no --jwt-secret / PALIMPSEST_JWT_SECRET and no --jwt-public-key: "
    "the server is OPEN: anyone who can reach it may read, edit and delete every document, "
    "as any user they name with ?user=. Never expose it like this."
)


# --- keys ----------------------------------------------------------------------------------

#: a key id as ``KID:value`` names it (what a token's ``kid`` header then says)
KID_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def parse_keys(value: str) -> list[tuple[str | None, str]]:
    """(kid, value) for each entry of a comma-separated list of secrets or key files, as
    PALIMPSEST_JWT_SECRET / --jwt-secret and PALIMPSEST_JWT_PUBLIC_KEY / --jwt-public-key
    give them: ``KID:value`` names the key (KID: :data:`KID_RULE`), a value alone has no
    kid. A secret therefore holds no comma, and none that starts with what reads as
    ``KID:`` (hex or base64 secrets, as `openssl rand` makes them, never do)."""
    out: list[tuple[str | None, str]] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        kid, sep, rest = entry.partition(":")
        if sep and KID_RULE.fullmatch(kid) and rest.strip():
            out.append((kid, rest.strip()))
        else:
            out.append((None, entry))
    return out


def split_list(value: str | None) -> list[str]:
    """The entries of a comma-separated setting (PALIMPSEST_JWT_AUDIENCE, …)."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _named(kid: str | None) -> str:
    return f" {kid!r}" if kid is not None else ""


# --- auth ----------------------------------------------------------------------------------


def token_of(conn: HTTPConnection) -> str | None:
    """The token of a request: ``Authorization: Bearer`` (HTTP), else ``?token=`` (what
    y-websocket's ``params`` sends on the websocket URL)."""
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    token = conn.query_params.get("token")
    if token is not None and token[:7].lower() == "bearer ":
        # the header's word copied into y-websocket's params ({token: `Bearer ${t}`}): no
        # JWT begins so, and "damaged or not a token" left the developer guessing
        return token[7:].strip()
    return token


class JWTAuth(Extension):
    """Identities from signed tokens (HS256 with a secret; RS256/ES256 with a public key).

    A request without a token is not this extension's (another one may accept it); when
    none does, it is refused with 401 / close 4401. A bad token is refused here."""

    credentials = "a token is required (?token= on the websocket, Authorization: Bearer on HTTP)"
    reads_cookies = False  # the token's holder hands it over, the browser never adds it

    def __init__(
        self,
        secret: str | None = None,
        public_key: Any = None,
        *,
        public_keys: Sequence[tuple[str | None, Any]] = (),
        audience: Sequence[str] = (),
        issuer: Sequence[str] = (),
        jwks: JWKS | None = None,
    ) -> None:
        """`secret`: one HS256 secret, or several as ``palimpsest serve`` takes them
        (comma-separated, each ``KID:secret`` or the secret alone; the first is current).
        `public_key`: one public key (no kid); `public_keys`: (kid or None, key) pairs.
        `jwks`: an identity provider's key set (server.auth.jwks), fetched when the app
        starts (it is this extension's service) and kept up to date.
        `audience`, `issuer`: when given, a token must carry an ``aud`` naming one of
        them, an ``iss`` that is one of them (else neither is checked)."""
        self.audience = list(audience)
        self.issuer = list(issuer)
        self.jwks = jwks
        keys = [(kid, value) for kid, value in parse_keys(secret or "")]
        pairs = [*([(None, public_key)] if public_key is not None else []), *public_keys]
        if not keys and not pairs and jwks is None:
            raise ValueError("JWT mode needs a secret, a public key or a JWKS URL")
        self._keys: list[VerificationKey] = []
        for kid, value in keys:
            if len(value.encode()) < MIN_SECRET_BYTES:
                # a short HMAC secret is brute-forced offline from any one token
                raise ValueError(
                    f"the JWT secret{_named(kid)} is {len(value.encode())} bytes long: use at "
                    f"least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)"
                )
            self._add(VerificationKey("HS256", value, kid))
        for kid, key in pairs:
            # RSA of at least 2048 bits, EC P-256 (server.auth.keys), as from a JWKS
            self._add(verification_key(key, kid, f"the JWT public key{_named(kid)}"))

    def _add(self, key: VerificationKey) -> None:
        if key.kid is not None and any(k.kid == key.kid for k in self._keys):
            raise ValueError(f"two JWT keys are named {key.kid!r}: a kid names one key")
        self._keys.append(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> JWTAuth:
        for entry in (settings.jwt_public_key or "").split(","):
            refuse_url(entry)
        public = []
        for kid, path in parse_keys(settings.jwt_public_key or ""):
            key = load_public_key(path)
            # (checked here to name its file; JWTAuth checks every key it is given)
            verification_key(key, kid, f"the JWT public key {describe_source(path)}")
            public.append((kid, key))
        jwks = (
            JWKS(
                settings.jwt_jwks_url,
                refresh_seconds=settings.jwt_jwks_refresh_seconds,
                fetch_seconds=settings.jwt_jwks_fetch_seconds,
                unknown_kid_seconds=settings.jwt_jwks_unknown_kid_seconds,
            )
            if settings.jwt_jwks_url
            else None
        )
        auth = cls(
            settings.jwt_secret,
            public_keys=public,
            audience=split_list(settings.jwt_audience),
            issuer=split_list(settings.jwt_issuer),
            jwks=jwks,
        )
        log.info("auth: signed tokens required (%s)", auth.describe())
        return auth

    def services(self) -> Sequence[Service]:
        return [self.jwks] if self.jwks is not None else []

    @property
    def keys(self) -> list[VerificationKey]:
        """The keys tokens are verified with, in the order they are tried: the
        configured ones, then the JWKS's (one whose kid a configured key has is left
        out: a kid names one key)."""
        if self.jwks is None:
            return list(self._keys)
        kids = {k.kid for k in self._keys if k.kid is not None}
        return [*self._keys, *(k for k in self.jwks.keys if k.kid not in kids)]

    def describe(self) -> str:
        """The keys, for the start-up line: "HS256" for one secret without a kid, else
        each algorithm with its kids ("HS256 2025-06, HS256 (no kid)"), and the JWKS."""
        jwks = [f"JWKS {self.jwks.where}"] if self.jwks is not None else []
        if len(self._keys) == 1 and self._keys[0].kid is None and not jwks:
            return self._keys[0].alg
        keys = [f"{k.alg} {k.kid if k.kid else '(no kid)'}" for k in self._keys]
        return ", ".join(keys + jwks)

    @property
    def algorithms(self) -> list[str]:
        return sorted({k.alg for k in self.keys})

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        token = token_of(conn)
        if not token:
            return None
        note = None
        if self.jwks is not None:
            kid = _kid_of(token)
            if kid is not None and all(k.kid != kid for k in self.keys):
                # the provider may have rotated since the last fetch (rate-limited)
                note = await self.jwks.look_for(kid)
        try:
            return self.identify(token)
        except AuthError as e:
            if not note:
                raise
            # the kid may be the provider's newest: say that the set could not be had, or
            # when it will be fetched again, not only that the key is unknown (the
            # operator's clue to a rotation blocked, the client's to retry)
            raise AuthError(f"{e}; {note}") from e

    def identify(self, token: str | None) -> Identity:
        """The identity a token proves (``?user=`` means nothing in this mode)."""
        if not token:
            raise AuthError(
                "a token is required: ?token= on the websocket, Authorization: Bearer on HTTP"
            )
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as e:
            raise damaged(e) from e
        alg, kid = header.get("alg"), header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("token header 'kid' must be a string")
        # the key is chosen by the server's configuration, never by the token: a token
        # cannot make us verify an RS256 key as an HMAC secret (_decode verifies with
        # the key's own algorithm). A kid no key has is judged by its kid first: after
        # a rotation the key is the news, not its algorithm (an ES256 token of a new
        # key was refused as "algorithm 'ES256' is not accepted" while the set held only
        # RS256 keys)
        known = kid is None or any(k.kid == kid for k in self.keys)
        if known and (not isinstance(alg, str) or alg not in self.algorithms):
            raise AuthError(f"token algorithm {alg!r} is not accepted here ({self.algorithms})")
        candidates = self._candidates(alg if isinstance(alg, str) else "", kid)
        for key in candidates[:-1]:
            try:
                return identity_from_claims(self._decode(token, key))
            except jwt.InvalidSignatureError:
                continue  # (signed with another of the keys, perhaps)
        last = candidates[-1]
        try:
            return identity_from_claims(self._decode(token, last))
        except jwt.InvalidSignatureError as e:
            if kid is not None and last.kid == kid:
                raise AuthError(f"token signature does not verify with key {kid!r}") from e
            if kid is not None:
                raise AuthError(
                    f"token signature does not verify (its key id {kid[:64]!r} is none of "
                    "the server's: tried the keys without a kid)"
                ) from e
            raise AuthError("token signature does not verify") from e

    def _candidates(self, alg: str, kid: str | None) -> list[VerificationKey]:
        """The keys a token of `alg` naming `kid` is tried with: the key of that kid
        alone; a token without a kid, every key of `alg`, in order; one naming a kid no
        key here has, the keys of `alg` configured without a kid (a key file the
        operator did not name: the kid may be the issuer's name for it), and when there
        are none it is refused, saying so: a kid names one key, and during a rotation
        "not one of the server's keys" is what the operator needs to read."""
        keys = self.keys
        if kid is None:
            return [k for k in keys if k.alg == alg]
        named = [k for k in keys if k.kid == kid]
        if named:
            if named[0].alg != alg:
                raise AuthError(f"token names key {kid!r}, which is not an {alg} key")
            return named
        unnamed = [k for k in keys if k.alg == alg and k.kid is None]
        if not unnamed:
            listed = ", ".join(f"{k.alg} {k.kid or '(no kid)'}" for k in keys)
            raise AuthError(f"token key id {kid[:64]!r} is not one of the server's keys ({listed})")
        return unnamed

    def _decode(self, token: str, key: VerificationKey) -> dict[str, Any]:
        """The claims of `token` verified with `key`; InvalidSignatureError goes on up
        (another key may verify it), every other refusal as an AuthError."""
        import jwt
        from jwt.warnings import InsecureKeyLengthWarning

        try:
            with warnings.catch_warnings():
                # a short secret was reported once at start-up, not on every token
                warnings.simplefilter("ignore", InsecureKeyLengthWarning)
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.alg],
                    leeway=LEEWAY,
                    audience=self.audience or None,
                    issuer=self.issuer or None,
                    options={
                        "require": ["exp", "sub"]
                        + (["aud"] if self.audience else [])
                        + (["iss"] if self.issuer else []),
                        # (unset: a token's aud is not this server's business)
                        "verify_aud": bool(self.audience),
                        "verify_iss": bool(self.issuer),
                    },
                )
                _times_are_numbers(claims)
                return claims
        except jwt.InvalidSignatureError:
            raise
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError,
                jwt.DecodeError) as e:  # fmt: skip
            # PyJWT reads exp, iat and nbf with int(): "1796600000" passed, true was 1970
            # ("token expired"); a time that is not a number is refused as such (the
            # signature was checked before these claims: a damaged token is said so)
            _times_are_numbers(_unverified_claims(token))
            if isinstance(e, jwt.ExpiredSignatureError):
                raise AuthError(f"token expired ({_server_time()})") from e
            if isinstance(e, jwt.ImmatureSignatureError):
                # iat or nbf later than this server's clock (+ LEEWAY): the issuer's clock
                # is ahead of ours, or ours behind
                raise AuthError(f"invalid token: {e} ({_server_time()})") from e
            if isinstance(e, jwt.DecodeError):
                raise damaged(e) from e
            raise AuthError(f"invalid token: {e}") from e
        except jwt.InvalidAudienceError as e:
            raise AuthError(
                f"token audience (aud) is not this server's: it must name one of {self.audience}"
            ) from e
        except jwt.InvalidIssuerError as e:
            raise AuthError(f"token issuer (iss) must be one of {self.issuer}") from e
        except jwt.InvalidTokenError as e:
            raise AuthError(f"invalid token: {e}") from e


#: the time claims of a token, each a number of seconds since 1970 if it is there
_TIMES = ("exp", "iat", "nbf")


def _times_are_numbers(claims: Any) -> None:
    """Refuse a token whose exp, iat or nbf is there but not a JSON number (a string, a
    boolean): docs/auth.md says a number, and PyJWT took "1796600000" for one."""
    if not isinstance(claims, dict):
        return
    for name in _TIMES:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AuthError(
                f"token claim {name!r} must be a number of seconds since 1970, "
                f"not {json.dumps(value)[:40]}"
            )


def _unverified_claims(token: str) -> Any:
    """The claims of `token` as written, None if they cannot be read."""
    import jwt

    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None


def _kid_of(token: str) -> str | None:
    """The kid a token's header names, if it is readable and names one (a token that
    is not is refused by identify, which says why)."""
    import jwt

    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        return None
    return kid if isinstance(kid, str) else None


def _server_time() -> str:
    """This server's clock, said with a refusal by time, so that skew between the
    issuer's clock and ours can be told from the message."""
    return f"this server's time is {iso(int(time.time() * 1000))}, leeway {LEEWAY} s"


#: the reason a token that cannot be decoded is refused with: the decoder's own words
#: ("Invalid header string: 'utf-8' codec can't decode byte 0xb7 in position 1") went
#: to the refused person's page, and are only logged
DAMAGED = "the token is damaged or not a token"


def damaged(e: jwt.InvalidTokenError) -> AuthError:
    """The refusal of a token that cannot be decoded (cut short when copied, mistyped, or
    no JWT at all), its decoder's detail logged for whoever runs the server."""
    log.info("auth: refused a token that cannot be decoded: %s", e)
    return AuthError(DAMAGED)


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    sub = claims.get("sub")
    if isinstance(sub, str):
        sub = user_name(sub)  # é and e + U+0301 are one user
    if not valid_user_name(sub):
        raise AuthError(f"token claim 'sub' must be a user name of {USER_NAME_RULE}")
    role = claims.get("role")
    if isinstance(role, list):
        # as providers write roles (Keycloak's, with other applications' among them):
        # the highest of ours it holds
        ours = [r for r in role if isinstance(r, str) and r in _RANK]
        role = max(ours, key=_RANK.__getitem__) if ours else role
    if not isinstance(role, str) or role not in _RANK:
        raise AuthError(
            f"token claim 'role' must be one of {', '.join(ROLES)}, or a list holding one; "
            f"got {repr(role)[:200]}"
        )
    docs = claims.get("docs", [])
    if isinstance(docs, str):
        # separated by spaces (or tabs), as OAuth's scope: "team-* notes" (a name holds
        # neither). Not str.split(): it splits on any Unicode whitespace too, so that
        # "x\u00a0alpha" (a no-break space) granted alpha
        docs = [d for d in _DOCS_SEPARATOR.split(docs) if d]
        if not docs:
            # it granted nothing, and every document was refused (403) without a word
            raise AuthError(
                "token claim 'docs' is blank: name the documents or glob patterns it grants, "
                'separated by spaces ("team-* notes"), or give a list'
            )
    if (
        not isinstance(docs, list)
        or len(docs) > _MAX_PATTERNS
        or not all(isinstance(d, str) and 0 < len(d) <= 256 for d in docs)
    ):
        raise AuthError("token claim 'docs' must be a list of document names or glob patterns")
    exp = claims.get("exp")
    if (
        isinstance(exp, bool)
        or not isinstance(exp, int | float)
        or not 0 < exp < time.time() + MAX_TOKEN_LIFETIME
    ):
        raise AuthError(
            "token claim 'exp' must be a number of seconds since 1970, "
            f"at most {MAX_TOKEN_LIFETIME // 86400} days ahead"
        )
    iat = claims.get("iat")  # (_decode checked that it is a number, if there is one)
    issued = float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None
    # verified with LEEWAY (its issuer's clock may run ahead): the session keeps it
    return Identity(sub, str(role), tuple(docs), float(exp), issued, leeway=LEEWAY)


def mint(
    secret_or_key: Any,
    user: str,
    role: str,
    docs: list[str],
    ttl: float = 3600,
    algorithm: str = "HS256",
    now: float | None = None,
    *,
    kid: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A signed token (for development, tests and the ``palimpsest token`` command);
    `kid` names the key in its header; `audience`, `issuer`: its aud and iss claims."""
    import jwt
    from jwt.warnings import InsecureKeyLengthWarning

    if role not in _RANK:
        raise ValueError(f"role must be one of {ROLES}")
    t = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": user, "role": role, "docs": list(docs), "iat": t, "exp": t + int(ttl)}  # fmt: skip
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(
            claims, secret_or_key, algorithm=algorithm, headers={"kid": kid} if kid else None
        )


def auth_banner(settings: Settings) -> str:
    """One line for start-up: which auth mode the server is in."""
    if settings.signed_tokens:
        secrets = parse_keys(settings.jwt_secret or "")
        current = " (current)" if len(secrets) > 1 else ""
        kinds = [
            "HS256" + (f" {kid}" if kid else "") + (current if i == 0 else "")
            for i, (kid, _secret) in enumerate(secrets)
        ] + [
            f"public key {describe_source(path)}" + (f" ({kid})" if kid else "")
            for kid, path in parse_keys(settings.jwt_public_key or "")
        ]
        if settings.jwt_jwks_url:
            kinds.append(f"JWKS {without_password(settings.jwt_jwks_url)}")
        kinds += [f"aud {v}" for v in split_list(settings.jwt_audience)]
        kinds += [f"iss {v}" for v in split_list(settings.jwt_issuer)]
        return f"palimpsest: auth: signed tokens required ({', '.join(kinds)})"
    return f"palimpsest: WARNING: {OPEN_MODE_WARNING}"


__all__ = [
    "LEEWAY",
    "JWTAuth",
    "OPEN_MODE_WARNING",
    "VerificationKey",
    "auth_banner",
    "authorize",
    "identity_from_claims",
    "may_open",
    "mint",
    "parse_keys",
    "split_list",
    "token_of",
]
