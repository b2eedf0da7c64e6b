"""The keys signed tokens are verified with, and the rules every public key is held to
(:func:`verification_key`): RSA of at least :data:`MIN_RSA_BITS` (RS256), EC on P-256
(ES256), nothing else. The keys of a JWKS (server.auth.jwks) are held to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

#: the shortest RSA key RS256 tokens are verified with (NIST SP 800-131A: 1024-bit RSA
#: has not been acceptable for signatures since 2013; RFC 7518 section 3.3 asks for 2048)
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key tokens may be signed with: its algorithm, the secret or public key, and
    the key id (``kid``) tokens signed with it name, if it has one."""

    alg: str
    key: Any = field(repr=False)
    kid: str | None = None


def verification_key(key: Any, kid: str | None, where: str) -> VerificationKey:
    """The VerificationKey of a public key, or ValueError saying why `where` (the
    setting or JWKS entry it came from) cannot be one: RS256 for RSA of at least
    MIN_RSA_BITS bits, ES256 for EC P-256."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            # (a 1024-bit modulus is within reach of a well-funded attacker: whoever
            # factors it mints tokens for anyone)
            raise ValueError(
                f"{where} is a {key.key_size}-bit RSA key: RS256 needs at least "
                f"{MIN_RSA_BITS} bits (have the identity provider make a new key)"
            )
        return VerificationKey("RS256", key, kid)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"{where}: ES256 needs a P-256 key, not {key.curve.name}")
        return VerificationKey("ES256", key, kid)
    raise ValueError(
        f"{where}: a {type(key).__name__.lstrip('_')} is not a key for RS256 (RSA) or ES256 "
        "(EC P-256)"
    )


__all__ = ["MIN_RSA_BITS", "VerificationKey", "verification_key"]
