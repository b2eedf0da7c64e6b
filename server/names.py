"""Document names: what is allowed, checked once at every entry point."""

from __future__ import annotations

import fnmatch
import re
import unicodedata

from .errors import DocNameError

MAX_LEN = 128
#: every character a name may hold (ASCII: names sort the same by code point and by byte)
NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~:@-")
#: the characters a name may start with
FIRST_CHARS = NAME_CHARS - frozenset(".~:@-")
#: the rule, as errors say it
NAME_RULE = "ASCII letters, digits and _ . ~ : @ -"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.~:@-]*")


def _char(c: str) -> str:
    """One refused character as a message shows it: printable ASCII quoted, anything
    else by its code point and name (a combining mark shown raw sits on the quote)."""
    if " " < c < "\x7f":
        return repr(c)
    return f"U+{ord(c):04X} ({unicodedata.name(c, 'unnamed')})"


def _shown(name: str) -> str:
    """A refused name as a message shows it, quoted: its characters themselves ('café',
    '日本語'), escapes only for those that would not show as themselves or would sit on
    the quote (controls, format characters such as U+200F, combining marks). It was
    ascii(): a name of letters a user typed came back as 'caf\\xe9-\\u65e5…' in the
    refusal, the close reason and the page's banner."""
    return "'" + "".join(_one(c) for c in name) + "'"


def _one(c: str) -> str:
    if c in "'\\" or not c.isprintable() or unicodedata.category(c).startswith("M"):
        return ascii(c)[1:-1] if c != "'" else "\\'"
    return c


def validate_doc_name(name: str) -> str:
    """Return the name if it is allowed, else raise DocNameError saying why.

    Allowed: 1–128 characters of ASCII letters, digits and ``_ . ~ : @ -``, starting
    with an ASCII letter, a digit or ``_`` (not ``. ~ : @ -``); no slashes, spaces or control
    characters, so a name cannot escape a path, a URL segment or a query."""
    if not name:
        raise DocNameError("document name is empty")
    if len(name) > MAX_LEN:
        raise DocNameError(f"document name is {len(name)} characters long; at most {MAX_LEN}")
    if not _NAME.fullmatch(name):
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9_.~:@-]", c)})
        if bad:
            raise DocNameError(
                f"document name {_shown(name)} has characters that are not allowed: "
                f"{', '.join(_char(c) for c in bad)} (allowed: {NAME_RULE})"
            )
        raise DocNameError(
            f"document name {_shown(name)} must start with an ASCII letter, digit or _"
        )
    return name


def pattern_matches_names(pattern: str) -> bool:
    """Whether some valid document name matches the glob `pattern` (``*``, ``?``,
    ``[...]``, as a token's ``docs`` are matched: fnmatch, case-sensitive). False for
    ``日本-*`` or ``café``: a token holding only such patterns opens nothing."""
    least = 0  # characters any match has at least
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            continue
        if c == "?":
            least += 1
            continue
        allowed = FIRST_CHARS if i == 1 else NAME_CHARS  # (the pattern's first)
        if c == "[":
            j = i + (i < n and pattern[i] == "!")
            j += j < n and pattern[j] == "]"
            while j < n and pattern[j] != "]":
                j += 1
            if j < n:  # a set [...] (unclosed, "[" is itself, as fnmatch reads it)
                one = re.compile(fnmatch.translate(pattern[i - 1 : j + 1]))
                if not any(one.fullmatch(x) for x in allowed):
                    return False
                least += 1
                i = j + 1
                continue
        if c not in allowed:
            return False
        least += 1
    return least <= MAX_LEN
