"""The keys signed tokens are verified with, in the forms identity providers hand them out.

A public key (``--jwt-public-key``, each entry of its comma-separated list) may be:

- a file holding a PEM public key (``BEGIN PUBLIC KEY``, SubjectPublicKeyInfo; ``BEGIN
  RSA PUBLIC KEY``, PKCS#1), a PEM X.509 certificate (``BEGIN CERTIFICATE``: Auth0's
  "Download certificate", Keycloak's "Certificate"; its public key is used, its dates and
  issuer are not checked: the certificate is only the key's envelope), the bare base64 of
  a SubjectPublicKeyInfo (Keycloak's realm "Public key", pasted into a file), or the DER
  bytes of one;
- the PEM text itself (what a Kubernetes secret mounted as an environment variable
  gives): any value holding ``-----BEGIN``, or the bare base64 of a SubjectPublicKeyInfo
  when no file of that name exists.

A URL there is refused with a pointer to ``--jwt-jwks-url`` (server.auth.jwks), which
takes a JSON Web Key Set and follows the identity provider's rotations.

Every key, from either, is held to the same rules (:func:`verification_key`): RSA of at
least :data:`MIN_RSA_BITS` (RS256), EC on P-256 (ES256), nothing else.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the shortest RSA key RS256 tokens are verified with (NIST SP 800-131A: 1024-bit RSA
#: has not been acceptable for signatures since 2013; RFC 7518 section 3.3 asks for 2048)
MIN_RSA_BITS = 2048

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_ONE_PEM = re.compile(r"\s*(-----BEGIN [A-Z0-9 ]+-----)(.*?)(-----END [A-Z0-9 ]+-----)\s*", re.S)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)


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
    # (cryptography is imported where a key is read: 0.1 s of a start-up that has none)
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

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


def is_inline(value: str) -> bool:
    """Whether a --jwt-public-key entry is the key itself rather than a file's path."""
    return "-----BEGIN" in value


def describe_source(value: str) -> str:
    """A --jwt-public-key entry as the start-up line and the errors name it: its path, or
    "inline PEM" (a key given as text is not printed whole)."""
    if is_inline(value):
        return "inline PEM"
    if not _is_file(value) and _looks_base64(value):
        return "inline base64 key"
    return value


def refuse_url(entry: str) -> None:
    """ValueError when a --jwt-public-key entry (before it is split into KID:value) is,
    or names, a URL: "http://host/jwks.json" would otherwise read as kid "http" and the
    file "//host/jwks.json"."""
    _, _, rest = entry.strip().partition(":")
    for value in (entry.strip(), rest.strip()):
        if _URL.match(value):
            raise ValueError(
                f"--jwt-public-key takes key files or PEM text, not a URL ({value}): use "
                "--jwt-jwks-url (PALIMPSEST_JWT_JWKS_URL) for an identity provider's JWKS URL"
            )


def load_public_key(value: str) -> Any:
    """The public key a --jwt-public-key entry names (see the module's docstring), or
    ValueError saying what is wrong with it."""
    value = value.strip()
    refuse_url(value)
    if is_inline(value):
        return _from_bytes(_pem_text(value), "the inline PEM of --jwt-public-key")
    path = Path(value)
    if not _is_file(value) and _looks_base64(value):
        return _from_bytes(value.encode(), "the inline base64 key of --jwt-public-key")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the JWT public key {value}: {e.strerror or e}") from e
    return _from_bytes(data, f"the JWT public key {value}")


def _pem_text(value: str) -> bytes:
    """PEM text as an environment variable may carry it: with its line breaks, written
    as ``\\n`` (an .env file), or turned into spaces; made a PEM again."""
    value = value.replace("\\n", "\n")
    m = _ONE_PEM.fullmatch(value)
    if m is None:
        return value.encode()
    body = "".join(m.group(2).split())
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([m.group(1), *lines, m.group(3), ""]).encode()


def _is_file(value: str) -> bool:
    """Whether `value` names a file that exists. A bare base64 key is no path: a run of
    it between slashes past the file-name limit (255 bytes) makes exists() raise
    ENAMETOOLONG, in about one key in twenty."""
    try:
        return Path(value).exists()
    except OSError:
        return False


def _looks_base64(value: str) -> bool:
    # a SubjectPublicKeyInfo is at least 91 bytes (P-256): its base64 at least 120 chars
    return len(value) >= 120 and _BASE64.fullmatch(value) is not None


def _from_bytes(data: bytes, what: str) -> Any:
    """A public key from a PEM (public key or certificate), bare base64 or DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    blocks = _PEM_BLOCK.findall(data)
    if len(blocks) > 1:
        names = ", ".join(b.decode() for b in blocks)
        raise ValueError(
            f"{what} holds {len(blocks)} PEM blocks ({names}): give one key or certificate "
            "per entry (several are comma-separated, each KID:PATH)"
        )
    if blocks:
        kind = blocks[0].decode()
        try:
            if kind == "CERTIFICATE":
                return x509.load_pem_x509_certificate(data).public_key()
            if kind in ("PUBLIC KEY", "RSA PUBLIC KEY"):
                return load_pem_public_key(data)
        except ValueError as e:
            raise ValueError(f"{what} is a damaged PEM {kind.lower()}: {e}") from e
        hint = " (a private key: give its public key)" if "PRIVATE" in kind else ""
        raise ValueError(f"{what} is a PEM {kind}{hint}; expected a PUBLIC KEY or a CERTIFICATE")
    text = data.strip()
    if text.startswith(b"{"):
        raise ValueError(
            f"{what} holds JSON (a JWK or a JWKS?): serve it at a URL for --jwt-jwks-url, "
            "or give the key as PEM"
        )
    der = data
    if _BASE64.fullmatch(text.decode("ascii", "replace")):
        try:
            der = base64.b64decode(b"".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            der = data
    try:
        return load_der_public_key(der)
    except ValueError:
        raise ValueError(
            f"{what} is no public key: expected a PEM public key or certificate (-----BEGIN "
            "PUBLIC KEY----- / -----BEGIN CERTIFICATE-----) or the base64 of a "
            "SubjectPublicKeyInfo"
        ) from None


__all__ = [
    "MIN_RSA_BITS",
    "VerificationKey",
    "describe_source",
    "is_inline",
    "load_public_key",
    "refuse_url",
    "verification_key",
]
