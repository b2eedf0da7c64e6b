"""Document names: what is allowed, checked once at every entry point."""

from __future__ import annotations

import re

from .errors import DocNameError

MAX_LEN = 128
#: every character a name may hold (ASCII: names sort the same by code point and by byte)
NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~:@-")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.~:@-]*")


def validate_doc_name(name: str) -> str:
    """Return the name if it is allowed, else raise DocNameError saying why.

    Allowed: 1–128 characters of letters, digits and ``_ . ~ : @ -``, starting with a
    letter, a digit or ``_`` (not ``. ~ : @ -``); no slashes, spaces or control
    characters, so a name cannot escape a path, a URL segment or a query."""
    if not name:
        raise DocNameError("document name is empty")
    if len(name) > MAX_LEN:
        raise DocNameError(f"document name is {len(name)} characters long; at most {MAX_LEN}")
    if not _NAME.fullmatch(name):
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9_.~:@-]", c)})
        if bad:
            raise DocNameError(
                f"document name {name!r} has characters that are not allowed: {bad!r} "
                "(allowed: letters, digits and _ . ~ : @ -)"
            )
        raise DocNameError(f"document name {name!r} must start with a letter, digit or _")
    return name
