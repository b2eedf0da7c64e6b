"""An identity provider's signing keys, fetched from its JWKS URL and kept up to date.

``--jwt-jwks-url`` (PALIMPSEST_JWT_JWKS_URL) names a JSON Web Key Set (RFC 7517), the
``jwks_uri`` of an OpenID provider: Keycloak's ``…/realms/R/protocol/openid-connect/
certs``, Auth0's ``https://TENANT/.well-known/jwks.json``, Okta's ``…/v1/keys``. The set is

- fetched when the server starts: one that cannot be fetched, or that holds no usable
  key, stops the start (``palimpsest: cannot start: …``);
- fetched again every ``refresh_seconds`` (PALIMPSEST_JWT_JWKS_REFRESH_SECONDS, 600), so
  that a key the provider retired stops verifying tokens and one it published starts (a
  key dropped is logged; sessions opened with its tokens are not cut: they last until
  their token's exp, docs/security.md);
- fetched again when a token names a ``kid`` the server does not have (the provider
  rotated and signs with a key published since the last fetch), at most once every
  ``unknown_kid_seconds`` (PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS, 30): a flood of
  tokens with made-up kids costs the provider one request per 30 s, and those tokens
  wait for that one fetch, never for one each; one arriving after it, within the 30 s,
  is refused at once saying when to retry (:meth:`JWKS.look_for`).

A fetch has ``fetch_seconds`` (PALIMPSEST_JWT_JWKS_FETCH_SECONDS, :data:`FETCH_SECONDS`)
in all, from connecting to the last byte: httpx's timeout is per read, and a provider (or
a proxy before it) that sends a byte every few seconds would otherwise hold the fetch,
and every token naming a new kid waiting for it, for as long as it trickles. Past the
deadline the fetch is abandoned (its connection closed) and counts as failed: the next
one, on the timer or for an unknown kid, starts afresh.

A fetch that fails (the provider down or stalled, a damaged answer, a set with no usable
key) keeps the last good set; it is logged once, and once more when fetching works again,
and a token naming a kid the set lacks is refused saying why the set could not be
fetched (:attr:`JWKS.error`). Fetches
run on the event loop with httpx's async client (the name lookup in a thread): nothing
waits for the provider but the requests whose token names an unknown kid.

Usable keys: ``kty`` RSA of at least 2048 bits (RS256) and EC P-256 (ES256), ``use``
absent or ``sig``, ``alg`` absent or matching. Others (``oct``: a shared secret would
let anyone who reads the set mint tokens; RS384, PS256, EdDSA…; encryption keys) are
left out, each said once in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import PalimpsestError
from ..lifecycle import Service, cancel_and_wait
from ..util import without_password
from .keys import VerificationKey, verification_key

if TYPE_CHECKING:
    # (imported where used: a server without a JWKS URL never needs them, and httpx
    # brings rich)
    import httpx

log = logging.getLogger("palimpsest.auth")

#: seconds a fetch of the set may take in all (connect, answer, every byte of it), by
#: default: below the 30 s an authenticate hook may take (HOOK_TIMEOUT_SECONDS), so that a
#: token waiting for a stalled fetch is refused as a 401 saying why, not a 500
FETCH_SECONDS = 5.0
#: the largest JWKS read (a provider's set holds a few keys: a few kB)
MAX_JWKS_BYTES = 1024 * 1024
#: the algorithms a JWKS key may be used for here, by its kty
_ALGS = {"RSA": "RS256", "EC": "ES256"}


class JWKSUnavailable(PalimpsestError):
    """The JWKS could not be fetched, or holds no usable key (at start: the server
    does not start)."""


class JWKS(Service):
    """The keys of one JWKS URL (see the module's docstring). `keys` is the current
    set, empty until :meth:`start`."""

    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float = 600.0,
        unknown_kid_seconds: float = 30.0,
        timeout: float = 10.0,
        fetch_seconds: float = FETCH_SECONDS,
    ) -> None:
        """`timeout`: httpx's, per connect and per read; `fetch_seconds`: the whole
        fetch's (see the module's docstring)."""
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.unknown_kid_seconds = unknown_kid_seconds
        self.timeout = timeout
        self.fetch_seconds = fetch_seconds
        self.keys: tuple[VerificationKey, ...] = ()
        #: observable: fetches made (successful or not), and of those, on unknown kids
        self.fetches = 0
        self.unknown_kid_fetches = 0
        self._task: asyncio.Task[None] | None = None
        self._fetching: asyncio.Task[bool] | None = None
        self._last_unknown_kid = -math.inf
        #: why the last fetch failed ("cannot fetch URL: …"); None once one worked
        self.error: str | None = None
        self._ignored: set[str] = set()

    @property
    def where(self) -> str:
        """The URL as it is logged (a password in it written ***)."""
        return without_password(self.url)

    @property
    def kids(self) -> list[str]:
        return [k.kid for k in self.keys if k.kid is not None]

    async def start(self) -> None:
        try:
            keys = await self._fetch()
        except JWKSUnavailable as e:
            raise JWKSUnavailable(f"--jwt-jwks-url: {e}") from e
        self.keys = keys
        log.info("auth: JWKS %s: %s", self.where, _listed(keys))
        if self.refresh_seconds > 0:
            self._task = asyncio.create_task(self._loop(), name="jwks refresh")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._fetching) if t is not None]
        self._task = self._fetching = None
        if tasks:
            await cancel_and_wait(*tasks, log=log)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self.refresh()

    async def refresh(self) -> bool:
        """Fetch the set again (one fetch for all who ask meanwhile); True when the new
        set was taken, False when the fetch failed and the last good set is kept."""
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._refresh(), name="jwks fetch")
            self._fetching.add_done_callback(self._fetched)
        # shielded: a request that gives up waiting does not cancel it for the others
        return await asyncio.shield(self._fetching)

    def _fetched(self, task: asyncio.Task[bool]) -> None:
        if self._fetching is task:
            self._fetching = None

    async def look_for(self, kid: str) -> str | None:
        """A token names `kid`, which no key of the set has: fetch the set again, unless
        that was done for an unknown kid less than `unknown_kid_seconds` ago (then wait
        for a fetch under way, if any). None when the set now has `kid`; else what to
        add to the refusal: "" when the set was fetched and lacks it, why it could not
        be fetched, or that the fetch was skipped and when one will be made."""
        if kid in self.kids:
            return None
        now = time.monotonic()
        since = now - self._last_unknown_kid
        if self._fetching is None and since < self.unknown_kid_seconds:
            return self._skipped(since)
        if self._fetching is None:
            self._last_unknown_kid = now
            self.unknown_kid_fetches += 1
            log.info("auth: a token names key id %r, not in the JWKS: fetching it again",
                     kid[:64])  # fmt: skip
        fetched = await self.refresh()
        if kid in self.kids:
            return None
        return "" if fetched else f"the JWKS could not be fetched to look for it: {self.error}"

    def _skipped(self, since: float) -> str:
        """The words for a token naming an unknown kid when the set was fetched for one
        `since` seconds ago, less than `unknown_kid_seconds`: no fetch now. The retry
        first: a close frame's 123 bytes cut what comes last."""
        retry = max(1, math.ceil(self.unknown_kid_seconds - since))
        why = (
            f"retry in {retry} s: the key set is fetched again for an unknown key id at most "
            f"every {self.unknown_kid_seconds:g} s (PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS), "
            f"last {math.floor(since)} s ago"
        )
        if self.error is not None:
            why += f"; the last fetch failed: {self.error}"
        return why

    async def _refresh(self) -> bool:
        try:
            keys = await self._fetch()
        except JWKSUnavailable as e:
            if self.error is None:
                log.warning("auth: JWKS %s: %s; the last good set is kept (%s)",
                            self.where, e, _listed(self.keys))  # fmt: skip
            self.error = str(e)
            return False
        if self.error is not None:
            self.error = None
            log.warning("auth: JWKS %s can be fetched again", self.where)
        if [(k.kid, k.alg) for k in keys] != [(k.kid, k.alg) for k in self.keys]:
            log.info("auth: JWKS %s changed: %s", self.where, _listed(keys))
        kept = {(k.kid, k.alg) for k in keys}
        dropped = [k for k in self.keys if (k.kid, k.alg) not in kept]
        if dropped:
            # refused from now on at every handshake and request; a session is not cut
            # (it does not remember its key): said, for an operator retiring a leaked key
            log.warning(
                "auth: JWKS %s no longer holds %s: tokens signed with it are refused from "
                "now on; connections opened with one stay open until their token's exp "
                "(to cut them: revoke their users, or restart)",
                self.where, _listed(dropped),
            )  # fmt: skip
        self.keys = keys
        return True

    async def _fetch(self) -> tuple[VerificationKey, ...]:
        """The usable keys of the set at the URL, or JWKSUnavailable saying why none."""
        self.fetches += 1
        try:
            async with asyncio.timeout(self.fetch_seconds):
                body = await self._get()
        except TimeoutError:
            # (asyncio.timeout cancelled the request: its connection is closed)
            raise JWKSUnavailable(
                f"cannot fetch {self.where}: no whole answer within {self.fetch_seconds:g} s "
                "(PALIMPSEST_JWT_JWKS_FETCH_SECONDS): the provider is down or stalled"
            ) from None
        return self.parse(body)

    async def _get(self) -> bytes:
        """The body the URL answers, or JWKSUnavailable saying why there is none."""
        import httpx

        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout, follow_redirects=True) as http,
                http.stream("GET", self.url, headers={"accept": "application/json"}) as r,
            ):
                if r.status_code != 200:
                    raise JWKSUnavailable(f"{self.where} answered HTTP {r.status_code}")
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JWKSUnavailable(
                            f"{self.where} answered more than {MAX_JWKS_BYTES} bytes"
                        )
        except httpx.HTTPError as e:
            raise JWKSUnavailable(f"cannot fetch {self.where}: {_why(e)}") from e
        return bytes(body)

    def parse(self, body: bytes) -> tuple[VerificationKey, ...]:
        """The usable keys of a JWKS document (see the module's docstring)."""
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise JWKSUnavailable(f"{self.where} did not answer JSON: {e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            hint = ""
            if isinstance(doc, dict) and isinstance(doc.get("jwks_uri"), str):
                hint = f": an OpenID configuration, whose JWKS is {doc['jwks_uri']}"
            elif isinstance(doc, dict) and "kty" in doc:
                hint = ": one JWK, not a set ({'keys': [...]})"
            raise JWKSUnavailable(f"{self.where} is not a JWKS (no 'keys' list){hint}")
        keys: list[VerificationKey] = []
        for i, jwk in enumerate(doc["keys"]):
            try:
                key = _key(jwk, i)
            except ValueError as e:
                self._ignore(str(e))
                continue
            if key.kid is not None and any(k.kid == key.kid for k in keys):
                self._ignore(f"key {i}: a second key with kid {key.kid!r}")
                continue
            keys.append(key)
        if not keys:
            raise JWKSUnavailable(
                f"{self.where} holds no usable key ({len(doc['keys'])} keys; usable: RSA "
                "of at least 2048 bits for RS256, EC P-256 for ES256)"
            )
        return tuple(keys)

    def _ignore(self, why: str) -> None:
        if why not in self._ignored:  # once per key, not at every refresh
            self._ignored.add(why)
            log.warning("auth: JWKS %s: not used: %s", self.where, why)


def _key(jwk: Any, i: int) -> VerificationKey:
    """The VerificationKey of one JWK, or ValueError saying why it is not usable."""
    from jwt import PyJWK, PyJWTError

    if not isinstance(jwk, dict):
        raise ValueError(f"key {i}: not a JSON object")
    kid = jwk.get("kid")
    name = f"key {kid!r}" if isinstance(kid, str) else f"key {i}"
    if kid is not None and not isinstance(kid, str):
        raise ValueError(f"{name}: its kid is not a string")
    kty, use, alg = jwk.get("kty"), jwk.get("use"), jwk.get("alg")
    if kty not in _ALGS:
        raise ValueError(f"{name}: kty {kty!r} (only RSA and EC keys verify tokens here)")
    if use is not None and use != "sig":
        raise ValueError(f"{name}: use {use!r}, not for signatures")
    if alg is not None and alg != _ALGS[kty]:
        raise ValueError(f"{name}: alg {alg!r} (accepted: RS256, ES256)")
    try:
        parsed = PyJWK(jwk, _ALGS[kty])
    except PyJWTError as e:  # (PyJWKError, InvalidKeyError: a damaged key)
        raise ValueError(f"{name}: {e}") from e
    return verification_key(parsed.key, kid, name)


def _listed(keys: Sequence[VerificationKey]) -> str:
    return ", ".join(f"{k.alg} {k.kid or '(no kid)'}" for k in keys) or "no keys"


def _why(e: httpx.HTTPError) -> str:
    return str(e) or type(e).__name__


__all__ = ["FETCH_SECONDS", "JWKS", "MAX_JWKS_BYTES", "JWKSUnavailable"]
