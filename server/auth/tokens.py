"""Signed tokens (JWT) and the limits that protect a server on the open internet.

Auth. With ``--jwt-secret`` (HS256) and/or ``--jwt-public-key`` (a PEM file: RS256 for
an RSA key, ES256 for an EC P-256 key), every websocket and HTTP request needs a token:
``?token=`` on the websocket URL (what y-websocket's ``params`` sends), ``Authorization:
Bearer`` on HTTP. Claims::

    sub   the user (1-64 printable characters, no space at either end, no control or
          format characters): the actor of every event it makes
    docs  the documents it may open: a list of names or glob patterns ("team-*", "*")
    role  read | write | admin
    exp   expiry (required; a small leeway absorbs clock skew)

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

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.warnings import InsecureKeyLengthWarning
from starlette.requests import HTTPConnection

from ..errors import AuthError
from ..extensions import Extension
from ..settings import Settings
from .identity import (
    LEEWAY,
    RANK,
    ROLES,
    USER_NAME_RULE,
    Identity,
    authorize,
    may_open,
    valid_user_name,
)

log = logging.getLogger("palimpsest.auth")

#: an HS256 secret shorter than the hash is weak (RFC 7518 section 3.2)
MIN_SECRET_BYTES = 32
_RANK = RANK
_MAX_PATTERNS = 256
#: tokens may not live longer than this (an exp of 10**30 is a token that never expires)
MAX_TOKEN_LIFETIME = 10 * 366 * 86400

#: what the open mode's extension logs at start (the log line names its level and logger;
#: `serve` prints it after "palimpsest: WARNING: " when the log level hides it)
OPEN_MODE_WARNING = (
    "no --jwt-secret / PALIMPSEST_JWT_SECRET and no --jwt-public-key: "
    "the server is OPEN: anyone who can reach it may read, edit and delete every document, "
    "as any user they name with ?user=. Never expose it like this."
)


# --- auth ----------------------------------------------------------------------------------


def token_of(conn: HTTPConnection) -> str | None:
    """The token of a request: ``Authorization: Bearer`` (HTTP), else ``?token=`` (what
    y-websocket's ``params`` sends on the websocket URL)."""
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return conn.query_params.get("token")


class JWTAuth(Extension):
    """Identities from signed tokens (HS256 with a secret; RS256/ES256 with a public key).

    A request without a token is not this extension's (another one may accept it); when
    none does, it is refused with 401 / close 4401. A bad token is refused here."""

    credentials = "a token is required (?token= on the websocket, Authorization: Bearer on HTTP)"
    reads_cookies = False  # the token's holder hands it over, the browser never adds it

    def __init__(self, secret: str | None = None, public_key: Any = None) -> None:
        if not secret and public_key is None:
            raise ValueError("JWT mode needs a secret or a public key")
        self._keys: dict[str, Any] = {}
        if secret:
            if len(secret.encode()) < MIN_SECRET_BYTES:
                # a short HMAC secret is brute-forced offline from any one token
                raise ValueError(
                    f"the JWT secret is {len(secret.encode())} bytes long: use at least "
                    f"{MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)"
                )
            self._keys["HS256"] = secret
        if isinstance(public_key, rsa.RSAPublicKey):
            self._keys["RS256"] = public_key
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if not isinstance(public_key.curve, ec.SECP256R1):
                raise ValueError(f"ES256 needs a P-256 key, not {public_key.curve.name}")
            self._keys["ES256"] = public_key
        elif public_key is not None:
            raise ValueError(f"unsupported public key type {type(public_key).__name__}")

    @classmethod
    def from_settings(cls, settings: Settings) -> JWTAuth:
        key = load_public_key(settings.jwt_public_key) if settings.jwt_public_key else None
        auth = cls(settings.jwt_secret, key)
        log.info("auth: signed tokens required (%s)", ", ".join(auth.algorithms))
        return auth

    @property
    def algorithms(self) -> list[str]:
        return sorted(self._keys)

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        token = token_of(conn)
        return self.identify(token) if token else None

    def identify(self, token: str | None) -> Identity:
        """The identity a token proves (``?user=`` means nothing in this mode)."""
        if not token:
            raise AuthError(
                "a token is required: ?token= on the websocket, Authorization: Bearer on HTTP"
            )
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as e:
            raise damaged(e) from e
        # the key is chosen by the server's configuration, never by the token: a token
        # cannot make us verify an RS256 key as an HMAC secret
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None or not isinstance(alg, str):
            raise AuthError(f"token algorithm {alg!r} is not accepted here ({self.algorithms})")
        try:
            with warnings.catch_warnings():
                # a short secret was reported once at start-up, not on every token
                warnings.simplefilter("ignore", InsecureKeyLengthWarning)
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    leeway=LEEWAY,
                    options={"require": ["exp", "sub"], "verify_aud": False},
                )
        except jwt.ExpiredSignatureError as e:
            raise AuthError("token expired") from e
        except jwt.InvalidSignatureError as e:
            raise AuthError("token signature does not verify") from e
        except jwt.DecodeError as e:
            raise damaged(e) from e
        except jwt.InvalidTokenError as e:
            raise AuthError(f"invalid token: {e}") from e
        return identity_from_claims(claims)


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
    if not valid_user_name(sub):
        raise AuthError(f"token claim 'sub' must be a user name of {USER_NAME_RULE}")
    role = claims.get("role")
    if not isinstance(role, str) or role not in _RANK:
        raise AuthError(f"token claim 'role' must be one of {', '.join(ROLES)}; got {role!r}")
    docs = claims.get("docs", [])
    if isinstance(docs, str):
        docs = [docs]
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
    return Identity(sub, str(role), tuple(docs), float(exp))


def load_public_key(path: str) -> Any:
    try:
        return load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the JWT public key {path}: {e}") from e


def mint(
    secret_or_key: Any,
    user: str,
    role: str,
    docs: list[str],
    ttl: float = 3600,
    algorithm: str = "HS256",
    now: float | None = None,
) -> str:
    """A signed token (for development, tests and the ``palimpsest token`` command)."""
    if role not in _RANK:
        raise ValueError(f"role must be one of {ROLES}")
    t = int(time.time() if now is None else now)
    claims = {"sub": user, "role": role, "docs": list(docs), "iat": t, "exp": t + int(ttl)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret_or_key, algorithm=algorithm)


def auth_banner(settings: Settings) -> str:
    """One line for start-up: which auth mode the server is in."""
    if settings.jwt_secret or settings.jwt_public_key:
        kinds = (["HS256"] if settings.jwt_secret else []) + (
            [f"public key {settings.jwt_public_key}"] if settings.jwt_public_key else []
        )
        return f"palimpsest: auth: signed tokens required ({', '.join(kinds)})"
    return f"palimpsest: WARNING: {OPEN_MODE_WARNING}"


__all__ = [
    "LEEWAY",
    "JWTAuth",
    "OPEN_MODE_WARNING",
    "auth_banner",
    "authorize",
    "identity_from_claims",
    "may_open",
    "mint",
    "token_of",
]
