"""Who is asking: identities from tokens (or, in open development mode, from ?user=)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import AuthError

ROLES = ("read", "write", "admin")
_USER = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    role: str = "admin"
    docs: tuple[str, ...] = ("*",)
    #: when the token expires (Unix seconds); None = never (open mode)
    exp: float | None = None

    @property
    def can_write(self) -> bool:
        return self.role in ("write", "admin")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def open_identity(user: str | None) -> Identity:
    """Open development mode: whoever you say you are, with every right."""
    if user is None or user == "":
        return Identity("anonymous")
    if not _USER.fullmatch(user):
        raise AuthError("user name must be 1-64 printable characters")
    return Identity(user)


class Authenticator:
    """Open development mode: the user comes from ``?user=``, every right is granted.

    The JWT mode replaces this object (see ``server.tokens``)."""

    open = True

    def identify(self, token: str | None, user: str | None) -> Identity:
        return open_identity(user)

    def authorize(self, identity: Identity, doc: str | None, need: str) -> None:
        """Raise Forbidden unless `identity` may do `need` (read|write|admin) on `doc`."""
        return None
