"""`palimpsest token`: mint a signed token (for development, scripts and tests).

    palimpsest token --user alice --role write --docs 'team-*' --ttl 3600 --secret S
    palimpsest token --user bob --role read --docs notes --private-key key.pem

Prints the token alone on stdout, so ``TOKEN=$(palimpsest token …)`` works. The secret
comes from --secret or PALIMPSEST_JWT_SECRET (the same one the server uses); given a list
of them (key rotation: ``new:S2,old:S1``), the token is signed with the first, the
current one, and names its kid. With --private-key, the token is signed RS256 (RSA key)
or ES256 (EC P-256 key) and the server verifies it with the matching --jwt-public-key;
--kid names that key in the token's header. --audience / --issuer (default: the first
of PALIMPSEST_JWT_AUDIENCE / PALIMPSEST_JWT_ISSUER, what the server then requires) set
its aud and iss claims.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..auth import ROLES
from ..auth.identity import user_name


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "token",
        help="mint a signed token (development)",
        description="Mint a signed token (JWT) that the server accepts with the same secret/key.",
    )
    p.add_argument("--user", required=True, type=user_name,
                   help="the user (claim sub; taken to Unicode NFC)")  # fmt: skip
    p.add_argument("--role", choices=ROLES, default="write", help="read, edit, write or admin")
    p.add_argument(
        "--docs",
        action="append",
        help="document names or glob patterns, comma-separated or repeated (default: '*', "
        "every document, which it then notes on stderr)",
    )
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds until expiry (default 3600)")
    p.add_argument(
        "--secret",
        "--jwt-secret",
        dest="secret",
        help="HS256 secret (env PALIMPSEST_JWT_SECRET); --jwt-secret as serve takes it",
    )
    p.add_argument("--private-key", help="PEM private key: RS256 (RSA) or ES256 (EC P-256)")
    p.add_argument(
        "--kid",
        help="the key id the token's header names (default: the current secret's, "
        "KID:secret; none for a private key)",
    )
    p.add_argument(
        "--audience",
        default=_first(os.environ.get("PALIMPSEST_JWT_AUDIENCE")),
        help="the aud claim (default: the first of env PALIMPSEST_JWT_AUDIENCE, if set)",
    )
    p.add_argument(
        "--issuer",
        default=_first(os.environ.get("PALIMPSEST_JWT_ISSUER")),
        help="the iss claim (default: the first of env PALIMPSEST_JWT_ISSUER, if set)",
    )
    p.set_defaults(func=run)


def _first(value: str | None) -> str | None:
    entries = [v.strip() for v in (value or "").split(",") if v.strip()]
    return entries[0] if entries else None


def run(args: argparse.Namespace) -> int:
    from ..auth.tokens import JWTAuth, mint, parse_keys, split_list
    from ..errors import PalimpsestError
    from ..names import MAX_LEN, NAME_RULE, pattern_matches_names

    docs = [d.strip() for arg in (args.docs or ["*"]) for d in arg.split(",") if d.strip()]
    if not docs:
        print("palimpsest token: --docs names no document", file=sys.stderr)
        return 2
    for pattern in docs:
        if not pattern_matches_names(pattern):
            print(
                f"palimpsest token: --docs pattern {pattern!r} matches no document name "
                f"(names are 1-{MAX_LEN} {NAME_RULE}, starting with an ASCII letter, a "
                "digit or _): the token could never open what it names",
                file=sys.stderr,
            )
            return 2
    if args.ttl <= 0:
        print("palimpsest token: --ttl must be positive", file=sys.stderr)
        return 2
    key: Any
    kid: str | None = args.kid
    if args.private_key:
        try:
            key, algorithm = _private_key(args.private_key)
        except ValueError as e:
            print(f"palimpsest token: {e}", file=sys.stderr)
            return 2
    else:
        secrets = args.secret or os.environ.get("PALIMPSEST_JWT_SECRET")
        algorithm = "HS256"
        if not secrets or not parse_keys(secrets):
            print(
                "palimpsest token: give --secret, PALIMPSEST_JWT_SECRET or --private-key",
                file=sys.stderr,
            )
            return 2
        current_kid, key = parse_keys(secrets)[0]  # the first is the current one
        kid = kid or current_kid
    token = mint(key, args.user, args.role, docs, args.ttl, algorithm=algorithm, kid=kid,
                 audience=args.audience, issuer=args.issuer)  # fmt: skip
    # checked as the server with the environment's audience and issuer checks it
    checks: dict[str, Any] = {
        "audience": split_list(os.environ.get("PALIMPSEST_JWT_AUDIENCE")),
        "issuer": split_list(os.environ.get("PALIMPSEST_JWT_ISSUER")),
    }
    try:  # checked as a server with these keys checks it: no token a server would refuse
        verifier = (
            JWTAuth(secrets, **checks)
            if algorithm == "HS256"
            else JWTAuth(public_keys=[(kid, key.public_key())], **checks)
        )
        verifier.identify(token)
    except (ValueError, PalimpsestError) as e:
        print(f"palimpsest token: a server would refuse this token: {e}", file=sys.stderr)
        return 2
    if args.docs is None:
        # the default is every document: said where a forgotten --docs is noticed
        print(
            f"palimpsest token: no --docs: this token opens every document as {args.role}",
            file=sys.stderr,
        )
    print(token)
    return 0


def _private_key(path: str) -> tuple[Any, str]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"cannot read the private key {path}: {e}") from e
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ValueError(f"{path}: expected an RSA or EC P-256 private key")
