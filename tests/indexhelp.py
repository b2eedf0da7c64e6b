"""A stored attribution index as an older server stored it (the tests of the codec's
versions: what a cold server does with an index it finds)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

from palimpsest.protocol import Reader, write_var_bytes


def restamped(
    data: bytes, version: int, edit: Callable[[dict[str, Any]], None] | None = None
) -> bytes:
    """`data` (a stored index) with its header's version set to `version`, the header
    first changed by `edit` if given (a key an older version did not write, taken out)."""
    r = Reader(zlib.decompress(data))
    header = json.loads(r.read_var_bytes("header"))
    if edit is not None:
        edit(header)
    header["v"] = version
    return zlib.compress(write_var_bytes(json.dumps(header).encode()) + bytes(r.data[r.pos :]))
